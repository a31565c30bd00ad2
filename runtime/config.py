"""The Lambda environment contract at run time: `SLUICE_*` variables validated into one frozen
`Settings`, the first time a handler asks (`get_settings()`, never at import).

The sections are declared in `runtime.declarations.settings` (the stacks build them from the
same declarations and write them with `to_environ`); this module adds reading them back from
the process environment. Nested sections use `__`: `SLUICE_INGEST__SETTLE_S=30`. Complex values
(the projection) are JSON.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from runtime.declarations.settings import (
    ENV_PREFIX,
    NESTED_DELIMITER,
    FunctionSettings,
    IngestSettings,
    JobsSettings,
    PipelineSettings,
    ProjectionRule,
    QueueSettings,
    RedisSettings,
    RelaySettings,
    to_environ,
)
from runtime.errors import ConfigError

__all__ = [
    "ENV_PREFIX",
    "NESTED_DELIMITER",
    "IngestSettings",
    "JobsSettings",
    "PipelineSettings",
    "ProjectionRule",
    "QueueSettings",
    "RedisSettings",
    "RelaySettings",
    "Settings",
    "get_settings",
    "load_settings",
    "to_environ",
]


class Settings(FunctionSettings, BaseSettings):  # type: ignore[misc]
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        frozen=True,
        extra="ignore",
        case_sensitive=False,
    )

    def require_ingest(self) -> IngestSettings:
        if self.ingest is None:
            raise ConfigError(f"{ENV_PREFIX}INGEST__ROOT and the other ingest settings are not set")
        return self.ingest

    def require_pipeline(self) -> PipelineSettings:
        if self.pipeline is None:
            raise ConfigError(f"{ENV_PREFIX}PIPELINE__* settings are not set")
        return self.pipeline

    def jobs_settings(self) -> JobsSettings:
        """The jobs section, or its documented defaults when none was given."""
        return self.jobs if self.jobs is not None else JobsSettings()

    def require_relay(self) -> RelaySettings:
        if self.relay is None:
            raise ConfigError(f"{ENV_PREFIX}RELAY__* settings are not set")
        return self.relay


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Validate settings from `environ` (default: the process environment)."""
    try:
        if environ is None:
            return Settings()
        return _from_mapping(environ)
    except ValidationError as exc:
        problems = "; ".join(
            f"{ENV_PREFIX}{NESTED_DELIMITER.join(str(p).upper() for p in e['loc'])}: {e['msg']}"
            for e in exc.errors()
        )
        raise ConfigError(f"invalid sluice settings: {problems}") from None


def _from_mapping(environ: Mapping[str, str]) -> Settings:
    # pydantic-settings reads os.environ; validating a given mapping goes through the same
    # source by constructing the nested dict the way it would.
    nested: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.upper().startswith(ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX) :].lower().split(NESTED_DELIMITER)
        node = nested
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _maybe_json(raw)
    return Settings.model_validate(nested)


def _maybe_json(raw: str) -> Any:
    if raw[:1] in ("{", "["):
        return orjson.loads(raw)
    return raw


@functools.cache
def get_settings() -> Settings:
    """The process's settings, validated once on first use."""
    return load_settings()
