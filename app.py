#!/usr/bin/env python3
"""The CDK app: reads the `sluice` context once into frozen configs, builds one Stage per
requested environment (`-c env=<name>`, or every environment when none is given), and adds the
cdk-nag rule packs as validation plugins so any unacknowledged finding fails synth."""

from __future__ import annotations

import os
import sys

# The jsii kernel (a node child process) prints a banner about this machine's node 20 at start;
# it is acknowledged here, before the first aws_cdk import starts the kernel, so `cdk synth`
# output stays clean. Another node version still warns.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks, ServerlessChecks

from runtime.errors import ConfigError
from stacks.config import environment_names, load_environment, parse_overrides
from stacks.stage import SluiceStage
from stacks.validation import validate_for_synth


def main() -> None:
    app = cdk.App()
    context = app.node.try_get_context("sluice") or {}
    requested = app.node.try_get_context("env")
    names = [requested] if requested else environment_names(context)
    try:
        # `-c overrides='{"relay": {"enabled": true, ...}}'` tries settings without editing cdk.json.
        overrides = parse_overrides(app.node.try_get_context("overrides"))
        configs = [load_environment(context, name, overrides=overrides) for name in names]
        for config in configs:
            validate_for_synth(config)  # the stages check again; here a failure reads cleanly
    except ConfigError as exc:
        sys.exit(f"cdk synth: {exc}")
    # Account and region come from the usual CDK variables (the CLI sets them from the
    # profile); nothing is hard-coded, and synth works without credentials.
    target = cdk.Environment(
        account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=os.environ.get("CDK_DEFAULT_REGION")
    )
    for config in configs:
        SluiceStage(app, config.prefix, config=config, env=target)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(verbose=True), ServerlessChecks(verbose=True))
    app.synth()


if __name__ == "__main__":
    main()
