"""Synth imports no handler: building every system's stage loads only the runtime's
dependency-free declarations, never a handler, a router, boto3/botocore, redis or Powertools."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support.stacks import ROOT

# Run in a fresh interpreter: this test process has long imported the runtime.
BUILD_AND_LIST_MODULES = """
import json, sys
from tests.support.stacks import build_stage
import app  # noqa: F401 - the CDK app's own imports
stage = build_stage("dev")
assert stage.stateless.gateway is not None and stage.stateless.relay is not None
print(json.dumps(sorted(sys.modules)))
"""
FORBIDDEN_PACKAGES = ("boto3", "botocore", "redis", "aws_lambda_powertools", "pydantic_settings")
# What synth may load of the runtime: the declarations, and the dependency-free modules they
# and the relay's stream filter read.
ALLOWED_RUNTIME = {
    "runtime",
    "runtime.codec",
    "runtime.errors",
    "runtime.examples",  # the package only: the router check asks where its module is, not for it
    "runtime.relay",
    "runtime.relay.filters",
    "runtime.metric_names",
}


def test_synth_imports_only_the_runtime_declarations() -> None:
    result = subprocess.run(
        [sys.executable, "-c", BUILD_AND_LIST_MODULES],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        env={**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    modules = set(json.loads(result.stdout.strip().splitlines()[-1]))
    forbidden = sorted(m for m in modules if m.split(".")[0] in FORBIDDEN_PACKAGES)
    assert forbidden == []
    runtime = {m for m in modules if m == "runtime" or m.startswith("runtime.")}
    declarations = {m for m in runtime if m.startswith("runtime.declarations")}
    assert "runtime.declarations.settings" in declarations
    assert sorted(runtime - declarations - ALLOWED_RUNTIME) == []
