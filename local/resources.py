"""The AWS resources of one local environment, created on the moto server from the same
`EnvironmentConfig` the stacks synthesize from, and the `Settings` the stacks would hand the
functions.

Names follow the config's prefix (`sluice-<env>`); every duration, batch size, retention and
redrive limit comes from the config object, never from a constant here, so a local run exercises
the values a deploy would use (with the `local` block's short durations overlaid).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.config import (
    IngestSettings,
    JobsSettings,
    PipelineSettings,
    ProjectionRule,
    QueueSettings,
    RedisSettings,
    RelaySettings,
    Settings,
)
from runtime.pipeline.ledger import PARTITION_KEY as LEDGER_PARTITION_KEY
from runtime.pipeline.ledger import TTL_ATTRIBUTE as LEDGER_TTL_ATTRIBUTE
from runtime.pipeline.ledger import create_ledger_table
from stacks.config import SQS_MAX_RECEIVE_COUNT, EnvironmentConfig

# The relay source table's key layout, as `stacks/stateful.py` declares it (SOURCE_*; importing
# that module loads aws_cdk and starts jsii's node process: too heavy for the local runtime; a
# test checks the two stay equal). The ledger is created by the router's own
# `create_ledger_table`, so the local table always has the layout the code that writes it expects.
JOBS_RESULTS_PREFIX = "jobs/"  # stacks/gateway.py's JOBS_PREFIX (a test keeps them equal)
TABLE_PARTITION_KEY = "pk"
TABLE_SORT_KEY = "sk"
# Never a real key: the relay's drain reads it through Parameter Store like it would on AWS.
LOCAL_API_KEY = "local-api-key-not-a-secret"
LOCAL_REDIS_AUTH_TOKEN = "local-redis-token"  # noqa: S105 - a fixed value for a loopback server


@dataclass(frozen=True)
class ResourceNames:
    """What the stateful stack would create for `config`, by name."""

    state_queue: str
    state_dlq: str
    fifo_queue: str
    fifo_dlq: str
    relay_queue: str
    relay_dlq: str
    results_bucket: str
    ledger_table: str
    relay_source_table: str
    api_key_parameter: str
    redis_auth_secret: str

    @classmethod
    def for_config(cls, config: EnvironmentConfig, instance: str = "") -> ResourceNames:
        """`instance` (lowercase letters and digits) keeps runs that share one moto server apart."""
        prefix = f"{config.prefix}-{instance}" if instance else config.prefix
        return cls(
            state_queue=f"{prefix}-state",
            state_dlq=f"{prefix}-state-dlq",
            fifo_queue=f"{prefix}-state.fifo",
            fifo_dlq=f"{prefix}-state-dlq.fifo",
            relay_queue=f"{prefix}-relay.fifo",
            relay_dlq=f"{prefix}-relay-dlq.fifo",
            results_bucket=f"{prefix}-results",
            ledger_table=f"{prefix}-ledger",
            relay_source_table=f"{prefix}-relay-source",
            api_key_parameter=config.api_key_parameter,
            redis_auth_secret=f"{prefix}/redis-auth",
        )


@dataclass(frozen=True)
class Provisioned:
    """The created resources' addresses (queue URLs and ARNs)."""

    names: ResourceNames
    queue_urls: dict[str, str]
    queue_arns: dict[str, str]

    def url(self, queue_name: str) -> str:
        return self.queue_urls[queue_name]

    def arn(self, queue_name: str) -> str:
        return self.queue_arns[queue_name]


def _create_queue(sqs: Any, name: str, attributes: dict[str, str]) -> tuple[str, str]:
    if name.endswith(".fifo"):
        attributes = {**attributes, "FifoQueue": "true"}
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def _create_queues(sqs: Any, config: EnvironmentConfig, names: ResourceNames) -> Provisioned:
    queues, pipeline = config.queues, config.pipeline
    common = {
        "MaximumMessageSize": str(queues.max_message_bytes),
        "VisibilityTimeout": str(pipeline.visibility_timeout_s),
    }
    urls: dict[str, str] = {}
    arns: dict[str, str] = {}
    # The relay's drain receives on a schedule and sets visibility itself; its redrive is only
    # a backstop (the stateful stack's choice: SQS's maximum receive count).
    relay_visibility = {"VisibilityTimeout": str(6 * config.relay.drain_timeout_s)}
    pairs: tuple[tuple[str, str, int, dict[str, str]], ...] = (
        (names.state_queue, names.state_dlq, pipeline.standard_max_receive_count, {}),
        (names.fifo_queue, names.fifo_dlq, pipeline.fifo_max_receive_count, {}),
        (names.relay_queue, names.relay_dlq, SQS_MAX_RECEIVE_COUNT, relay_visibility),
    )
    for source, dlq, max_receive_count, extra in pairs:
        urls[dlq], arns[dlq] = _create_queue(
            sqs, dlq, {**common, "MessageRetentionPeriod": str(queues.dlq_retention_s)}
        )
        redrive = json.dumps({"deadLetterTargetArn": arns[dlq], "maxReceiveCount": max_receive_count})
        urls[source], arns[source] = _create_queue(
            sqs,
            source,
            {**common, **extra, "MessageRetentionPeriod": str(queues.retention_s), "RedrivePolicy": redrive},
        )
    return Provisioned(names=names, queue_urls=urls, queue_arns=arns)


