"""The stateful stack: everything that holds data or addresses others depend on.

Each part is built by its own module, in the stack's own scope (so every logical id is what it
was when this was one class): the network (`network`), Redis (`cache`), the EFS inbox
(`file_system`), the queues (`queues`), the buckets (`storage`) and the tables (`tables`). The
stack hands the stateless stack one frozen `SharedResources` (stacks/shared.py), never itself.
Removal policies follow `config.retain_data`; termination protection follows
`config.termination_protection`.
"""

from __future__ import annotations

import aws_cdk as cdk
from constructs import Construct

from stacks.config import EnvironmentConfig
from stacks.notifications import AlarmNotifications
from stacks.shared import RelayStorage, SharedResources
from stacks.stateful.cache import REDIS_PORT, build_cache
from stacks.stateful.file_system import NFS_PORT, build_file_system
from stacks.stateful.network import build_network, restrict_function_egress
from stacks.stateful.queues import QueueFactory
from stacks.stateful.storage import BucketFactory
from stacks.stateful.tables import TableFactory


class StatefulStack(cdk.Stack):
    """Data and network of one environment; `shared` is what the stateless stack receives."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: EnvironmentConfig, **kwargs: object
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            termination_protection=config.termination_protection,
            description=f"sluice {config.name}: network, Redis, EFS inbox, queues, bucket, tables",
            **kwargs,  # type: ignore[arg-type]
        )
        self.config = config
        removal_policy = cdk.RemovalPolicy.RETAIN if config.retain_data else cdk.RemovalPolicy.DESTROY
        network = build_network(self, config, removal_policy)
        cache = build_cache(self, config, network, removal_policy)
        inbox = build_file_system(self, config, network, removal_policy)
        restrict_function_egress(
            network,
            (cache.security_group, REDIS_PORT, "Redis (TLS + AUTH)"),
            (inbox.security_group, NFS_PORT, "NFS to the EFS inbox"),
        )
        queue_factory = QueueFactory(self, config, removal_policy)
        queues = queue_factory.pipeline_queues()
        bucket_factory = BucketFactory(self, config, removal_policy)
        buckets = bucket_factory.buckets()
        table_factory = TableFactory(self, config, removal_policy)
        ledger = table_factory.ledger()
        relay = None
        if config.relay.enabled:
            relay_queue, relay_dlq = queue_factory.relay_queues()
            source_table = table_factory.relay_source()
            bucket_factory.relay_failures(buckets.access_logs)  # read through its outputs
            relay = RelayStorage(queue=relay_queue, dead_letter_queue=relay_dlq, source_table=source_table)
        self.notifications = AlarmNotifications(
            self, "AlarmNotifications", config=config, removal_policy=removal_policy
        )
        self.shared = SharedResources(
            outputs=self,
            vpc=network.vpc,
            functions_security_group=network.functions_security_group,
            redis_host=cache.host,
            redis_port=REDIS_PORT,
            redis_replication_group_id=cache.group.ref,
            redis_auth_secret=cache.auth_secret,
            file_system=inbox.file_system,
            access_point=inbox.access_point,
            state_queue=queues.state_queue,
            state_dlq=queues.state_dlq,
            fifo_queue=queues.fifo_queue,
            fifo_dlq=queues.fifo_dlq,
            ledger_table=ledger,
            relay=relay,
        )

    @property
    def availability_zones(self) -> list[str]:
        # An environment-agnostic stack (synth without credentials) would otherwise get two AZs
        # whatever max_azs says; Fn::GetAZs picks the real ones at deploy time.
        return [cdk.Fn.select(index, cdk.Fn.get_azs()) for index in range(self.config.network.max_azs)]
