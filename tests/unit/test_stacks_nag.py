"""cdk-nag runs inside synth as validation plugins (as app.py registers them): a whole
environment has no unacknowledged finding, and a new insecure resource fails synth."""

from __future__ import annotations

import aws_cdk as cdk
import pytest
from aws_cdk import aws_sqs as sqs
from cdk_nag import AwsSolutionsChecks, ServerlessChecks

from stacks.stage import SluiceStage
from tests.stacks_support import build_stage


def with_nag(stage: SluiceStage) -> cdk.App:
    app = stage.node.scope
    assert isinstance(app, cdk.App)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(verbose=True), ServerlessChecks(verbose=True))
    return app


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
