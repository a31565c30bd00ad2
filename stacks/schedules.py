"""Scheduled functions, one way: an EventBridge rule whose tick is never re-delivered, and a
function whose asynchronous invocations are never retried or kept waiting.

A scheduled run that fails is resumed by the next tick from durable state (EFS for ingest, the
FIFO queue for the drain); a retried or delayed tick would only overlap that next run.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from stacks.alarms import FIVE_MINUTES, threshold_alarm
from stacks.nag import Ack, acknowledge

# Lambda's minimum maximum-event-age: a tick not started within a minute is dropped (the next
# one, at most one schedule interval later, does the same work).
MAX_TICK_AGE = cdk.Duration.seconds(60)


def schedule(
    scope: Construct, construct_id: str, function: lambda_.Function, expression: str, *, description: str
) -> events.Rule:
    """Run `function` on `expression` (rate(...) or cron(...)), at most once per tick."""
    function.configure_async_invoke(retry_attempts=0, max_event_age=MAX_TICK_AGE)
    rule = events.Rule(
        scope,
        construct_id,
        description=description,
        schedule=events.Schedule.expression(expression),
        targets=[targets.LambdaFunction(function, retry_attempts=0)],
    )
    acknowledge(
        rule,
        Ack(
            "Serverless-EventBusDLQ",
            "the event is a timer tick with no payload; a missed tick is covered by the next one",
        ),
    )
    # A dropped tick leaves no error behind: only this metric shows a function that no longer runs.
    threshold_alarm(
        scope,
        f"{construct_id}DroppedTicks",
        function.metric("AsyncEventsDropped", statistic="Sum", period=FIVE_MINUTES),
        threshold=1,
        evaluation_periods=3,
        description=f"{description}: ticks dropped unstarted for 15 minutes (throttled or failing to start)",
    )
    return rule
