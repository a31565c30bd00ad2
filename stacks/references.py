"""Cross-stack values the stateless stack reads from the stateful stack.

The app's default (`@aws-cdk/core:defaultCrossStackReferences: weak` in cdk.json) turns every
cross-stack token into `Fn::GetStackOutput`: no exports, so replacing a stateful resource never
fails with "export in use". CDK rewrites those tokens only while it prepares the app, after the
constructs acknowledged their cdk-nag findings; a finding on a wildcard ARN built from such a
token would then name a different string than its acknowledgment. The few values that end up in
wildcard ARNs (bucket ARNs: `<bucket>/*`) are therefore published as named outputs and read
with an explicit `Fn::GetStackOutput` that is the same string before and after preparation.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_s3 as s3
from constructs import Construct


def publish(scope: Construct, name: str, value: str, description: str) -> None:
    """An output of `scope`'s stack that another stack reads by `name`."""
    cdk.CfnOutput(scope, name, value=value, description=description).override_logical_id(name)


def read(consumer: cdk.Stack, producer: cdk.Stack, name: str) -> str:
    """The value of `producer`'s output `name`, resolved whenever `consumer` is deployed."""
    consumer.add_stack_dependency(producer, f"reads the output {name}")
    return cdk.Token.as_string({"Fn::GetStackOutput": {"StackName": producer.stack_name, "OutputName": name}})


def publish_bucket(scope: Construct, name: str, bucket: s3.IBucket, description: str) -> None:
    publish(scope, f"{name}BucketName", bucket.bucket_name, f"{description} (name)")
    publish(scope, f"{name}BucketArn", bucket.bucket_arn, f"{description} (ARN)")


def read_bucket(scope: Construct, construct_id: str, producer: cdk.Stack, name: str) -> s3.IBucket:
    consumer = cdk.Stack.of(scope)
    return s3.Bucket.from_bucket_attributes(
        scope,
        construct_id,
        bucket_name=read(consumer, producer, f"{name}BucketName"),
        bucket_arn=read(consumer, producer, f"{name}BucketArn"),
    )
