"""The dependency layer is reproducible: it installs a lock resolved for the Lambda platform, in
which every distribution is pinned and hashed, and its asset hash comes from that lock."""

from __future__ import annotations

import re
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Match, Template

from stacks.functions import PYTHON_RUNTIMES, REQUIREMENTS, dependency_layer, layer_lock
from tests.support.stacks import build_stage

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _top_level_pins(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        match = _PIN.match(line.split("#", 1)[0].strip())
        if match:
            pins[_canonical(match.group(1))] = match.group(3)
    return pins


def _locked(text: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) from a `--generate-hashes` lock (continuation lines joined)."""
    entries: dict[str, tuple[str, list[str]]] = {}
    joined = re.sub(r"\\\s*\n\s*", " ", text)
    for raw in joined.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _PIN.match(line)
        assert match, f"not an exact pin: {line!r}"
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", line)
        entries[_canonical(match.group(1))] = (match.group(3), hashes)
    return entries


@pytest.mark.parametrize("python_version", sorted(PYTHON_RUNTIMES))
def test_the_lock_pins_every_requirement_at_its_version_with_hashes(python_version: str) -> None:
    lock = layer_lock(python_version)
    assert lock.is_file(), f"{lock.name} is missing: run `make lock`"
    locked = _locked(lock.read_text())
    required = _top_level_pins(REQUIREMENTS.read_text())
    assert required, "requirements.txt names no pinned requirement"
    for name, version in required.items():
        assert name in locked, f"{lock.name} lacks {name} (requirements.txt changed: run `make lock`)"
        assert locked[name][0] == version, (
            f"{lock.name} has {name}=={locked[name][0]}, requirements.txt {version}"
        )
    for name, (_version, hashes) in locked.items():
        assert hashes, f"{lock.name}: {name} has no hash"


def _layer_key(lock: Path, python_version: str = "3.12") -> str:
    app = cdk.App(context={"aws:cdk:bundling-stacks": []})
    stack = cdk.Stack(app, "LayerProbe")
    dependency_layer(stack, "Layer", python_version, lock)
    template = Template.from_stack(stack)
    template.has_resource_properties(
        "AWS::Lambda::LayerVersion",
        {"Content": {"S3Key": Match.string_like_regexp(r"^[0-9a-f]{64}\.zip$")}},
    )
    (layer,) = template.find_resources("AWS::Lambda::LayerVersion").values()
    key = layer["Properties"]["Content"]["S3Key"]
    assert isinstance(key, str)
    return key


def test_the_layers_asset_hash_follows_the_lock(tmp_path: Path) -> None:
    real = layer_lock("3.12").read_text()
    first, same, changed = tmp_path / "a" / "x.lock", tmp_path / "b" / "y.lock", tmp_path / "c" / "x.lock"
    for path, text in ((first, real), (same, real), (changed, real.replace("orjson==", "orjson==0", 1))):
        path.parent.mkdir()
        path.write_text(text)
    assert _layer_key(first) == _layer_key(same), "the hash must depend on the lock's bytes, not its path"
    assert _layer_key(first) != _layer_key(changed)
    assert _layer_key(first, "3.12") != _layer_key(first, "3.13")


def test_every_stage_ships_the_layer_of_its_pythons_lock() -> None:
    stage = build_stage("dev", {"functions": {"python_version": "3.13"}})
    template = Template.from_stack(stage.stateless)
    template.resource_count_is("AWS::Lambda::LayerVersion", 1)
    template.has_resource_properties(
        "AWS::Lambda::LayerVersion",
        {
            "Content": {"S3Key": _layer_key(layer_lock("3.13"), "3.13")},
            "CompatibleRuntimes": ["python3.13"],
            "Description": Match.string_like_regexp(r"requirements-lambda-3\.13\.lock"),
        },
    )