def _create_tables(dynamodb: Any, names: ResourceNames) -> None:
    create_ledger_table(dynamodb, names.ledger_table)
    dynamodb.create_table(
        TableName=names.relay_source_table,
        KeySchema=[
            {"AttributeName": TABLE_PARTITION_KEY, "KeyType": "HASH"},
            {"AttributeName": TABLE_SORT_KEY, "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": TABLE_PARTITION_KEY, "AttributeType": "S"},
            {"AttributeName": TABLE_SORT_KEY, "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    )


def provision(clients: Any, config: EnvironmentConfig, instance: str = "") -> Provisioned:
    """Create every queue (with its DLQ and redrive), the bucket, the ledger and relay-source
    tables, the relay's API-key parameter and the Redis AUTH secret. `clients(service)` returns
    a boto3 client."""
    names = ResourceNames.for_config(config, instance)
    provisioned = _create_queues(clients("sqs"), config, names)
    clients("s3").create_bucket(Bucket=names.results_bucket)
    _create_tables(clients("dynamodb"), names)
    clients("ssm").put_parameter(
        Name=names.api_key_parameter, Value=LOCAL_API_KEY, Type="SecureString", Overwrite=True
    )
    clients("secretsmanager").create_secret(Name=names.redis_auth_secret, SecretString=LOCAL_REDIS_AUTH_TOKEN)
    return provisioned


def _relay_settings(config: EnvironmentConfig, provisioned: Provisioned, api_url: str) -> RelaySettings:
    names, relay = provisioned.names, config.relay
    return RelaySettings(
        fifo_url=provisioned.url(names.relay_queue),
        dlq_url=provisioned.url(names.relay_dlq),
        ledger_table=names.ledger_table,
        ledger_partition_key=LEDGER_PARTITION_KEY,
        ledger_sort_key="",
        ledger_ttl_attribute=LEDGER_TTL_ATTRIBUTE,
        ledger_ttl_s=config.dedup_horizon_s,
        group_key_field=relay.partition_key_field,
        api_url=api_url,
        api_key_parameter=config.api_key_parameter,
        api_key_header=relay.api_key_header,
        idempotency_header=relay.idempotency_header,
        api_key_cache_s=relay.api_key_cache_s,
        calls_per_minute=relay.calls_per_minute,
        connect_timeout_s=relay.connect_timeout_s,
        read_timeout_s=relay.read_timeout_s,
        deadline_margin_s=relay.deadline_margin_s,
        retry_backoff_base_s=relay.retry_backoff_base_s,
        retry_backoff_cap_s=relay.retry_backoff_cap_s,
        breaker_failure_threshold=relay.breaker_failure_threshold,
        breaker_backoff_base_s=relay.breaker_backoff_base_s,
        breaker_backoff_cap_s=relay.breaker_backoff_cap_s,
    )


def function_settings(
    config: EnvironmentConfig,
    provisioned: Provisioned,
    *,
    redis_url: str,
    share: Path,
    relay_api_url: str = "",
) -> Settings:
    """The settings the stacks give every function, pointed at the local servers and share
    (and, for the relay's drain, at the external-API stub)."""
    names = provisioned.names
    ingest, pipeline = config.ingest, config.pipeline
    return Settings(
        env=config.name,
        redis=RedisSettings(url=redis_url, tls=False),
        queues=QueueSettings(
            state_url=provisioned.url(names.state_queue),
            state_dlq_url=provisioned.url(names.state_dlq),
            fifo_url=provisioned.url(names.fifo_queue),
            fifo_dlq_url=provisioned.url(names.fifo_dlq),
            max_message_bytes=config.queues.max_message_bytes,
            fifo_message_group_id=config.queues.fifo_message_group_id,
        ),
        ingest=IngestSettings(
            root=str(share),
            settle_s=ingest.settle_s,
            lease_s=ingest.lease_s,
            deadline_margin_s=ingest.deadline_margin_s,
            batch_max_files=ingest.batch_max_files,
            read_threads=ingest.read_threads,
            resend_horizon_s=ingest.resend_horizon_s,
            max_crash_runs=ingest.max_crash_runs,
            # DESIGN step 8: committed batches are archived after the lease plus the timeout.
            archive_after_s=ingest.lease_s + ingest.loader_timeout_s,
            archive_retention_days=ingest.archive_retention_days,
            projection={
                field: ProjectionRule(path=rule.path, missing=rule.missing)
                for field, rule in ingest.projection.items()
            },
            target=ingest.target,
        ),
        pipeline=PipelineSettings(
            ledger_table=names.ledger_table,
            results_bucket=names.results_bucket,
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
        ),
        relay=_relay_settings(config, provisioned, relay_api_url),
        jobs=JobsSettings(
            wait_s=config.jobs.wait_s,
            results_bucket=names.results_bucket,
            results_prefix=JOBS_RESULTS_PREFIX,
            inline_max_bytes=config.jobs.inline_max_bytes,
            presign_ttl_s=config.jobs.presign_ttl_s,
            status_ttl_s=config.jobs.status_ttl_s,
            max_body_bytes=config.jobs.max_body_bytes,
        ),
    )
