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


_CHECKS = (_batch_needs_window, _redis_engine)
