"""Typed, validated configuration of one sluice environment.

`cdk.json` holds a `sluice` context block::

    {"environments": {"dev": {...}, "staging": {...}, "prod": {...}}, "local": {...}}

Each environment block overrides the defaults below (deep merge); `local` is overlaid on `dev`
for the local runtime. The result is a frozen `EnvironmentConfig`: unknown keys and bad values
fail synth with the dotted name of the offending setting. Nothing here imports CDK or boto3, so
the local runtime and the tests build exactly the same object the stacks do.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from runtime.declarations.aws_limits import (
    HTTP_API_TIMEOUT_S,
    LAMBDA_MAX_MEMORY_MB,
    LAMBDA_MAX_TIMEOUT_S,
    LAMBDA_MB_PER_VCPU,
    LAMBDA_MIN_MEMORY_MB,
    LOG_RETENTION_DAYS,
    SQS_FIFO_MAX_BATCH,
    SQS_MAX_RECEIVE_COUNT,
    SQS_MAX_RETENTION_S,
    SQS_MAX_VISIBILITY_S,
    SQS_MIN_RETENTION_S,
    STREAM_MAX_RECORD_AGE_S,
)
from runtime.declarations.settings import (
    IngestTunables,
    JobsTunables,
    PipelineTunables,
    QueueTunables,
    RelayTunables,
)
from runtime.errors import ConfigError

# The relay queue keeps messages as long as SQS allows: the drain dead-letters a message itself
# long before (relay.max_age_s), so nothing ever expires from it unseen.
RELAY_QUEUE_RETENTION_S = SQS_MAX_RETENTION_S
# What relay.max_age_s must leave of the retention beyond the longest wait between two receives
# of a message: a day of slack for a drain that is failing or being redeployed.
RELAY_RETENTION_SLACK_S = 86_400
_SCHEDULE_UNIT_S = {"minute": 60, "hour": 3600, "day": 86_400}
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,19}$")


# An ingest projection rule, as cdk.json spells it.


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NetworkConfig(Frozen):
    max_azs: int = Field(2, ge=2, le=3, description="AZs for the VPC (ElastiCache and EFS need 2+)")
    nat_gateways: int = Field(1, ge=1, le=3)
    interface_endpoints: tuple[Literal["sqs", "ssm", "secretsmanager", "logs", "monitoring"], ...] = (
        "sqs",
        "ssm",
        "secretsmanager",
    )


class RedisConfig(Frozen):
    node_type: str = "cache.t4g.micro"
    replicas: int = Field(0, ge=0, le=5, description="read replicas per shard")
    multi_az: bool = False
    engine_version: str = "7.1"
    memory_alarm_percent: float = Field(80, gt=0, le=100)

    @model_validator(mode="after")
    def _failover_needs_replica(self) -> RedisConfig:
        if self.multi_az and self.replicas < 1:
            raise ValueError("redis.multi_az needs redis.replicas >= 1 (failover needs a replica)")
        return self


class LambdaConfig(Frozen):
    python_version: Literal["3.12", "3.13"] = "3.12"
    memory_mb: int = Field(1024, ge=LAMBDA_MIN_MEMORY_MB, le=LAMBDA_MAX_MEMORY_MB)
    log_retention_days: int = 30
    tracing: bool = True
    reserved_concurrency: dict[str, int] = Field(
        default_factory=dict,
        description="function name -> reserved concurrency; unset by default (see README)",
    )

    @model_validator(mode="after")
    def _retention_is_a_cloudwatch_value(self) -> LambdaConfig:
        if self.log_retention_days not in LOG_RETENTION_DAYS:
            raise ValueError(f"lambda.log_retention_days must be one of {LOG_RETENTION_DAYS}")
        return self


class QueueConfig(QueueTunables):
    retention_s: int = Field(4 * 86_400, ge=SQS_MIN_RETENTION_S, le=SQS_MAX_RETENTION_S)
    dlq_retention_s: int = Field(14 * 86_400, ge=SQS_MIN_RETENTION_S, le=SQS_MAX_RETENTION_S)


# A loaded file costs the loader its bytes, the parsed records and their encoded items at once.
MEMORY_PER_FILE_BYTE = 16


class IngestConfig(IngestTunables):
    """The declared ingest tunables, and what only the deployment needs."""

    loader_timeout_s: int = Field(300, ge=30, le=LAMBDA_MAX_TIMEOUT_S)
    checker_timeout_s: int = Field(60, ge=10, le=LAMBDA_MAX_TIMEOUT_S)
    archiver_timeout_s: int = Field(300, ge=30, le=LAMBDA_MAX_TIMEOUT_S)
    lease_margin_s: int = Field(60, ge=1)
    loader_memory_mb: int = Field(
        LAMBDA_MB_PER_VCPU,
        ge=LAMBDA_MIN_MEMORY_MB,
        le=LAMBDA_MAX_MEMORY_MB,
        description="the loader function's memory; 1,769 MB buys one full vCPU for a CPU-bound loader",
    )
    max_file_bytes: int | None = Field(
        None,
        ge=1024,
        description="inbox files above this are rejected file_too_large, never read (a loader holds a file "
        "and its records, several times its size, in memory); default: 1/16 of loader_memory_mb",
    )
    loader_schedule: str = "rate(1 minute)"
    checker_schedule: str = "rate(1 minute)"
    archiver_schedule: str = "rate(5 minutes)"
    efs_throughput_mode: Literal["bursting", "elastic", "provisioned"] = "elastic"
    efs_provisioned_mibps: int | None = Field(None, ge=1, le=3072)

    @property
    def file_limit_bytes(self) -> int:
        """max_file_bytes, or what fits the loader's memory (1/16 of it: 110 MiB at 1,769 MB)."""
        if self.max_file_bytes is not None:
            return self.max_file_bytes
        return self.loader_memory_mb * 2**20 // MEMORY_PER_FILE_BYTE

    @property
    def lease_s(self) -> int:
        """A claim's lease outlives the function that holds it, plus a margin."""
        return self.loader_timeout_s + self.lease_margin_s

    @model_validator(mode="after")
    def _consistent(self) -> IngestConfig:
        if self.deadline_margin_s >= self.loader_timeout_s:
            raise ValueError("ingest.deadline_margin_s must be below ingest.loader_timeout_s")
        if self.file_limit_bytes * MEMORY_PER_FILE_BYTE > self.loader_memory_mb * 2**20:
            raise ValueError(
                f"ingest.max_file_bytes must fit the loader's memory: at most "
                f"1/{MEMORY_PER_FILE_BYTE} of ingest.loader_memory_mb"
            )
        if (self.efs_throughput_mode == "provisioned") != (self.efs_provisioned_mibps is not None):
            raise ValueError(
                "ingest.efs_provisioned_mibps is required with efs_throughput_mode 'provisioned' "
                "and only allowed with it"
            )
        return self


