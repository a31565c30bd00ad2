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

from runtime.config import RedisSettings, Settings
from runtime.pipeline.ledger import PARTITION_KEY as LEDGER_PARTITION_KEY
from runtime.pipeline.ledger import TTL_ATTRIBUTE as LEDGER_TTL_ATTRIBUTE
from runtime.pipeline.ledger import create_ledger_table
from stacks.config import SQS_MAX_RECEIVE_COUNT, EnvironmentConfig
from stacks.contract import (
    SOURCE_PARTITION_KEY,
    SOURCE_SORT_KEY,
    RelayResources,
    Resources,
    ingest_settings,
    jobs_settings,
    pipeline_settings,
    queue_settings,
    relay_settings,
)

# The relay source table's key layout is the stacks' (stacks/contract.py, shared without CDK).
# The ledger is created by the router's own `create_ledger_table`, so the local table always has
# the layout the code that writes it expects.
TABLE_PARTITION_KEY = SOURCE_PARTITION_KEY
TABLE_SORT_KEY = SOURCE_SORT_KEY
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
    resources = Resources(
        state_url=provisioned.url(names.state_queue),
        state_dlq_url=provisioned.url(names.state_dlq),
        fifo_url=provisioned.url(names.fifo_queue),
        fifo_dlq_url=provisioned.url(names.fifo_dlq),
        ledger_table=names.ledger_table,
        results_bucket=names.results_bucket,
        ingest_root=str(share),
    )
    relay = RelayResources(
        queue_url=provisioned.url(names.relay_queue),
        dlq_url=provisioned.url(names.relay_dlq),
        ledger_table=names.ledger_table,
        ledger_partition_key=LEDGER_PARTITION_KEY,
        ledger_sort_key="",
        ledger_ttl_attribute=LEDGER_TTL_ATTRIBUTE,
    )
    return Settings(
        env=config.name,
        redis=RedisSettings(url=redis_url, tls=False),
        queues=queue_settings(config, resources),
        ingest=ingest_settings(config, resources),
        pipeline=pipeline_settings(config, resources),
        relay=relay_settings(config, relay, api_url=relay_api_url),
        jobs=jobs_settings(config, names.results_bucket),
    )
