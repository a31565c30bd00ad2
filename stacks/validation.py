"""Synth-time checks that need the shape of the resources, beyond `stacks/config.py`'s own.

Each failure is a `ConfigError` naming the settings to change; app.py turns it into a clean
`cdk synth` error.
"""

from __future__ import annotations

import importlib.util
import re

from runtime.declarations.aws_limits import (
    LAMBDA_MAX_MEMORY_MB,
    LAMBDA_MAX_VCPUS,
    LAMBDA_MB_PER_VCPU,
    SQS_STANDARD_MAX_BATCH_WITHOUT_WINDOW,
)
from runtime.errors import ConfigError
from stacks.config import EnvironmentConfig

# `transit_encryption_mode: required` and the parameter family naming need Redis 7 or later.
MIN_REDIS_MAJOR = 7


def validate_for_synth(config: EnvironmentConfig, *, deployed: bool = True) -> None:
    """Every check; `deployed=False` (the local runtime) skips those about what ships to Lambda,
    so a router under development can run locally from anywhere on the path."""
    checks = _CHECKS + (_DEPLOY_CHECKS if deployed else ())
    problems = [problem for check in checks if (problem := check(config))]
    if problems:
        details = "\n".join(f"  {problem}" for problem in problems)
        raise ConfigError(f"invalid sluice config for environment {config.name!r}:\n{details}")


def _batch_needs_window(config: EnvironmentConfig) -> str | None:
    pipeline = config.pipeline
    if pipeline.batch_size > SQS_STANDARD_MAX_BATCH_WITHOUT_WINDOW and pipeline.batching_window_s < 1:
        return (
            f"pipeline.batch_size: {pipeline.batch_size} needs pipeline.batching_window_s >= 1 "
            f"(Lambda takes more than {SQS_STANDARD_MAX_BATCH_WITHOUT_WINDOW} SQS messages per batch "
            "only with a batching window)"
        )
    return None


def _redis_engine(config: EnvironmentConfig) -> str | None:
    version = config.redis.engine_version
    major = version.split(".")[0]
    if not major.isdigit() or int(major) < MIN_REDIS_MAJOR:
        return f"redis.engine_version: {version!r} must be {MIN_REDIS_MAJOR}.x or later (TLS required mode)"
    return None


# EventBridge wants "rate(1 minute)" but "rate(5 minutes)": the unit's number must agree.
_RATE = re.compile(r"^rate\((?:1 (?:minute|hour|day)|(?:[2-9]|[1-9]\d+) (?:minutes|hours|days))\)$")
_CRON = re.compile(r"^cron\((?:\S+ ){5}\S+\)$")


def _schedules(config: EnvironmentConfig) -> str | None:
    ingest = config.ingest
    for name in ("loader_schedule", "checker_schedule", "archiver_schedule"):
        expression = getattr(ingest, name)
        if not (_RATE.match(expression) or _CRON.match(expression)):
            return (
                f"ingest.{name}: {expression!r} is not an EventBridge schedule "
                "(rate(1 minute), rate(5 minutes), cron(m h dom mon dow year))"
            )
    return None


def _dlq_outlives_its_queue(config: EnvironmentConfig) -> str | None:
    queues = config.queues
    # A standard queue's message keeps its original enqueue time in the DLQ, so a DLQ that
    # retains no longer than its source would delete poison the moment it arrives.
    if queues.dlq_retention_s <= queues.retention_s:
        return (
            f"queues.dlq_retention_s ({queues.dlq_retention_s}) must exceed queues.retention_s "
            f"({queues.retention_s}): SQS keeps a message's original enqueue time in the DLQ"
        )
    return None


SHIPPED_PACKAGE = "runtime"


def _router_ships(config: EnvironmentConfig) -> str | None:
    router = config.pipeline.router
    module = router.split(":", 1)[0]
    # Only the `runtime` package is in the functions' code asset; a router elsewhere would
    # import-fail on the first delivery instead of here.
    if module != SHIPPED_PACKAGE and not module.startswith(f"{SHIPPED_PACKAGE}."):
        return f"pipeline.router: {router!r} must live in the shipped '{SHIPPED_PACKAGE}' package"
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        return f"pipeline.router: module {module!r} does not exist"
    return None


def lambda_vcpus(memory_mb: int) -> int:
    """Whole vCPUs a function of `memory_mb` gets: one per 1,769 MB, and the documented six at
    the 10,240 MB maximum (where the proportional share, 5.8, would leave six processes unreachable)."""
    if memory_mb >= LAMBDA_MAX_MEMORY_MB:
        return LAMBDA_MAX_VCPUS
    return max(1, memory_mb // LAMBDA_MB_PER_VCPU)


def _loader_processes_have_vcpus(config: EnvironmentConfig) -> str | None:
    ingest = config.ingest
    # Each loader process is CPU-bound on its own core; processes beyond the vCPUs Lambda gives
    # the function's memory would only time-slice one another (and pay for the extra spawns).
    vcpus = lambda_vcpus(ingest.loader_memory_mb)
    if ingest.processes > vcpus:
        needed = min(ingest.processes * LAMBDA_MB_PER_VCPU, LAMBDA_MAX_MEMORY_MB)
        return (
            f"ingest.processes: {ingest.processes} needs ingest.loader_memory_mb >= {needed} "
            f"(Lambda gives one vCPU per {LAMBDA_MB_PER_VCPU:,} MB; {ingest.loader_memory_mb} MB "
            f"buys {vcpus})"
        )
    return None


_CHECKS = (_batch_needs_window, _redis_engine, _schedules, _dlq_outlives_its_queue)
# The local runtime runs on a laptop, not Lambda: its cores have nothing to do with memory_mb.
_DEPLOY_CHECKS = (_router_ships, _loader_processes_have_vcpus)
