"""One declaration per setting: every declared tunable travels from an environment's config
(cdk.json) through the function environment the stacks build into the settings a function
validates, and a setting declared in `runtime.declarations.settings` needs nothing more."""

from __future__ import annotations

import typing
from typing import Any, get_args

import pytest
from pydantic.fields import FieldInfo

from runtime.config import load_settings
from runtime.declarations.settings import (
    IngestTunables,
    JobsTunables,
    PipelineTunables,
    QueueTunables,
    RedisSettings,
    RelayTunables,
    Section,
    to_environ,
)
from runtime.errors import ConfigError
from stacks.config import EnvironmentConfig, load_environment
from stacks.contract import SECTIONS, RelayResources, Resources, function_settings

# The cdk.json section each tunable section is set in, and the function settings section it
# reaches (the same name).
DECLARED: dict[str, type[Section]] = {
    "queues": QueueTunables,
    "ingest": IngestTunables,
    "pipeline": PipelineTunables,
    "relay": RelayTunables,
    "jobs": JobsTunables,
}
RESOURCES = Resources(
    state_url="https://sqs/state",
    state_dlq_url="https://sqs/state-dlq",
    fifo_url="https://sqs/fifo.fifo",
    fifo_dlq_url="https://sqs/fifo-dlq.fifo",
    ledger_table="ledger",
    results_bucket="results",
    ingest_root="/mnt/sluice",
)
RELAY = RelayResources(
    queue_url="https://sqs/relay.fifo",
    dlq_url="https://sqs/relay-dlq.fifo",
    ledger_table="ledger",
    ledger_partition_key="pk",
    ledger_sort_key="",
    ledger_ttl_attribute="expires_at",
)
REDIS = RedisSettings(url="redis://localhost:6379/0", tls=False)
# Values no generic rule finds (a valid one that differs from the default).
SPECIAL: dict[tuple[str, str], Any] = {
    ("relay", "api_url"): "https://api.example.com/v1/records",
    ("pipeline", "router"): "runtime.examples.enrich:router",
    ("ingest", "projection"): {"out": {"path": "a.b", "missing": "omit"}},
}


def candidates(field: FieldInfo) -> list[Any]:
    """Values other than the default that a setting of this type may take, nearest first."""
    default = field.get_default(call_default_factory=True)
    annotation = field.annotation
    if typing.get_origin(annotation) is typing.Literal:
        return [choice for choice in get_args(annotation) if choice != default]
    if isinstance(default, bool):
        return [not default]
    if isinstance(default, int | float):
        return [default + 1, default - 1, default * 2, default / 2]
    if default is None:
        return [1, 60, 3600]
    if isinstance(default, str):
        return [f"{default}x" if default else "x"]
    return []


def with_one_changed(section: str, name: str) -> tuple[EnvironmentConfig, Any]:
    """The dev environment with `section.name` set to a valid value other than its default."""
    field = DECLARED[section].model_fields[name]
    options = [SPECIAL[section, name]] if (section, name) in SPECIAL else candidates(field)
    for value in options:
        block = {section: {name: value}}
        if section == "relay":
            block["relay"] |= {"api_url": SPECIAL["relay", "api_url"]} if name != "api_url" else {}
        try:
            return load_environment({"environments": {"dev": block}}, "dev"), value
        except ConfigError:
            continue
    raise AssertionError(f"no valid non-default value found for {section}.{name}: add one to SPECIAL")


def every_tunable() -> list[tuple[str, str]]:
    return [(section, name) for section, declared in DECLARED.items() for name in declared.model_fields]


def test_the_sections_a_function_can_read_are_the_declared_ones() -> None:
    assert set(DECLARED) - {"queues"} == SECTIONS


@pytest.mark.parametrize(("section", "name"), every_tunable())
def test_every_tunable_reaches_the_function_from_cdk_json(section: str, name: str) -> None:
    config, value = with_one_changed(section, name)
    configured = getattr(getattr(config, section), name)
    assert configured != DECLARED[section].model_fields[name].get_default(call_default_factory=True)
    settings = function_settings(config, RESOURCES, REDIS, SECTIONS, RELAY)
    environment = to_environ(settings)
    received = getattr(getattr(load_settings(environment), section), name)
    if isinstance(received, dict):  # the projection: rules, as the config holds them
        received = {key: rule.model_dump() for key, rule in received.items()}
        configured = {key: rule.model_dump() for key, rule in configured.items()}
    assert received == configured, (section, name, value)


@pytest.mark.parametrize("section", [name for name in DECLARED])
def test_the_stack_config_section_extends_the_declaration(section: str) -> None:
    assert isinstance(getattr(EnvironmentConfig(name="dev"), section), DECLARED[section])