class PipelineConfig(PipelineTunables):
    """The declared pipeline tunables, and what only the deployment needs."""

    timeout_s: int = Field(60, ge=3, le=LAMBDA_MAX_TIMEOUT_S)
    batch_size: int = Field(100, ge=1, le=10_000)
    batching_window_s: int = Field(1, ge=0, le=300)
    max_concurrency: int = Field(10, ge=2, le=1000)
    lease_margin_s: int = Field(30, ge=1)
    standard_max_receive_count: int = Field(30, ge=1, le=SQS_MAX_RECEIVE_COUNT)
    fifo_batch_size: int = Field(10, ge=1, le=SQS_FIFO_MAX_BATCH)
    fifo_bounce_allowance: int = Field(20, ge=0)
    # Declared, not discovered: synth never imports the router (nor, with it, the runtime's
    # dependencies) to find out.
    router_completes_jobs: bool = Field(
        True, description="the router is a runtime.jobs.JobsRouter: it completes what POST /jobs enqueues"
    )

    @property
    def visibility_timeout_s(self) -> int:
        """AWS: a queue's visibility timeout should be >= 6 x function timeout + batching window."""
        return 6 * self.timeout_s + self.batching_window_s

    @property
    def lease_s(self) -> int:
        return self.timeout_s + self.lease_margin_s

    @property
    def fifo_max_receive_count(self) -> int:
        """Group-mates are reported failed with every failing attempt, so FIFO needs room."""
        return 10 * self.max_attempts + self.fifo_bounce_allowance

    @model_validator(mode="after")
    def _consistent(self) -> PipelineConfig:
        if self.fifo_max_receive_count > SQS_MAX_RECEIVE_COUNT:
            raise ValueError(
                f"pipeline: 10 x max_attempts + fifo_bounce_allowance = {self.fifo_max_receive_count} "
                f"exceeds SQS's maxReceiveCount cap of {SQS_MAX_RECEIVE_COUNT}"
            )
        if self.visibility_timeout_s > SQS_MAX_VISIBILITY_S:
            raise ValueError("pipeline.timeout_s makes the queue visibility timeout exceed 12 hours")
        if self.time_budget_margin_s >= self.timeout_s:
            raise ValueError("pipeline.time_budget_margin_s must be below pipeline.timeout_s")
        return self


