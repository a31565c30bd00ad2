"""Synth-time checks that need the shape of the resources, beyond `stacks/config.py`'s own.

Each failure is a `ConfigError` naming the settings to change; app.py turns it into a clean
`cdk synth` error.
"""

from __future__ import annotations

from runtime.errors import ConfigError
from stacks.config import EnvironmentConfig

SQS_STANDARD_MAX_BATCH_WITHOUT_WINDOW = 10
# `transit_encryption_mode: required` and the parameter family naming need Redis 7 or later.
MIN_REDIS_MAJOR = 7


def validate_for_synth(config: EnvironmentConfig) -> None:
    problems = [problem for check in _CHECKS if (problem := check(config))]
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


def _efs_throughput(config: EnvironmentConfig) -> str | None:
    ingest = config.ingest
    # Provisioned throughput is billed per MiB/s-month whether used or not, and the stack sizes
    # the throughput alarm against it: a value the mode ignores would mislead both.
    if ingest.efs_throughput_mode != "provisioned" and ingest.efs_provisioned_mibps is not None:
        return (
            f"ingest.efs_provisioned_mibps is set but ingest.efs_throughput_mode is "
            f"{ingest.efs_throughput_mode!r}"
        )
    if ingest.efs_throughput_mode == "provisioned" and ingest.efs_provisioned_mibps is None:
        return "ingest.efs_throughput_mode 'provisioned' needs ingest.efs_provisioned_mibps"
    return None


def _visibility_covers_router(config: EnvironmentConfig) -> str | None:
    pipeline = config.pipeline
    needed = 6 * pipeline.timeout_s + pipeline.batching_window_s
    if pipeline.visibility_timeout_s < needed:
        return (
            f"pipeline.timeout_s: queue visibility {pipeline.visibility_timeout_s}s is below "
            "6 x timeout + window"
        )
    return None


_CHECKS = (_batch_needs_window, _redis_engine, _efs_throughput, _visibility_covers_router)
