"""The stateful stack's resources the systems share, as one frozen, typed value.

The stateless stack's constructs (functions, ingest, pipeline, relay, gateway) receive this,
never the stateful stack itself: what they may use of it is exactly what is listed here."""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_efs as efs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs


@dataclass(frozen=True)
class RelayStorage:
    """What the relay needs from the stateful stack (built only when relay.enabled). Its failure
    bucket is read through the stack's outputs (stacks/references.py), not from here."""

    queue: sqs.IQueue
    dead_letter_queue: sqs.IQueue
    source_table: dynamodb.ITable


@dataclass(frozen=True)
class SharedResources:
    """Network, Redis, the EFS inbox, the queues and the tables of one environment."""

    # The stack that publishes the outputs other stacks read by name (the buckets' names and
    # ARNs: stacks/references.py).
    outputs: cdk.Stack
    vpc: ec2.IVpc
    functions_security_group: ec2.ISecurityGroup
    redis_host: str
    redis_port: int
    redis_replication_group_id: str
    redis_auth_secret: secretsmanager.ISecret
    file_system: efs.IFileSystem
    access_point: efs.IAccessPoint
    state_queue: sqs.IQueue
    state_dlq: sqs.IQueue
    fifo_queue: sqs.IQueue
    fifo_dlq: sqs.IQueue
    ledger_table: dynamodb.Table  # a Table: the relay reads its key schema
    relay: RelayStorage | None
