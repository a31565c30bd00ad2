"""Stages for the template tests, built once per test module (synth is the slow part)."""

from __future__ import annotations

import pytest

from stacks.stage import SluiceStage
from tests.stacks_support import build_stage


@pytest.fixture(scope="module")
def dev() -> SluiceStage:
    return build_stage("dev")


@pytest.fixture(scope="module")
def prod() -> SluiceStage:
    return build_stage("prod")
