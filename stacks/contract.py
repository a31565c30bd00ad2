"""The environment contract, built in one place: the settings every function validates at run
time, from an environment's config and where its resources are, and the environment variables
that carry them (`function_environment`, the only builder of a function's `SLUICE_*` variables).

Every declared tunable (`runtime.declarations.settings`) is copied across by name; what is
computed here is only what the stacks derive or create. The stacks pass deploy-time values
(queue URLs, table and bucket names as CDK tokens) and the local runtime passes the resources it
created on the moto server — through the same functions, so the cloud and the laptop cannot
drift apart. Nothing here imports CDK or boto3.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from runtime.declarations.names import (  # noqa: F401 - the source table's keys, for the local runtime
    JOBS_RESULTS_PREFIX,
    SOURCE_PARTITION_KEY,
    SOURCE_SORT_KEY,
)
from runtime.declarations.settings import (
    FunctionSettings,
    IngestSettings,
    IngestTunables,
    JobsSettings,
    JobsTunables,
    PipelineSettings,
    PipelineTunables,
    QueueSettings,
    QueueTunables,
    RedisSettings,
    RelaySettings,
    RelayTunables,
    tunables,
)
from stacks.config import EnvironmentConfig


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
        **tunables(config.queues, QueueTunables),
        state_url=resources.state_url,
        state_dlq_url=resources.state_dlq_url,
        fifo_url=resources.fifo_url,
        fifo_dlq_url=resources.fifo_dlq_url,
    )


def ingest_settings(config: EnvironmentConfig, resources: Resources) -> IngestSettings:
    ingest = config.ingest
    return IngestSettings(
        **tunables(ingest, IngestTunables),
        root=resources.ingest_root,
        lease_s=ingest.lease_s,
        max_file_bytes=ingest.file_limit_bytes,
        # docs/ingest.md#8-archive: a committed batch is archived once no loader that could still hold it
        # is alive — past its lease plus one more loader run.
        archive_after_s=ingest.lease_s + ingest.loader_timeout_s,
    )


def pipeline_settings(config: EnvironmentConfig, resources: Resources) -> PipelineSettings:
    return PipelineSettings(
        **tunables(config.pipeline, PipelineTunables),
        ledger_table=resources.ledger_table,
        results_bucket=resources.results_bucket,
        lease_s=config.pipeline.lease_s,
        dedup_horizon_s=config.dedup_horizon_s,
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
    declared = tunables(config.relay, RelayTunables)
    if api_url is not None:
        declared["api_url"] = api_url
    return RelaySettings(
        **declared,
        fifo_url=resources.queue_url,
        dlq_url=resources.dlq_url,
        ledger_table=resources.ledger_table,
        ledger_partition_key=resources.ledger_partition_key,
        ledger_sort_key=resources.ledger_sort_key,
        ledger_ttl_attribute=resources.ledger_ttl_attribute,
        # A delivery must stay recognisable while its message can still come back, through the
        # queue, its DLQ and a redrive: the environment's dedup horizon covers all three.
        ledger_ttl_s=config.dedup_horizon_s,
        api_key_parameter=config.api_key_parameter,
    )


def jobs_settings(config: EnvironmentConfig, results_bucket: str) -> JobsSettings:
    return JobsSettings(
        **tunables(config.jobs, JobsTunables),
        results_bucket=results_bucket,
        results_prefix=JOBS_RESULTS_PREFIX,
    )


SECTIONS = frozenset({"ingest", "pipeline", "relay", "jobs"})


def function_settings(
    config: EnvironmentConfig,
    resources: Resources,
    redis: RedisSettings,
    sections: Collection[str],
    relay: RelayResources | None = None,
) -> FunctionSettings:
    """What a function with these `sections` (of `SECTIONS`) validates at run time; every
    function gets the queues and Redis."""
    unknown = set(sections) - SECTIONS
    if unknown:
        raise ValueError(f"unknown settings sections {sorted(unknown)}; known: {sorted(SECTIONS)}")
    if "relay" in sections and relay is None:
        raise ValueError("a function with the relay section needs the relay's resources")
    return FunctionSettings(
        env=config.name,
        redis=redis,
        queues=queue_settings(config, resources),
        ingest=ingest_settings(config, resources) if "ingest" in sections else None,
        pipeline=pipeline_settings(config, resources) if "pipeline" in sections else None,
        relay=relay_settings(config, relay) if relay is not None and "relay" in sections else None,
        jobs=jobs_settings(config, resources.results_bucket) if "jobs" in sections else None,
    )
