"""cdk-nag runs inside synth as validation plugins (as app.py registers them): a whole
environment has no unacknowledged finding, and a new insecure resource fails synth."""

from __future__ import annotations

import aws_cdk as cdk
import pytest
from aws_cdk import aws_sqs as sqs

from stacks.nag import flatten_reference, managed_policy_finding, resource_finding
from tests.support.stacks import AGNOSTIC, CDK_CONTEXT, build_stage, with_nag


def test_prod_has_no_unacknowledged_finding() -> None:
    with_nag(build_stage("prod")).synth()


def test_an_unacknowledged_finding_fails_synth() -> None:
    stage = build_stage("dev")
    sqs.Queue(stage.stateful, "Unguarded", encryption=sqs.QueueEncryption.UNENCRYPTED)
    with pytest.raises(RuntimeError, match=r"(?s)AwsSolutions-SQS4.*Serverless-SQSRedrivePolicy") as caught:
        with_nag(stage).synth()
    # Only the new queue is reported: everything sluice builds is clean or acknowledged.
    paths = [
        line.strip().split()[0] for line in str(caught.value).splitlines() if line.startswith("   sluice-")
    ]
    assert paths and all(path.startswith("sluice-dev/stateful/Unguarded/") for path in paths)


REGIONS = ("us-east-1", "eu-west-1")


@pytest.mark.parametrize("region", REGIONS)
def test_every_environment_has_no_unacknowledged_finding_in_a_concrete_account_and_region(
    region: str,
) -> None:
    """What a deploy sees: tokens render as literals, so every acknowledgment must still match."""
    target = cdk.Environment(account="123456789012", region=region)
    for env in ("dev", "staging", "prod"):
        with_nag(build_stage(env, target=target)).synth()


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (AGNOSTIC, "Resource::arn:<AWS::Partition>:kms:<AWS::Region>:<AWS::AccountId>:key/*"),
        *(
            (
                cdk.Environment(account="123456789012", region=region),
                f"Resource::arn:aws:kms:{region}:123456789012:key/*",
            )
            for region in REGIONS
        ),
    ],
)
def test_a_resource_finding_is_named_as_cdk_nag_renders_it(target: cdk.Environment, expected: str) -> None:
    stack = cdk.Stack(cdk.App(context=CDK_CONTEXT), "Probe", env=target)
    arn = stack.format_arn(
        service="kms", resource="key", resource_name="*", arn_format=cdk.ArnFormat.SLASH_RESOURCE_NAME
    )
    assert resource_finding(stack, arn) == expected
    # pseudo parameters stay references whatever the environment
    assert resource_finding(stack, f"arn:{cdk.Aws.PARTITION}:s3:::b-{cdk.Aws.ACCOUNT_ID}/*") == (
        "Resource::arn:<AWS::Partition>:s3:::b-<AWS::AccountId>/*"
    )


def test_a_managed_policy_finding_is_named_as_cdk_nag_renders_it() -> None:
    # CDK builds AWS managed policy ARNs from the partition pseudo parameter even when the
    # region is known, unlike `format_arn`: the helper follows whichever CDK renders.
    name = "service-role/AWSLambdaBasicExecutionRole"
    for target in (AGNOSTIC, cdk.Environment(account="123456789012", region="eu-west-1")):
        stack = cdk.Stack(cdk.App(context=CDK_CONTEXT), "Probe", env=target)
        assert managed_policy_finding(stack, name) == f"Policy::arn:<AWS::Partition>:iam::aws:policy/{name}"


def test_flatten_reference_matches_cdk_nag() -> None:
    assert flatten_reference({"Fn::GetAtt": ["Queue4A7E3555", "Arn"]}) == "<Queue4A7E3555.Arn>"
    assert flatten_reference({"Fn::Join": ["", [{"Ref": "Bucket"}, "/*"]]}) == "<Bucket>/*"
    assert flatten_reference({"Fn::Sub": "arn:${AWS::Partition}:x"}) == "arn:<AWS::Partition>:x"
    assert flatten_reference({"Fn::If": ["C", "a", "b"]}) == '{"Fn::If":["C","a","b"]}'