class StorageConfig(Frozen):
    """Lifecycle of the results bucket and of its server access logs."""

    results_expire_days: int | None = Field(None, ge=1, description="None keeps results forever")
    results_infrequent_access_days: int = Field(30, ge=30, description="S3 needs >= 30 days")
    access_log_expire_days: int = Field(90, ge=1)
    noncurrent_version_expire_days: int = Field(
        7, ge=1, description="every bucket is versioned; replaced or deleted objects are kept this long"
    )

    @model_validator(mode="after")
    def _expire_after_transition(self) -> StorageConfig:
        if self.results_expire_days is not None and (
            self.results_expire_days <= self.results_infrequent_access_days
        ):
            raise ValueError("storage.results_expire_days must exceed storage.results_infrequent_access_days")
        return self


_SCHEDULE = re.compile(r"^(rate\(\d+ (minute|minutes|hour|hours|day|days)\)|cron\(\S+( \S+){5}\))$")


class RelayConfig(RelayTunables):
    """The relay: stream INSERTs -> FIFO (relay function) -> scheduled drain -> third-party API.

    Off unless an environment enables it: it needs the third-party API's https URL (and its key
    in SSM), and a drain with nowhere to send fails on every tick."""

    enabled: bool = Field(False, description="build the relay (source table, FIFO queue, functions)")
    drain_schedule: str = "rate(1 minute)"
    drain_timeout_s: int = Field(60, ge=10, le=LAMBDA_MAX_TIMEOUT_S)
    relay_timeout_s: int = Field(30, ge=3, le=LAMBDA_MAX_TIMEOUT_S)
    stream_batch_size: int = Field(100, ge=1, le=10_000)
    max_record_age_s: int = Field(86_400, ge=60, le=STREAM_MAX_RECORD_AGE_S)
    retry_attempts: int = Field(10, ge=0, le=10_000)
    oldest_message_alarm_s: int = Field(3600, ge=60)

    @model_validator(mode="after")
    def _consistent(self) -> RelayConfig:
        if not _SCHEDULE.match(self.drain_schedule):
            raise ValueError("relay.drain_schedule must be an EventBridge rate(...) or cron(...) expression")
        if self.enabled and not self.api_url:
            raise ValueError("relay.api_url is required when relay.enabled is true")
        # The API key travels in a header: never over plain http.
        if self.api_url and not re.match(r"^https://[^\s/]+", self.api_url):
            raise ValueError("relay.api_url must be an https:// URL")
        # One API call must fit between the drain's deadline check and its timeout.
        if self.deadline_margin_s < self.connect_timeout_s + self.read_timeout_s:
            raise ValueError("relay.deadline_margin_s must cover connect_timeout_s + read_timeout_s")
        if self.deadline_margin_s >= self.drain_timeout_s:
            raise ValueError("relay.deadline_margin_s must be below relay.drain_timeout_s")
        if self.breaker_backoff_base_s > self.breaker_backoff_cap_s:
            raise ValueError("relay.breaker_backoff_base_s must not exceed breaker_backoff_cap_s")
        if self.max_age_s + self.longest_unseen_s() + RELAY_RETENTION_SLACK_S > RELAY_QUEUE_RETENTION_S:
            raise ValueError(
                f"relay.max_age_s ({self.max_age_s}) plus the longest a message can go unreceived "
                f"({self.longest_unseen_s()} s: retry_backoff_cap_s or breaker_backoff_cap_s or "
                f"sweep_interval_s, plus the drain_schedule period and drain_timeout_s) and a day must "
                f"fit in the relay queue's retention ({RELAY_QUEUE_RETENTION_S} s): a message could "
                "expire before the drain dead-letters it"
            )
        return self

    def longest_unseen_s(self) -> int:
        """The longest a relay message can wait between two receives: invisible after a failed
        attempt (backoff or Retry-After, capped), behind an open breaker (probe or sweep), then
        until the next drain runs and reaches it."""
        wait = max(self.retry_backoff_cap_s, self.breaker_backoff_cap_s, self.sweep_interval_s)
        return wait + schedule_period_s(self.drain_schedule) + self.drain_timeout_s


