"""Every tunable setting, declared once: its default, its bounds and what it means.

A `*Tunables` section holds the settings an environment's `cdk.json` block sets and a function
reads unchanged. Both sides are built from it: `stacks.config` extends each with what only the
deployment needs (timeouts, schedules, batch sizes), and the `*Settings` sections below extend
it with what the stacks compute or create (queue URLs, leases, derived limits), which is what a
function validates at run time (`runtime.config`). `stacks.contract.function_settings` copies
every declared tunable across, so a new setting is one line here and reaches the Lambda.

Settings travel as `SLUICE_*` environment variables, nested sections joined by `__`
(`SLUICE_INGEST__SETTLE_S=30`); complex values (the projection) are JSON. Pydantic only: the
stacks import this module at synth.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from runtime.declarations.aws_limits import (
    HTTP_API_TIMEOUT_S,
    LAMBDA_MAX_VCPUS,
    S3_MAX_PRESIGN_TTL_S,
    SQS_MAX_DELAY_S,
    SQS_MAX_MESSAGE_BYTES,
    SQS_MAX_VISIBILITY_S,
    SQS_MAX_WAIT_S,
    SQS_MESSAGE_GROUP_ID_MAX_CHARS,
    SQS_MIN_MESSAGE_BYTES,
)
from runtime.declarations.names import JOBS_RESULTS_PREFIX

ENV_PREFIX = "SLUICE_"
NESTED_DELIMITER = "__"
ROUTER_REFERENCE = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def tunables(section: BaseModel, declared: type[Section]) -> dict[str, Any]:
    """The values `section` holds for every setting `declared` declares (a stack config section
    in, keyword arguments of the matching runtime section out)."""
    return {name: getattr(section, name) for name in declared.model_fields}


# -- queues -----------------------------------------------------------------------------------


class QueueTunables(Section):
    max_message_bytes: int = Field(
        SQS_MAX_MESSAGE_BYTES,
        ge=SQS_MIN_MESSAGE_BYTES,
        le=SQS_MAX_MESSAGE_BYTES,
        description="the queues' MaximumMessageSize, and what every producer packs messages up to",
    )
    fifo_message_group_id: str = Field(
        "sluice",
        min_length=1,
        max_length=SQS_MESSAGE_GROUP_ID_MAX_CHARS,
        description="the FIFO message group of items that name none",
    )


class QueueSettings(QueueTunables):
    state_url: str = ""
    state_dlq_url: str = ""
    fifo_url: str = ""
    fifo_dlq_url: str = ""


# -- ingest -----------------------------------------------------------------------------------


class ProjectionRule(Section):
    path: str = Field(min_length=1, description="dotted path into the source record")
    missing: Literal["null", "omit", "reject"] = "null"


class IngestTunables(Section):
    settle_s: float = Field(30.0, gt=0, description="a file is loadable once its mtime is this old")
    # A loader stops claiming this long before its deadline, so a step in flight can finish
    # before Lambda cuts the function off: with no margin it could be killed mid-step.
    deadline_margin_s: float = Field(15.0, gt=0, description="time kept back from the loader's deadline")
    batch_max_files: int = Field(2000, ge=1, le=100_000, description="files one batch claims at most")
    # EFS answers each operation in ~1-3 ms: ~6,000 files/s per loader needs ~50 in flight.
    read_threads: int = Field(64, ge=1, le=256, description="concurrent EFS reads per loader process")
    # A CPython loader is bound by one core (the GIL), so more processes help only as far as the
    # function's memory buys vCPUs: Lambda gives one per 1,769 MB (checked at synth).
    processes: int = Field(
        1,
        ge=1,
        le=LAMBDA_MAX_VCPUS,
        description="processes per loader run, each loading a disjoint share of the inbox",
    )
    resend_horizon_s: int = Field(
        86_400, ge=60, description="how long the checker may re-send a batch's unconfirmed parts"
    )
    max_crash_runs: int = Field(
        3, ge=1, le=100, description="runs a batch may fail before it is quarantined or halted"
    )
    failure_backoff_s: float = Field(
        60.0,
        ge=0,
        le=3600,
        description="a failing batch waits this long (doubling per run) before a retry; the loader "
        "claims new files meanwhile",
    )
    max_clock_skew_s: float = Field(
        300.0, ge=0, description="inbox files with mtimes further ahead are rejected future_mtime"
    )
    archive_retention_days: int | None = Field(
        None, ge=1, description="archived batches are deleted after this; None keeps them"
    )
    projection: dict[str, ProjectionRule] = Field(
        default_factory=dict, description="output field -> source path; empty keeps every field"
    )
    target: Literal["standard", "fifo"] = Field("standard", description="the queue ingest sends to")


class IngestSettings(IngestTunables):
    root: str = Field(description="the EFS mount path that holds inbox/, claimed/, ...")
    lease_s: int = Field(360, ge=1, description="a claim's lease: the loader's timeout plus a margin")
    # A member above this many bytes is rejected `file_too_large` from its stat, never read:
    # a loader holds a whole file (and its records, several times its size) in memory.
    max_file_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    archive_after_s: int = Field(420, ge=0, description="a committed batch's age before it is archived")


# -- pipeline ---------------------------------------------------------------------------------


class PipelineTunables(Section):
    max_attempts: int = Field(5, ge=1, le=100, description="attempts of a failing step before poison")
    backoff_base_s: float = Field(2.0, ge=0, description="a retry's delay, doubling per attempt")
    backoff_cap_s: int = Field(
        SQS_MAX_DELAY_S, ge=0, le=SQS_MAX_DELAY_S, description="SQS DelaySeconds caps at 900"
    )
    max_steps: int = Field(100, ge=1, description="steps one item may take before it is poison")
    time_budget_margin_s: float = Field(5.0, ge=0, description="time kept back from the router's deadline")
    done_marker_ttl_s: int = Field(900, ge=1, description="how long Redis remembers a finished envelope")
    history_limit: int = Field(16, ge=0, description="history entries kept per item; 0 keeps none")
    fifo_items_per_envelope: int = Field(50, ge=1)
    router: str = Field(
        "runtime.examples.jobs_worker:router",
        pattern=ROUTER_REFERENCE,
        description="'package.module:attribute' of the router the router functions run",
    )
    io_threads: int = Field(8, ge=1, le=64, description="concurrent ledger/sink requests per batch")
    fifo_group_field: str = Field("", description="state field naming an item's FIFO group; empty: config")


class PipelineSettings(PipelineTunables):
    ledger_table: str = ""
    results_bucket: str = ""
    lease_s: int = Field(90, ge=1)
    dedup_horizon_s: int = Field(86_400, ge=1)
    results_prefix: str = "results/"
    ledger_spill_prefix: str = Field("ledger/", description="results-bucket prefix of plans over 400 KB")
    # Redis down is slow, not stopped: each call gives up after these, then the invocation
    # goes on without Redis (see runtime.pipeline.leases).
    redis_timeout_s: float = Field(0.5, gt=0, le=10, description="Redis connect and read timeout")
    redis_retries: int = Field(1, ge=0, le=5, description="Redis retries after a connection error or timeout")


# -- relay ------------------------------------------------------------------------------------


class RelayTunables(Section):
    api_url: str = Field("", description="the third-party https endpoint; required when enabled")
    api_key_header: str = Field("x-api-key", min_length=1)
    idempotency_header: str = Field("Idempotency-Key", min_length=1)
    group_key_field: str = Field("pk", min_length=1, description="stream key whose value groups messages")
    api_key_cache_s: int = Field(300, ge=1, le=86_400, description="how long the API key is cached")
    calls_per_minute: int = Field(60, ge=1, le=100_000)
    burst_calls: int = Field(
        1, ge=1, le=1000, description="calls let through back to back (1: evenly spaced)"
    )
    receive_wait_s: int = Field(5, ge=0, le=SQS_MAX_WAIT_S, description="the drain's long polling")
    max_attempts: int = Field(
        100,
        ge=1,
        le=500,
        description="API attempts before the drain dead-letters (maxReceiveCount is a backstop)",
    )
    max_age_s: int = Field(7 * 86_400, ge=1, description="a message this old is dead-lettered by the drain")
    sweep_interval_s: int = Field(
        3600,
        ge=60,
        le=86_400,
        description="while the breaker is open, how often a drain dead-letters the too old",
    )
    connect_timeout_s: float = Field(3.0, gt=0, le=60)
    read_timeout_s: float = Field(10.0, gt=0, le=300)
    deadline_margin_s: float = Field(15.0, ge=0, description="time kept back from the drain's deadline")
    retry_backoff_base_s: float = Field(5.0, gt=0)
    retry_backoff_cap_s: int = Field(900, ge=1, le=SQS_MAX_VISIBILITY_S)
    breaker_failure_threshold: int = Field(3, ge=1, le=100)
    breaker_backoff_base_s: float = Field(30.0, gt=0)
    breaker_backoff_cap_s: int = Field(900, ge=1, le=900, description="the probe interval's ceiling")


class RelaySettings(RelayTunables):
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
    api_key_parameter: str = ""
    response_excerpt_bytes: int = Field(1024, ge=0, le=100_000)


# -- jobs -------------------------------------------------------------------------------------


class JobsTunables(Section):
    # API Gateway's HTTP API cuts every integration at 30 s: the waiter answers 202 before it.
    wait_s: float = Field(25.0, gt=0, lt=HTTP_API_TIMEOUT_S, description="answer 202 after this")
    inline_max_bytes: int = Field(65_536, ge=0, le=1_000_000, description="larger results: presigned URL")
    presign_ttl_s: int = Field(900, ge=1, le=S3_MAX_PRESIGN_TTL_S)
    # A status shorter-lived than a client's polling could vanish between the 202 and the GET.
    status_ttl_s: int = Field(86_400, ge=60, description="Redis status lifetime; S3 keeps the result")
    max_body_bytes: int = Field(262_144, ge=2, le=1_000_000, description="largest POST /jobs body")


class JobsSettings(JobsTunables):
    """Synchronous jobs (POST /jobs waits on a Redis channel) and their worker step.

    Every field has a default: a function given no jobs section (a router that completes
    jobs) uses them; the stacks pass the environment's values to the jobs function."""

    results_bucket: str = Field("", description="empty: the pipeline's results bucket")
    results_prefix: str = JOBS_RESULTS_PREFIX
    answer_margin_s: float = Field(0.5, ge=0, lt=30, description="time kept for answering after the last I/O")


