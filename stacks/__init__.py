"""CDK stacks and constructs: no boto3, no network at synth time."""
