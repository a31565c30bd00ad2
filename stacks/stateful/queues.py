"""The queues: the standard state queue and the FIFO queue the routers consume, each with its
dead-letter queue, and the relay's own FIFO pair. SSE-SQS everywhere (an API Gateway service
integration can send without KMS grants), TLS only, sized to `queues.max_message_bytes`."""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_sqs as sqs

from runtime.declarations.aws_limits import SQS_MAX_RECEIVE_COUNT
from stacks.config import RELAY_QUEUE_RETENTION_S, EnvironmentConfig
from stacks.nag import Ack, acknowledge


@dataclass(frozen=True)
class Queues:
    state_queue: sqs.Queue
    state_dlq: sqs.Queue
    fifo_queue: sqs.Queue
    fifo_dlq: sqs.Queue


@dataclass(frozen=True)
class QueueFactory:
    """Creates queues in `stack`'s own scope, all alike but for what each call names."""

    stack: cdk.Stack
    config: EnvironmentConfig
    removal_policy: cdk.RemovalPolicy

    def queue(self, construct_id: str, *, fifo: bool, retention_s: int, **kwargs: object) -> sqs.Queue:
        return sqs.Queue(
            self.stack,
            construct_id,
            fifo=fifo or None,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=cdk.Duration.seconds(retention_s),
            # What the loader packs (and every producer sizes against): a queue left at a lower
            # limit would refuse those parts forever (the loader checks this once per run).
            max_message_size_bytes=self.config.queues.max_message_bytes,
            removal_policy=self.removal_policy,
            **kwargs,  # type: ignore[arg-type]
        )

    def dead_letter_queue(self, construct_id: str, *, fifo: bool) -> sqs.Queue:
        queue = self.queue(construct_id, fifo=fifo, retention_s=self.config.queues.dlq_retention_s)
        acknowledge(
            queue,
            Ack(
                "Serverless-SQSRedrivePolicy",
                "this is a dead-letter queue, the end of the line: poison lands here with its reason "
                "for an operator (alarmed on depth); a further DLQ would only hide it",
            ),
        )
        return queue

    def pipeline_queues(self) -> Queues:
        queues, pipeline = self.config.queues, self.config.pipeline
        visibility = cdk.Duration.seconds(pipeline.visibility_timeout_s)
        state_dlq = self.dead_letter_queue("StateDeadLetterQueue", fifo=False)
        state_queue = self.queue(
            "StateQueue",
            fifo=False,
            retention_s=queues.retention_s,
            visibility_timeout=visibility,
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=state_dlq, max_receive_count=pipeline.standard_max_receive_count
            ),
        )
        fifo_dlq = self.dead_letter_queue("FifoDeadLetterQueue", fifo=True)
        # Deduplication ids are the envelope ids (never content-based): a re-send of a recorded
        # part carries its original id.
        fifo_queue = self.queue(
            "FifoQueue",
            fifo=True,
            retention_s=queues.retention_s,
            visibility_timeout=visibility,
            content_based_deduplication=False,
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=fifo_dlq, max_receive_count=pipeline.fifo_max_receive_count
            ),
        )
        return Queues(state_queue=state_queue, state_dlq=state_dlq, fifo_queue=fifo_queue, fifo_dlq=fifo_dlq)

    def relay_queues(self) -> tuple[sqs.Queue, sqs.Queue]:
        """The relay's own FIFO queue and its DLQ: its drain receives on a schedule and sets
        visibility itself, so it cannot share the router's FIFO queue (an event source mapping
        consumes that one)."""
        relay_dlq = self.dead_letter_queue("RelayDeadLetterQueue", fifo=True)
        relay_queue = self.queue(
            "RelayQueue",
            fifo=True,
            retention_s=RELAY_QUEUE_RETENTION_S,
            visibility_timeout=cdk.Duration.seconds(self.config.relay.drain_timeout_s * 6),
            content_based_deduplication=False,
            dead_letter_queue=sqs.DeadLetterQueue(queue=relay_dlq, max_receive_count=SQS_MAX_RECEIVE_COUNT),
        )
        return relay_queue, relay_dlq
