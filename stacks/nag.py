"""cdk-nag acknowledgments in one readable form.

cdk-nag 3 runs as a CDK policy-validation plugin; a finding is acknowledged with CDK's own
`Validations.of(construct).acknowledge(...)`, which covers the construct and everything under
it. Rules that report several findings per resource (IAM4, IAM5, …) are acknowledged per exact
finding (`RuleId[FindingId]`), so a new, different wildcard still fails synth.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
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


# Finding ids are computed, never written by hand: cdk-nag names a resource by flattening what
# the stack resolves it to, and that changes with the stage's environment — with a concrete
# account and region (every real deploy) `format_arn` renders partition, region and account as
# literals, while `cdk.Aws.*` pseudo parameters stay references. An id built from the same
# expression as the ARN it acknowledges matches in both cases.


def flatten_reference(value: Any) -> str:
    """cdk-nag's `flattenCfnReference`: a resolved CloudFormation value as one string
    (`Ref` → `<Name>`, `Fn::GetAtt` → `<Resource.Attribute>`, `${X}` → `<X>`)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.replace("${", "<").replace("}", ">")
    if isinstance(value, dict):
        for function, flatten in _INTRINSICS.items():
            if function in value:
                return flatten(value[function])
    # cdk-nag's fallback is JSON.stringify: compact separators
    return json.dumps(value, separators=(",", ":"))


def _join(arguments: list[Any]) -> str:
    delimiter, items = arguments
    return str(delimiter).join(flatten_reference(item) for item in items)


def _get_att(arguments: list[Any]) -> str:
    resource, attribute = arguments
    return f"<{flatten_reference(resource)}.{flatten_reference(attribute)}>"


# In cdk-nag's order of precedence.
_INTRINSICS: dict[str, Callable[[Any], str]] = {
    "Fn::Join": _join,
    "Fn::Sub": flatten_reference,
    "Fn::GetAtt": _get_att,
    "Fn::ImportValue": flatten_reference,
    "Ref": lambda name: f"<{flatten_reference(name)}>",
}


def resource_finding(scope: IConstruct, arn: str) -> str:
    """The IAM5 finding id of a wildcard resource `arn`, as rendered in `scope`'s stack."""
    return f"Resource::{flatten_reference(cdk.Stack.of(scope).resolve(arn))}"


def managed_policy_finding(scope: IConstruct, name: str) -> str:
    """The IAM4 finding id of the AWS managed policy `name`, as rendered in `scope`'s stack."""
    arn = iam.ManagedPolicy.from_aws_managed_policy_name(name).managed_policy_arn
    return f"Policy::{flatten_reference(cdk.Stack.of(scope).resolve(arn))}"


LAMBDA_BASIC_EXECUTION = "service-role/AWSLambdaBasicExecutionRole"
LAMBDA_VPC_ACCESS = "service-role/AWSLambdaVPCAccessExecutionRole"