# -- one function's settings ------------------------------------------------------------------


class RedisSettings(Section):
    """Either `url` (local runs) or `host` + TLS + an AUTH token secret (ElastiCache)."""

    url: str | None = None
    host: str | None = None
    port: int = 6379
    tls: bool = True
    auth_secret_arn: str | None = None
    socket_timeout_s: float = 5.0


class FunctionSettings(BaseModel):
    """Everything one function reads: the stacks build it, `to_environ` turns it into its
    environment, and `runtime.config.Settings` (the same fields) validates it back at run time."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    env: str = "local"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    redis: RedisSettings = RedisSettings()
    queues: QueueSettings = QueueSettings()
    ingest: IngestSettings | None = None
    pipeline: PipelineSettings | None = None
    relay: RelaySettings | None = None
    jobs: JobsSettings | None = None


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
        out[prefix] = json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def to_environ(settings: FunctionSettings, *, exclude_defaults: bool = False) -> dict[str, str]:
    """The environment variables that make `runtime.config.load_settings` rebuild `settings`
    exactly (`exclude_defaults` leaves out what the model's defaults already give: Lambda allows
    only 4 KB of environment)."""
    out: dict[str, str] = {}
    for key, value in settings.model_dump(mode="json", exclude_defaults=exclude_defaults).items():
        _flatten(f"{ENV_PREFIX}{key.upper()}", value, out)
    return out