def schedule_period_s(expression: str) -> int:
    """The period of an EventBridge `rate(...)`; a `cron(...)` counts as daily (its worst case
    for a drain schedule worth deploying: anything rarer fails the retention check anyway)."""
    found = re.match(r"^rate\((\d+) (minute|hour|day)s?\)$", expression)
    if found is None:
        return _SCHEDULE_UNIT_S["day"]
    return int(found.group(1)) * _SCHEDULE_UNIT_S[found.group(2)]


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_TOPIC_ARN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}$")


class AlarmConfig(Frozen):
    """Thresholds, and who hears about them: every alarm notifies the environment's SNS topic
    (alarm and OK), which `emails` subscribe to; or an existing topic (`topic_arn`) is used."""

    emails: tuple[str, ...] = Field((), description="subscribed to the environment's alarm topic")
    topic_arn: str = Field("", description="an existing SNS topic to notify instead of creating one")
    dlq_depth: int = Field(1, ge=1)
    oldest_file_age_s: int = Field(900, ge=60)
    rejected_files_per_5min: int = Field(1, ge=1)
    error_rate_percent: float = Field(5.0, gt=0, le=100)
    efs_burst_credit_bytes: int = Field(
        500 * 1024**3, ge=1, description="bursting mode: alarm when burst credits fall below this"
    )
    efs_throughput_percent: float = Field(
        80.0, gt=0, le=100, description="elastic/provisioned: metered I/O as % of permitted throughput"
    )
    redis_unavailable_invocations: int = Field(
        5, ge=1, description="router invocations in 5 minutes that found Redis unreachable"
    )

    @model_validator(mode="after")
    def _recipients(self) -> AlarmConfig:
        for email in self.emails:
            if not _EMAIL.match(email):
                raise ValueError(f"alarms.emails: {email!r} is not an email address")
        if self.topic_arn and not _TOPIC_ARN.match(self.topic_arn):
            raise ValueError("alarms.topic_arn must be an SNS topic ARN")
        if self.topic_arn and self.emails:
            raise ValueError("alarms: set emails (a topic is created) or topic_arn (yours), not both")
        return self


class JobsConfig(JobsTunables):
    """POST /jobs waits for its job's completion on Redis, then answers 200, or 202 + GET URL."""

    enabled: bool = Field(True, description="the jobs routes and function (needs gateway.enabled)")
    timeout_s: int = Field(29, ge=3, le=HTTP_API_TIMEOUT_S, description="the jobs function's timeout")
    memory_mb: int = Field(512, ge=LAMBDA_MIN_MEMORY_MB, le=LAMBDA_MAX_MEMORY_MB)

    @model_validator(mode="after")
    def _waits_inside_the_function(self) -> JobsConfig:
        # The waiter must still have time to answer 202 before its function is cut off.
        if self.wait_s + 1 > self.timeout_s:
            raise ValueError("jobs.wait_s must leave at least 1 s of jobs.timeout_s to answer")
        return self


class GatewayConfig(Frozen):
    """The HTTP API: POST /messages (straight to the state queue), POST /jobs, GET /jobs/{id}."""

    enabled: bool = Field(True, description="build the HTTP API")
    authorization: Literal["iam", "jwt"] = "iam"
    jwt_issuer: str = Field("", description="required with authorization 'jwt'")
    jwt_audience: tuple[str, ...] = ()
    throttle_rate_per_s: float = Field(100.0, gt=0, le=1_000_000)
    throttle_burst: int = Field(200, ge=1, le=1_000_000)
    access_log_retention_days: int | None = Field(None, description="None: functions.log_retention_days")

    @model_validator(mode="after")
    def _consistent(self) -> GatewayConfig:
        if self.authorization == "jwt" and not (self.jwt_issuer.startswith("https://") and self.jwt_audience):
            raise ValueError("gateway: authorization 'jwt' needs an https:// jwt_issuer and a jwt_audience")
        if self.authorization == "iam" and (self.jwt_issuer or self.jwt_audience):
            raise ValueError("gateway: jwt_issuer / jwt_audience are only used with authorization 'jwt'")
        if (
            self.access_log_retention_days is not None
            and self.access_log_retention_days not in LOG_RETENTION_DAYS
        ):
            raise ValueError(f"gateway.access_log_retention_days must be one of {LOG_RETENTION_DAYS}")
        return self


