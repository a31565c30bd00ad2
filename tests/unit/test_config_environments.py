"""The environment config read from cdk.json: every shipped environment is valid, and a bad
one fails (at load or at synth) with a message that names the setting."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from runtime.errors import ConfigError
from stacks.config import SQS_MAX_RECEIVE_COUNT, EnvironmentConfig, environment_names, load_environment
from stacks.validation import validate_for_synth

ROOT = Path(__file__).resolve().parents[2]
CONTEXT: dict[str, Any] = json.loads((ROOT / "cdk.json").read_text())["context"]["sluice"]


def with_block(env: str, block: dict[str, Any]) -> dict[str, Any]:
    context = copy.deepcopy(CONTEXT)
    target = context["environments"][env]
    for section, values in block.items():
        if isinstance(values, dict):
            target.setdefault(section, {}).update(values)
        else:
            target[section] = values
    return context


def load_error(block: dict[str, Any], env: str = "dev") -> str:
    with pytest.raises(ConfigError) as caught:
        load_environment(with_block(env, block), env)
    return str(caught.value)


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_shipped_environments_load_and_pass_synth_checks(env: str) -> None:
    config = load_environment(CONTEXT, env)
    validate_for_synth(config)
    assert config.prefix == f"sluice-{env}"


def test_environment_names_come_from_cdk_json() -> None:
    assert environment_names(CONTEXT) == ["dev", "staging", "prod"]


def test_the_local_block_overlays_dev() -> None:
    local = load_environment(CONTEXT, "dev", local=True)
    assert local.ingest.settle_s == 0.5
    assert local.redis == load_environment(CONTEXT, "dev").redis


def test_differences_that_matter_between_dev_and_prod() -> None:
    dev, prod = load_environment(CONTEXT, "dev"), load_environment(CONTEXT, "prod")
    assert (dev.network.nat_gateways, prod.network.nat_gateways) == (1, 3)
    assert (dev.redis.replicas, dev.redis.multi_az) == (0, False)
    assert prod.redis.replicas >= 1 and prod.redis.multi_az
    assert (dev.retain_data, prod.retain_data) == (False, True)
    assert (dev.termination_protection, prod.termination_protection) == (False, True)
    assert dev.functions.log_retention_days < prod.functions.log_retention_days


def test_prod_and_staging_loaders_run_two_processes_on_two_vcpus() -> None:
    dev = load_environment(CONTEXT, "dev").ingest
    assert (dev.processes, dev.loader_memory_mb) == (1, 1769)
    for env in ("staging", "prod"):
        ingest = load_environment(CONTEXT, env).ingest
        assert (ingest.processes, ingest.loader_memory_mb) == (2, 3538)


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_the_local_runtime_loads_on_one_process(env: str) -> None:
    assert load_environment(CONTEXT, env, local=True).ingest.processes == 1


def test_unknown_environment_is_named_with_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown environment 'qa'; cdk.json defines: dev, prod, staging"):
        load_environment(CONTEXT, "qa")


def test_bad_value_names_the_setting() -> None:
    assert "pipeline.timeout_s" in load_error({"pipeline": {"timeout_s": 0}})
    assert "network.nat_gateways" in load_error({"network": {"nat_gateways": 9}})


def test_unknown_key_names_the_setting() -> None:
    assert "redis.nodes" in load_error({"redis": {"nodes": 3}})


def test_multi_az_needs_a_replica() -> None:
    message = load_error({"redis": {"replicas": 0, "multi_az": True}})
    assert "redis.multi_az needs redis.replicas >= 1" in message


def test_provisioned_efs_needs_its_throughput() -> None:
    message = load_error({"ingest": {"efs_throughput_mode": "provisioned"}})
    assert "ingest.efs_provisioned_mibps" in message
    assert "ingest.efs_provisioned_mibps" in load_error({"ingest": {"efs_provisioned_mibps": 64}})


def test_fifo_max_receive_count_over_the_sqs_cap_is_refused() -> None:
    message = load_error({"pipeline": {"max_attempts": 100}})
    assert "maxReceiveCount" in message
    assert str(SQS_MAX_RECEIVE_COUNT) in message


def test_log_retention_must_be_a_cloudwatch_value() -> None:
    assert "log_retention_days" in load_error({"functions": {"log_retention_days": 13}})


def test_results_expiry_must_follow_the_transition() -> None:
    assert "storage.results_expire_days" in load_error({"storage": {"results_expire_days": 10}})


def test_large_batches_need_a_batching_window_at_synth() -> None:
    config = load_environment(
        with_block("dev", {"pipeline": {"batch_size": 100, "batching_window_s": 0}}), "dev"
    )
    with pytest.raises(
        ConfigError, match=r"pipeline\.batch_size: 100 needs pipeline\.batching_window_s >= 1"
    ):
        validate_for_synth(config)


def test_old_redis_engine_is_refused_at_synth() -> None:
    config = load_environment(with_block("dev", {"redis": {"engine_version": "6.2"}}), "dev")
    with pytest.raises(ConfigError, match=r"redis\.engine_version"):
        validate_for_synth(config)


@pytest.mark.parametrize(
    ("env", "block", "message"),
    [
        ("qa", {}, "unknown environment 'qa'"),  # fails at load; the next at a synth check
        ("prod", {"ingest": {"processes": 3}}, "ingest.processes: 3 needs ingest.loader_memory_mb"),
    ],
)
def test_cdk_synth_of_a_bad_env_fails_with_one_clean_line(
    tmp_path: Path, env: str, block: dict[str, Any], message: str
) -> None:
    context = json.loads((ROOT / "cdk.json").read_text())["context"]
    if block:
        context["sluice"] = with_block(env, block)
    environ = {
        **os.environ,
        "CDK_CONTEXT_JSON": json.dumps({**context, "env": env}),
        "CDK_OUTDIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "app.py"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("expression", "valid"),
    [
        ("rate(1 minute)", True),
        ("rate(5 minutes)", True),
        ("rate(12 hours)", True),
        ("cron(0/5 * * * ? *)", True),
        ("rate(1 minutes)", False),
        ("rate(5 minute)", False),
        ("every minute", False),
        ("cron(* * * *)", False),
    ],
)
def test_schedules_are_checked_at_synth(expression: str, valid: bool) -> None:
    config = load_environment(with_block("dev", {"ingest": {"checker_schedule": expression}}), "dev")
    if valid:
        validate_for_synth(config)
    else:
        with pytest.raises(ConfigError, match=r"ingest\.checker_schedule"):
            validate_for_synth(config)


def test_a_dlq_must_outlive_its_queue() -> None:
    config = load_environment(
        with_block(
            "dev",
            {
                "queues": {"retention_s": 345_600, "dlq_retention_s": 345_600},
                "ingest": {"resend_horizon_s": 3600},
            },
        ),
        "dev",
    )
    with pytest.raises(ConfigError, match=r"queues\.dlq_retention_s"):
        validate_for_synth(config)


@pytest.mark.parametrize(
    ("router", "problem"),
    [
        ("local.demo:router", "must live in the shipped 'runtime' package"),
        ("runtime.nowhere:router", "does not exist"),
    ],
)
def test_the_router_must_ship_with_the_functions(router: str, problem: str) -> None:
    config = load_environment(with_block("dev", {"pipeline": {"router": router}}), "dev")
    with pytest.raises(ConfigError, match=rf"pipeline\.router: .*{problem}"):
        validate_for_synth(config)


def loader_sized(processes: int, memory_mb: int) -> EnvironmentConfig:
    return load_environment(
        with_block("dev", {"ingest": {"processes": processes, "loader_memory_mb": memory_mb}}), "dev"
    )


@pytest.mark.parametrize(
    ("processes", "memory_mb", "needed"),
    [(3, 3538, 5307), (2, 3537, 3538), (2, 1769, 3538), (2, 1024, 3538), (6, 10_239, 10_240)],
)
def test_loader_processes_beyond_the_memorys_vcpus_fail_synth(
    processes: int, memory_mb: int, needed: int
) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_for_synth(loader_sized(processes, memory_mb))
    assert (
        f"ingest.processes: {processes} needs ingest.loader_memory_mb >= {needed} "
        "(Lambda gives one vCPU per 1,769 MB" in str(caught.value)
    )


@pytest.mark.parametrize(("processes", "memory_mb"), [(2, 3538), (1, 128), (1, 1769), (6, 10_240), (3, 5307)])
def test_loader_processes_within_the_memorys_vcpus_pass_synth(processes: int, memory_mb: int) -> None:
    validate_for_synth(loader_sized(processes, memory_mb))


def test_the_local_runtime_is_not_held_to_lambdas_vcpus() -> None:
    validate_for_synth(loader_sized(3, 3538), deployed=False)


def test_max_file_bytes_defaults_to_what_the_loader_memory_holds() -> None:
    """Issue 22: a member too large for memory was read whole; the limit fits the function."""
    assert loader_sized(1, 1769).ingest.file_limit_bytes == 1769 * 2**20 // 16
    explicit = {"ingest": {"loader_memory_mb": 1769, "max_file_bytes": 8 * 2**20}}
    assert load_environment(with_block("dev", explicit), "dev").ingest.file_limit_bytes == 8 * 2**20
    too_large = {"ingest": {"loader_memory_mb": 1769, "max_file_bytes": 200 * 2**20}}
    with pytest.raises((ConfigError, ValueError)) as caught:
        load_environment(with_block("dev", too_large), "dev")
    assert "ingest.max_file_bytes" in str(caught.value)
