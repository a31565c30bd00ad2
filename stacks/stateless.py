"""The stateless stack: functions (through one factory), schedules, event source mappings,
alarms and dashboards. Each system is one Construct; the stack wires them to the stateful
stack's resources."""

from __future__ import annotations

import aws_cdk as cdk
from constructs import Construct

from stacks.config import EnvironmentConfig
from stacks.functions import FunctionFactory
from stacks.gateway import GatewayConstruct
from stacks.ingest import IngestConstruct
from stacks.operations import OperationsConstruct
from stacks.pipeline import PipelineConstruct
from stacks.references import read_bucket
from stacks.relay import RelayConstruct
from stacks.shared import SharedResources


class StatelessStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        shared: SharedResources,
        **kwargs: object,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            description=f"sluice {config.name}: functions, schedules, event source mappings, alarms",
            **kwargs,  # type: ignore[arg-type]
        )
        self.factory = FunctionFactory(self, "Functions", config=config, shared=shared)
        self.pipeline = PipelineConstruct(
            self, "Pipeline", config=config, shared=shared, factory=self.factory
        )
        target = "router" if config.ingest.target == "standard" else "fifo-router"
        self.ingest = IngestConstruct(
            self,
            "Ingest",
            config=config,
            shared=shared,
            factory=self.factory,
            target_dlq_alarm=self.pipeline.dlq_alarms[target],
        )
        self.operations = OperationsConstruct(
            self,
            "Operations",
            config=config,
            create_function=self.factory.create,
            target_queue=self.ingest.target_queue,
        )
        # Optional systems: a disabled one creates nothing (config: relay/gateway/jobs.enabled).
        self.relay = (
            RelayConstruct(
                self,
                "Relay",
                config=config,
                source_table=shared.relay.source_table,
                queue=shared.relay.queue,
                dead_letter_queue=shared.relay.dead_letter_queue,
                ledger_table=shared.ledger_table,
                failure_bucket=read_bucket(self, "RelayFailuresBucket", shared.outputs, "RelayFailures"),
                create_function=self.factory.create,
                redis_auth_secret=shared.redis_auth_secret,
            )
            if shared.relay is not None
            else None
        )
        # The HTTP API feeds the standard state queue, whose router also completes jobs
        # (PipelineConstruct gives it the jobs settings).
        self.gateway = (
            GatewayConstruct(
                self,
                "Gateway",
                config=config,
                shared=shared,
                factory=self.factory,
            )
            if config.gateway.enabled
            else None
        )
