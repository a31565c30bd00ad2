"""The Lambda environment contract: `SLUICE_*` variables validated into one frozen model.

The stacks build a `Settings` from the environment's config and the resources they created,
and turn it into environment variables with `to_environ`; a handler validates them with
`get_settings()` the first time it runs (never at import). Nested sections use `__`:
`SLUICE_INGEST__SETTLE_S=30`. Complex values (the projection) are JSON.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from runtime.errors import ConfigError

ENV_PREFIX = "SLUICE_"
NESTED_DELIMITER = "__"


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RedisSettings(Section):
    """Either `url` (local runs) or `host` + TLS + an AUTH token secret (ElastiCache)."""

    url: str | None = None
    host: str | None = None
    port: int = 6379
    tls: bool = True
    auth_secret_arn: str | None = None
    socket_timeout_s: float = 5.0


class QueueSettings(Section):
    state_url: str = ""
    state_dlq_url: str = ""
    fifo_url: str = ""
    fifo_dlq_url: str = ""
    max_message_bytes: int = Field(1_048_576, ge=1024, le=1_048_576)
    fifo_message_group_id: str = "sluice"


class ProjectionRule(Section):
    path: str
    missing: Literal["null", "omit", "reject"] = "null"


class IngestSettings(Section):
    root: str = Field(description="the EFS mount path that holds inbox/, claimed/, ...")
    settle_s: float = Field(30.0, gt=0)
    lease_s: int = Field(360, ge=1)
    deadline_margin_s: float = Field(15.0, ge=0)
    batch_max_files: int = Field(2000, ge=1)
    # EFS answers each operation in ~1-3 ms: ~6,000 files/s per loader needs ~50 in flight.
    read_threads: int = Field(64, ge=1, le=256)
    # Processes per loader invocation, each loading a disjoint share of the inbox: one per vCPU
    # the function's memory buys (Lambda: 1,769 MB per vCPU).
    processes: int = Field(1, ge=1, le=6)
    resend_horizon_s: int = Field(86_400, ge=1)
    max_crash_runs: int = Field(3, ge=1)
    # A batch that fails (not transiently) waits this long, doubling with each run, before it
    # is resumed; the loader claims new files meanwhile.
    failure_backoff_s: float = Field(60.0, ge=0)
    # A member above this many bytes is rejected `file_too_large` from its stat, never read:
    # a loader holds a whole file (and its records, several times its size) in memory.
    max_file_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    # An inbox file whose mtime is further ahead of the loader's clock than this is rejected
    # `future_mtime` (it would never settle).
    max_clock_skew_s: float = Field(300.0, ge=0)
    archive_after_s: int = Field(420, ge=0)
    archive_retention_days: int | None = None
    projection: dict[str, ProjectionRule] = Field(default_factory=dict)
    target: Literal["standard", "fifo"] = "standard"


class PipelineSettings(Section):
    ledger_table: str = ""
    results_bucket: str = ""
    max_attempts: int = Field(5, ge=1)
    backoff_base_s: float = Field(2.0, ge=0)
    backoff_cap_s: int = Field(900, ge=0, le=900)
    max_steps: int = Field(100, ge=1)
    time_budget_margin_s: float = Field(5.0, ge=0)
    lease_s: int = Field(90, ge=1)
    done_marker_ttl_s: int = Field(900, ge=1)
    dedup_horizon_s: int = Field(86_400, ge=1)
    history_limit: int = Field(16, ge=0, description="history entries kept per item; 0 keeps none")
    fifo_items_per_envelope: int = Field(50, ge=1)
    router: str = Field(
        "runtime.examples.jobs_worker:router",
        description="'package.module:attribute' of the router to run (jobs, else enrich-and-store)",
    )
    results_prefix: str = "results/"
    io_threads: int = Field(8, ge=1, le=64, description="concurrent ledger/sink requests per batch")
    fifo_group_field: str = Field("", description="state field naming an item's FIFO group; empty: config")
    ledger_spill_prefix: str = Field("ledger/", description="results-bucket prefix of plans over 400 KB")
    # Redis down is slow, not stopped: each call gives up after these, then the invocation
    # goes on without Redis (see runtime.pipeline.leases).
    redis_timeout_s: float = Field(0.5, gt=0, le=10, description="Redis connect and read timeout")
    redis_retries: int = Field(1, ge=0, le=5, description="Redis retries after a connection error or timeout")


class RelaySettings(Section):
    """The relay: DynamoDB stream INSERTs -> FIFO queue (relay function) -> third-party API (drain).

    The API key is never here: only the name of its SSM SecureString parameter.
    """

    fifo_url: str = ""
    dlq_url: str = ""
    ledger_table: str = ""
    ledger_partition_key: str = "pk"
    ledger_sort_key: str = Field("sk", description="empty when the ledger has no sort key")
    ledger_ttl_attribute: str = "expires_at"
    ledger_ttl_s: int = Field(86_400, ge=60, description="how long a delivery stays recognisable")
    group_key_field: str = Field("pk", min_length=1, description="stream key whose value groups messages")
    api_url: str = ""
    api_key_parameter: str = ""
    api_key_header: str = Field("x-api-key", min_length=1)
    idempotency_header: str = Field("Idempotency-Key", min_length=1)
    api_key_cache_s: int = Field(300, ge=1)
    calls_per_minute: int = Field(60, ge=1)
    burst_calls: int = Field(1, ge=1, description="calls the rate limit lets through back to back")
    receive_wait_s: int = Field(5, ge=0, le=20, description="long polling: SQS WaitTimeSeconds")
    max_attempts: int = Field(100, ge=1, description="API attempts before the drain dead-letters")
    max_age_s: int = Field(7 * 86_400, ge=1, description="message age at which the drain dead-letters")
    sweep_interval_s: int = Field(
        3600, ge=1, description="breaker open: how often to dead-letter the too old"
    )
    connect_timeout_s: float = Field(3.0, gt=0)
    read_timeout_s: float = Field(10.0, gt=0)
    deadline_margin_s: float = Field(15.0, ge=0)
    retry_backoff_base_s: float = Field(5.0, gt=0)
    retry_backoff_cap_s: int = Field(900, ge=1, le=43_200)
    breaker_failure_threshold: int = Field(3, ge=1)
    breaker_backoff_base_s: float = Field(30.0, gt=0)
    breaker_backoff_cap_s: int = Field(900, ge=1, le=900)
    response_excerpt_bytes: int = Field(1024, ge=0, le=100_000)


class JobsSettings(Section):
    """Synchronous jobs (POST /jobs waits on a Redis channel) and their worker step.

    Every field has a default: a function given no jobs section (a router that completes
    jobs) uses them; the stacks pass the environment's values to the jobs function."""

    # API Gateway's HTTP API cuts every integration at 30 s: the waiter answers 202 before it.
    wait_s: float = Field(25.0, gt=0, lt=30)
    results_bucket: str = Field("", description="empty: the pipeline's results bucket")
    results_prefix: str = "jobs/"
    inline_max_bytes: int = Field(65_536, ge=0, le=1_000_000, description="larger results: a presigned URL")
    presign_ttl_s: int = Field(900, ge=1, le=604_800)
    status_ttl_s: int = Field(86_400, ge=1, description="Redis status lifetime; S3 keeps the result")
    max_body_bytes: int = Field(262_144, ge=2, le=1_000_000, description="largest POST /jobs body")
    answer_margin_s: float = Field(0.5, ge=0, lt=30, description="time kept for answering after the last I/O")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        frozen=True,
        extra="ignore",
        case_sensitive=False,
    )

    env: str = "local"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    redis: RedisSettings = RedisSettings()
    queues: QueueSettings = QueueSettings()
    ingest: IngestSettings | None = None
    pipeline: PipelineSettings | None = None
    relay: RelaySettings | None = None
    jobs: JobsSettings | None = None

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


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, Mapping) and not prefix.endswith(f"{NESTED_DELIMITER}PROJECTION"):
        for key, inner in value.items():
            _flatten(f"{prefix}{NESTED_DELIMITER}{key.upper()}", inner, out)
        return
    if value is None:
        return
    if isinstance(value, str):
        out[prefix] = value
    else:
        out[prefix] = orjson.dumps(value).decode()


def to_environ(settings: Settings, *, exclude_defaults: bool = False) -> dict[str, str]:
    """The environment variables that make `get_settings()` rebuild `settings` exactly
    (`exclude_defaults` leaves out what the model's defaults already give: Lambda allows
    only 4 KB of environment)."""
    out: dict[str, str] = {}
    for key, value in settings.model_dump(mode="json", exclude_defaults=exclude_defaults).items():
        _flatten(f"{ENV_PREFIX}{key.upper()}", value, out)
    return out


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
