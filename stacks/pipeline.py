"""pipeline: the SQS state-machine routers on the standard state queue and on the FIFO queue
(docs/pipeline.md#the-protocol-standard-queues), their grants and alarms."""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from runtime.metric_names import PLAN_MISMATCH, REDIS_UNAVAILABLE
from stacks.alarms import FIVE_MINUTES, dlq_depth_alarm, sluice_metric, threshold_alarm
from stacks.config import EnvironmentConfig
from stacks.functions import FunctionFactory, FunctionSpec
from stacks.nag import Ack, acknowledge, resource_finding
from stacks.shared import SharedResources

# What runtime/pipeline/ledger.py calls on the ledger table, and nothing more.
LEDGER_ACTIONS = ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem")

SQS_CONSUMER_ACKS = (
    Ack(
        "Serverless-LambdaDLQ",
        "invoked only by its SQS event source mapping, never asynchronously: failed messages go "
        "to the source queue's own dead-letter queue through its redrive policy",
    ),
    Ack(
        "Serverless-LambdaAsyncFailureDestination",
        "invoked only by its SQS event source mapping, never asynchronously; the source queue's "
        "redrive policy is the failure destination",
    ),
    Ack(
        "Serverless-LambdaEventSourceMappingDestination",
        "SQS event source mappings take no on-failure destination (streams and Kafka only); the "
        "source queue's redrive policy sends crash-looping messages to its DLQ",
    ),
)


@dataclass(frozen=True)
class RouterWiring:
    name: str
    handler: str
    queue: sqs.IQueue
    dlq: sqs.IQueue
    event_source: sources.SqsEventSource


class PipelineConstruct(Construct):
    """router (standard state queue) and fifo-router (FIFO queue), each with its ESM."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        shared: SharedResources,
        factory: FunctionFactory,
    ) -> None:
        super().__init__(scope, construct_id)
        pipeline = config.pipeline
        window = pipeline.batching_window_s
        wirings = (
            RouterWiring(
                name="router",
                handler="runtime.handlers.router.handler",
                queue=shared.state_queue,
                dlq=shared.state_dlq,
                event_source=sources.SqsEventSource(
                    shared.state_queue,
                    batch_size=pipeline.batch_size,
                    max_batching_window=cdk.Duration.seconds(window) if window else None,
                    max_concurrency=pipeline.max_concurrency,
                    report_batch_item_failures=True,
                ),
            ),
            # FIFO: at most 10 per batch and no batching window (Lambda's rules for FIFO sources).
            RouterWiring(
                name="fifo-router",
                handler="runtime.handlers.fifo_router.handler",
                queue=shared.fifo_queue,
                dlq=shared.fifo_dlq,
                event_source=sources.SqsEventSource(
                    shared.fifo_queue,
                    batch_size=pipeline.fifo_batch_size,
                    max_concurrency=pipeline.max_concurrency,
                    report_batch_item_failures=True,
                ),
            ),
        )
        self.functions: dict[str, lambda_.Function] = {}
        self.dlq_alarms: dict[str, cloudwatch.Alarm] = {}
        for wiring in wirings:
            self.functions[wiring.name] = self._router(config, shared, factory, wiring)
        self.plan_mismatch_alarm = threshold_alarm(
            self,
            "PlanMismatch",
            sluice_metric(PLAN_MISMATCH, period=FIVE_MINUTES),
            threshold=1,
            description="pipeline: a router run lost the create-only race to a different recorded plan "
            "(its side effects or outputs differ); the recorded plan was followed and the delivery "
            "dead-lettered with reason plan_mismatch and both hashes",
        )
        self.redis_unavailable_alarm = threshold_alarm(
            self,
            "RedisUnavailable",
            sluice_metric(REDIS_UNAVAILABLE, period=FIVE_MINUTES),
            threshold=config.alarms.redis_unavailable_invocations,
            description="pipeline: routers found Redis unreachable and ran on the ledger alone (slower, "
            "still exactly once): check the ElastiCache cluster and the network path to it",
        )

    @staticmethod
    def _jobs_section(config: EnvironmentConfig, wiring: RouterWiring) -> tuple[str, ...]:
        """The standard queue's router completes the jobs POST /jobs enqueues on it: it reads
        the jobs settings the jobs function waits with."""
        return ("jobs",) if config.jobs.enabled and wiring.name == "router" else ()

    def _router(
        self,
        config: EnvironmentConfig,
        shared: SharedResources,
        factory: FunctionFactory,
        wiring: RouterWiring,
    ) -> lambda_.Function:
        function = factory.create(
            self,
            FunctionSpec(
                name=wiring.name,
                handler=wiring.handler,
                timeout_s=config.pipeline.timeout_s,
                description=f"sluice pipeline {wiring.name}: routes envelopes from its queue",
                sections=frozenset({"pipeline", *self._jobs_section(config, wiring)}),
            ),
        )
        # Consume (receive, delete, change visibility) comes with the event source; the router
        # also sends next states to its own queue and poison to its DLQ.
        function.add_event_source(wiring.event_source)
        wiring.queue.grant_send_messages(function)
        wiring.dlq.grant_send_messages(function)
        # Plans: a consistent read, a create-only put, the conditional "complete" update.
        shared.ledger_table.grant(function, *LEDGER_ACTIONS)
        # Exactly the sink's two calls: create-only PutObject (If-None-Match) and GetObject.
        results_objects = factory.results_bucket.arn_for_objects("*")
        function.add_to_role_policy(
            iam.PolicyStatement(actions=["s3:PutObject", "s3:GetObject"], resources=[results_objects])
        )
        shared.redis_auth_secret.grant_read(function)
        acknowledge(
            function,
            *SQS_CONSUMER_ACKS,
            Ack(
                "AwsSolutions-IAM5",
                "one S3 object per incoming envelope, keyed by its id: the sink writes and reads any "
                "object of the results bucket, and nothing else in S3",
                (resource_finding(function, results_objects),),
            ),
        )
        construct_id = function.node.id
        self.dlq_alarms[wiring.name] = dlq_depth_alarm(
            self,
            f"{construct_id}DeadLetters",
            wiring.dlq,
            threshold=config.alarms.dlq_depth,
            what=wiring.name,
        )
        return function
