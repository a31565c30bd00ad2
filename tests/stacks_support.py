"""Building a stage for template tests: an environment from cdk.json's context with overrides,
asset bundling skipped, in a concrete account and region as every real deploy has (tokens then
render as literals, which is what cdk-nag and the deploy see)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk

from stacks.config import load_environment
from stacks.stage import SluiceStage

ROOT = Path(__file__).resolve().parents[1]
CDK_CONTEXT: dict[str, Any] = json.loads((ROOT / "cdk.json").read_text())["context"]


# A documented placeholder account (moto's) in a region that is not us-east-1, so that nothing
# passes only because us-east-1 is the default somewhere.
DEPLOY_TARGET = cdk.Environment(account="123456789012", region="eu-west-1")
# Account and region unknown at synth: tokens stay pseudo-parameter references.
AGNOSTIC = cdk.Environment()


def build_stage(
    env: str, overrides: dict[str, Any] | None = None, *, target: cdk.Environment = DEPLOY_TARGET
) -> SluiceStage:
    """One environment's stage from cdk.json's context, with `overrides` merged into its block."""
    context = copy.deepcopy(CDK_CONTEXT)
    block = context["sluice"]["environments"][env]
    for section, values in (overrides or {}).items():
        if isinstance(values, dict):
            block.setdefault(section, {}).update(values)
        else:
            block[section] = values
    app = cdk.App(context={**context, "aws:cdk:bundling-stacks": []})
    config = load_environment(context["sluice"], env)
    return SluiceStage(app, config.prefix, config=config, env=target)