class EnvironmentConfig(Frozen):
    name: str
    retain_data: bool = False
    termination_protection: bool = False
    network: NetworkConfig = NetworkConfig()
    redis: RedisConfig = RedisConfig()
    functions: LambdaConfig = LambdaConfig()
    queues: QueueConfig = QueueConfig()
    ingest: IngestConfig = IngestConfig()
    pipeline: PipelineConfig = PipelineConfig()
    alarms: AlarmConfig = AlarmConfig()
    storage: StorageConfig = StorageConfig()
    relay: RelayConfig = RelayConfig()
    jobs: JobsConfig = JobsConfig()
    gateway: GatewayConfig = GatewayConfig()
    relay_api_key_parameter: str = Field(
        "", description="SSM SecureString name; default /sluice/<env>/relay/api-key"
    )

    @property
    def prefix(self) -> str:
        return f"sluice-{self.name}"

    @property
    def api_key_parameter(self) -> str:
        return self.relay_api_key_parameter or f"/sluice/{self.name}/relay/api-key"

    @property
    def dedup_horizon_s(self) -> int:
        """How long an envelope id must stay recognisable: the source queue's retention, the
        DLQ's (a redrive must still be recognised) and the ingest re-send horizon."""
        return self.queues.retention_s + self.queues.dlq_retention_s + self.ingest.resend_horizon_s

    @model_validator(mode="after")
    def _consistent(self) -> EnvironmentConfig:
        if not _NAME.match(self.name):
            raise ValueError(f"environment name {self.name!r} must match {_NAME.pattern}")
        if self.ingest.resend_horizon_s >= self.queues.retention_s + self.queues.dlq_retention_s:
            raise ValueError("ingest.resend_horizon_s must be shorter than queue + DLQ retention")
        if self.ingest.loader_timeout_s * 6 > SQS_MAX_VISIBILITY_S:
            raise ValueError("ingest.loader_timeout_s is too long")
        if not math.isfinite(self.ingest.settle_s):
            raise ValueError("ingest.settle_s must be finite")
        if self.jobs.enabled and not self.gateway.enabled:
            raise ValueError("jobs.enabled needs gateway.enabled: the jobs routes live on the HTTP API")
        if self.gateway.enabled and self.gateway.authorization == "jwt" and not self.jobs.enabled:
            # The JWT authorizer is created by the first route that uses it: a jobs route.
            raise ValueError("gateway: authorization 'jwt' needs jobs.enabled (the jobs routes bind it)")
        for function in self.functions.reserved_concurrency:
            if function not in FUNCTION_NAMES:
                raise ValueError(f"functions.reserved_concurrency names unknown function {function!r}")
        return self


FUNCTION_NAMES = ("loader", "checker", "archiver", "router", "fifo-router", "relay", "drain", "jobs")


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _format_errors(env: str, error: ValidationError) -> str:
    lines = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"]) or "(environment)"
        lines.append(f"  {where}: {problem['msg']}")
    return f"invalid sluice config for environment {env!r}:\n" + "\n".join(lines)


def load_environment(
    context: Mapping[str, Any],
    env: str,
    *,
    local: bool = False,
    overrides: Mapping[str, Any] | None = None,
) -> EnvironmentConfig:
    """Build the frozen config of `env` from the `sluice` context block (see module docs);
    `overrides` (the CLI's `-c overrides='{...}'`) are merged last, into every environment."""
    environments = context.get("environments")
    if not isinstance(environments, Mapping) or not environments:
        raise ConfigError("cdk.json context 'sluice.environments' is missing or empty")
    if env not in environments:
        known = ", ".join(sorted(environments))
        raise ConfigError(f"unknown environment {env!r}; cdk.json defines: {known}")
    raw = _deep_merge({"name": env}, environments[env] or {})
    if local:
        raw = _deep_merge(raw, context.get("local") or {})
    raw = _deep_merge(raw, overrides or {})
    try:
        return EnvironmentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(env, exc)) from None


def parse_overrides(value: object) -> dict[str, Any]:
    """`-c overrides='{"relay": {"enabled": true}}'`: a JSON object of settings (or nothing)."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"context 'overrides' is not JSON: {exc}") from None
    if not isinstance(value, Mapping):
        raise ConfigError("context 'overrides' must be a JSON object of settings, e.g. '{\"relay\": {...}}'")
    return dict(value)


def environment_names(context: Mapping[str, Any]) -> list[str]:
    environments = context.get("environments") or {}
    return list(environments)
