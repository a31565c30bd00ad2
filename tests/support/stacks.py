"""Building a stage for template tests: an environment from cdk.json's context with overrides,
asset bundling skipped, in a concrete account and region as every real deploy has (tokens then
render as literals, which is what cdk-nag and the deploy see)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk.assertions import Match, Template
from cdk_nag import AwsSolutionsChecks, ServerlessChecks

from stacks.config import load_environment
from stacks.stage import SluiceStage
from tests.support.optional_systems import ALL_SYSTEMS

ROOT = Path(__file__).resolve().parents[2]
CDK_CONTEXT: dict[str, Any] = json.loads((ROOT / "cdk.json").read_text())["context"]


# A documented placeholder account (moto's) in a region that is not us-east-1, so that nothing
# passes only because us-east-1 is the default somewhere.
DEPLOY_TARGET = cdk.Environment(account="123456789012", region="eu-west-1")
# Account and region unknown at synth: tokens stay pseudo-parameter references.
AGNOSTIC = cdk.Environment()


def build_stage(
    env: str,
    overrides: dict[str, Any] | None = None,
    *,
    target: cdk.Environment = DEPLOY_TARGET,
    all_systems: bool = True,
) -> SluiceStage:
    """One environment's stage from cdk.json's context, with every optional system enabled
    (unless `all_systems` is false) and `overrides` merged into its block."""
    context = copy.deepcopy(CDK_CONTEXT)
    block = context["sluice"]["environments"][env]
    for section, values in [*(ALL_SYSTEMS.items() if all_systems else ()), *(overrides or {}).items()]:
        if isinstance(values, dict):
            block.setdefault(section, {}).update(values)
        else:
            block[section] = values
    app = cdk.App(context={**context, "aws:cdk:bundling-stacks": []})
    config = load_environment(context["sluice"], env)
    return SluiceStage(app, config.prefix, config=config, env=target)


def stateful_output(name_pattern: str) -> dict[str, Any]:
    """Matches a value the stateless stack reads from the stateful stack's outputs (a weak
    reference: `Fn::GetStackOutput`, no export) whose output name matches `name_pattern`."""
    return {
        "Fn::GetStackOutput": Match.object_like(
            {
                "StackName": Match.string_like_regexp("-stateful$"),
                "OutputName": Match.string_like_regexp(name_pattern),
            }
        )
    }


def output_name(value: Any) -> str:
    """The stateful output a weak reference reads (asserts that `value` is one)."""
    assert set(value) == {"Fn::GetStackOutput"}, value
    return str(value["Fn::GetStackOutput"]["OutputName"])


def statements_of_function(template: Template, function: dict[str, Any]) -> list[dict[str, Any]]:
    """Every statement of the inline policies attached to a function's role (`function` is the
    function resource's Properties)."""
    role = function["Role"]["Fn::GetAtt"][0]
    policies = template.find_resources(
        "AWS::IAM::Policy", {"Properties": {"Roles": Match.array_with([{"Ref": role}])}}
    )
    return [
        statement
        for policy in policies.values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def actions_of(statements: list[dict[str, Any]]) -> set[str]:
    actions: set[str] = set()
    for statement in statements:
        value = statement["Action"]
        actions.update([value] if isinstance(value, str) else value)
    return actions


def with_nag(stage: SluiceStage) -> cdk.App:
    """The stage's app with cdk-nag's rule packs as validation plugins (as app.py registers
    them): its `synth()` fails on any unacknowledged finding."""
    app = stage.node.scope
    assert isinstance(app, cdk.App)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(verbose=True), ServerlessChecks(verbose=True))
    return app
