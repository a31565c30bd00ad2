"""The environment contract, built in one place: the `runtime.config` sections every function
validates at run time, from an environment's config and where its resources are.

The stacks pass deploy-time values (queue URLs, table and bucket names as CDK tokens) and the
local runtime passes the resources it created on the moto server — through the same functions,
so the cloud and the laptop cannot drift apart. Nothing here imports CDK or boto3.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.config import (
    IngestSettings,
    JobsSettings,
    PipelineSettings,
    ProjectionRule,
    QueueSettings,
    RelaySettings,
)
from stacks.config import EnvironmentConfig

JOBS_RESULTS_PREFIX = "jobs/"
# The relay source table is the user's; its stream's keys group the relay's messages.
SOURCE_PARTITION_KEY = "pk"
SOURCE_SORT_KEY = "sk"


@dataclass(frozen=True)
class Resources:
    """Where an environment's resources are (tokens at synth, real names locally)."""

    state_url: str
    state_dlq_url: str
    fifo_url: str
    fifo_dlq_url: str
    ledger_table: str
    results_bucket: str
    ingest_root: str


def queue_settings(config: EnvironmentConfig, resources: Resources) -> QueueSettings:
    return QueueSettings(
        state_url=resources.state_url,
        state_dlq_url=resources.state_dlq_url,
        fifo_url=resources.fifo_url,
        fifo_dlq_url=resources.fifo_dlq_url,
        max_message_bytes=config.queues.max_message_bytes,
        fifo_message_group_id=config.queues.fifo_message_group_id,
    )


def ingest_settings(config: EnvironmentConfig, resources: Resources) -> IngestSettings:
    ingest = config.ingest
    return IngestSettings(
        root=resources.ingest_root,
        settle_s=ingest.settle_s,
        lease_s=ingest.lease_s,
        deadline_margin_s=ingest.deadline_margin_s,
        batch_max_files=ingest.batch_max_files,
        read_threads=ingest.read_threads,
        processes=ingest.processes,
        resend_horizon_s=ingest.resend_horizon_s,
        max_crash_runs=ingest.max_crash_runs,
        failure_backoff_s=ingest.failure_backoff_s,
        max_file_bytes=ingest.file_limit_bytes,
        max_clock_skew_s=ingest.max_clock_skew_s,
        # DESIGN step 8: a committed batch is archived once no loader that could still hold it
        # is alive — past its lease plus one more loader run.
        archive_after_s=ingest.lease_s + ingest.loader_timeout_s,
        archive_retention_days=ingest.archive_retention_days,
        projection={
            field: ProjectionRule(path=rule.path, missing=rule.missing)
            for field, rule in ingest.projection.items()
        },
        target=ingest.target,
    )


def pipeline_settings(config: EnvironmentConfig, resources: Resources) -> PipelineSettings:
    pipeline = config.pipeline
    return PipelineSettings(
        ledger_table=resources.ledger_table,
        results_bucket=resources.results_bucket,
        max_attempts=pipeline.max_attempts,
        backoff_base_s=pipeline.backoff_base_s,
        backoff_cap_s=pipeline.backoff_cap_s,
        max_steps=pipeline.max_steps,
        time_budget_margin_s=pipeline.time_budget_margin_s,
        lease_s=pipeline.lease_s,
        done_marker_ttl_s=pipeline.done_marker_ttl_s,
        dedup_horizon_s=config.dedup_horizon_s,
        history_limit=pipeline.history_limit,
        fifo_items_per_envelope=pipeline.fifo_items_per_envelope,
        router=pipeline.router,
        io_threads=pipeline.io_threads,
        fifo_group_field=pipeline.fifo_group_field,
    )


@dataclass(frozen=True)
class RelayResources:
    """The relay's own queue pair and how its delivery records are keyed in the ledger."""

    queue_url: str
    dlq_url: str
    ledger_table: str
    ledger_partition_key: str
    ledger_sort_key: str
    ledger_ttl_attribute: str


def relay_settings(
    config: EnvironmentConfig, resources: RelayResources, *, api_url: str | None = None
) -> RelaySettings:
    """`api_url` None: the environment's configured API (the local runtime passes its stub)."""
    relay = config.relay
    return RelaySettings(
        fifo_url=resources.queue_url,
        dlq_url=resources.dlq_url,
        ledger_table=resources.ledger_table,
        ledger_partition_key=resources.ledger_partition_key,
        ledger_sort_key=resources.ledger_sort_key,
        ledger_ttl_attribute=resources.ledger_ttl_attribute,
        # A delivery must stay recognisable while its message can still come back, through the
        # queue, its DLQ and a redrive: the environment's dedup horizon covers all three.
        ledger_ttl_s=config.dedup_horizon_s,
        group_key_field=relay.partition_key_field,
        api_url=relay.api_url if api_url is None else api_url,
        api_key_parameter=config.api_key_parameter,
        api_key_header=relay.api_key_header,
        idempotency_header=relay.idempotency_header,
        api_key_cache_s=relay.api_key_cache_s,
        calls_per_minute=relay.calls_per_minute,
        burst_calls=relay.burst_calls,
        receive_wait_s=relay.receive_wait_s,
        max_attempts=relay.max_attempts,
        max_age_s=relay.max_age_s,
        sweep_interval_s=relay.sweep_interval_s,
        connect_timeout_s=relay.connect_timeout_s,
        read_timeout_s=relay.read_timeout_s,
        deadline_margin_s=relay.deadline_margin_s,
        retry_backoff_base_s=relay.retry_backoff_base_s,
        retry_backoff_cap_s=relay.retry_backoff_cap_s,
        breaker_failure_threshold=relay.breaker_failure_threshold,
        breaker_backoff_base_s=relay.breaker_backoff_base_s,
        breaker_backoff_cap_s=relay.breaker_backoff_cap_s,
    )


def jobs_settings(config: EnvironmentConfig, results_bucket: str) -> JobsSettings:
    jobs = config.jobs
    return JobsSettings(
        wait_s=jobs.wait_s,
        results_bucket=results_bucket,
        results_prefix=JOBS_RESULTS_PREFIX,
        inline_max_bytes=jobs.inline_max_bytes,
        presign_ttl_s=jobs.presign_ttl_s,
        status_ttl_s=jobs.status_ttl_s,
        max_body_bytes=jobs.max_body_bytes,
    )
