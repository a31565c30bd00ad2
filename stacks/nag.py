"""cdk-nag acknowledgments in one readable form.

cdk-nag 3 runs as a CDK policy-validation plugin; a finding is acknowledged with CDK's own
`Validations.of(construct).acknowledge(...)`, which covers the construct and everything under
it. Rules that report several findings per resource (IAM4, IAM5, …) are acknowledged per exact
finding (`RuleId[FindingId]`), so a new, different wildcard still fails synth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import aws_cdk as cdk
from constructs import IConstruct


@dataclass(frozen=True)
class Ack:
    """Acknowledge `rule` (every finding, or only `findings`) with a specific reason."""

    rule: str
    reason: str
    findings: Sequence[str] = field(default_factory=tuple)

    def acknowledgments(self) -> list[cdk.Acknowledgment]:
        ids = [f"{self.rule}[{finding}]" for finding in self.findings] or [self.rule]
        return [cdk.Acknowledgment(id=rule_id, reason=self.reason) for rule_id in ids]


def acknowledge(target: IConstruct, *acks: Ack) -> None:
    """Acknowledge the findings on `target` and everything under it."""
    cdk.Validations.of(target).acknowledge(*(item for ack in acks for item in ack.acknowledgments()))


def managed_policy(name: str) -> str:
    """The IAM4 finding id of an AWS managed policy."""
    return f"Policy::arn:<AWS::Partition>:iam::aws:policy/{name}"


LAMBDA_BASIC_EXECUTION = managed_policy("service-role/AWSLambdaBasicExecutionRole")
LAMBDA_VPC_ACCESS = managed_policy("service-role/AWSLambdaVPCAccessExecutionRole")
