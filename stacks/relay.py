"""relay: DynamoDB stream INSERTs -> relay function -> relay FIFO queue <- drain function (on a
schedule) -> the third-party API. Functions, the filtered stream mapping, the schedule,
least-privilege grants (the one SSM parameter, KMS only through SSM) and alarms.

The stateful resources come in as arguments. The relay's FIFO queue must be its own (no other
consumer: the drain receives from it on its schedule) with a FIFO DLQ and a redrive policy of
`RELAY_MAX_RECEIVE_COUNT`: a backstop only, since the breaker keeps an outage from receiving and
the drain itself moves non-retryable messages to the DLQ.
"""

from __future__ import annotations

from collections.abc import Callable

import aws_cdk as cdk
import jsii
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from runtime import metric_names as names
from runtime.declarations.aws_limits import SQS_MAX_RECEIVE_COUNT
from runtime.relay.filters import INSERT_ONLY
from stacks.alarms import (
    FIVE_MINUTES,
    ONE_MINUTE,
    dlq_depth_alarm,
    sluice_metric,
    threshold_alarm,
)
from stacks.config import EnvironmentConfig
from stacks.functions import FunctionSpec
from stacks.nag import Ack, acknowledge, resource_finding
from stacks.schedules import schedule

RELAY_MAX_RECEIVE_COUNT = SQS_MAX_RECEIVE_COUNT  # the most SQS allows: a backstop only
RELAY_HANDLER = "runtime.handlers.relay.handler"
DRAIN_HANDLER = "runtime.handlers.drain.handler"

# `FunctionFactory.create` in the stateless stack; tests pass a factory that bundles nothing.
CreateFunction = Callable[[Construct, FunctionSpec], lambda_.Function]


@jsii.implements(lambda_.IEventSourceDlq)
class PutOnlyS3FailureDestination:
    """The stream mapping's S3 on-failure destination, granting the function what Lambda needs to
    write there (PutObject, ListBucket) instead of `S3OnFailureDestination`'s read/write/delete
    on the whole bucket."""

    def __init__(self, bucket: s3.IBucket) -> None:
        self.bucket = bucket

    def bind(
        self, _target: lambda_.IEventSourceMapping, target_handler: lambda_.IFunction
    ) -> lambda_.DlqDestinationConfig:
        target_handler.add_to_role_policy(
            iam.PolicyStatement(actions=["s3:PutObject"], resources=[self.bucket.arn_for_objects("*")])
        )
        target_handler.add_to_role_policy(
            iam.PolicyStatement(actions=["s3:ListBucket"], resources=[self.bucket.bucket_arn])
        )
        return lambda_.DlqDestinationConfig(destination=self.bucket.bucket_arn)


class RelayConstruct(Construct):
    """The relay and drain functions, the INSERT-filtered stream mapping, the drain's schedule,
    grants and alarms."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        source_table: dynamodb.ITable,
        queue: sqs.IQueue,
        dead_letter_queue: sqs.IQueue,
        ledger_table: dynamodb.ITable,
        failure_bucket: s3.IBucket,
        create_function: CreateFunction,
        redis_auth_secret: secretsmanager.ISecret | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        relay = config.relay
        self.parameter_name = config.api_key_parameter
        self.relay_function = self._relay_function(
            config, create_function, source_table, queue, failure_bucket
        )
        self.drain_function = self._drain_function(
            config, create_function, queue, dead_letter_queue, ledger_table
        )
        if redis_auth_secret is not None:
            redis_auth_secret.grant_read(self.drain_function)
        self.schedule = schedule(
            self,
            "DrainSchedule",
            self.drain_function,
            relay.drain_schedule,
            description=f"sluice relay drain: {relay.drain_schedule}",
        )
        self.alarms = self._alarms(config, queue, dead_letter_queue)

    # -- relay: stream -> FIFO ----------------------------------------------------------------

    def _relay_function(
        self,
        config: EnvironmentConfig,
        create_function: CreateFunction,
        source_table: dynamodb.ITable,
        queue: sqs.IQueue,
        failure_bucket: s3.IBucket,
    ) -> lambda_.Function:
        relay = config.relay
        function = create_function(
            self,
            FunctionSpec(
                name="relay",
                handler=RELAY_HANDLER,
                timeout_s=relay.relay_timeout_s,
                description="sluice relay: new items on the source table's stream -> the relay FIFO queue",
                sections=frozenset({"relay"}),
                wildcard_actions=(
                    (
                        "dynamodb:ListStreams",
                        "the stream event source mapping lists the table's streams; ListStreams "
                        "takes no resource",
                    ),
                ),
            ),
        )
        function.add_event_source(
            sources.DynamoEventSource(
                source_table,
                starting_position=lambda_.StartingPosition.TRIM_HORIZON,
                batch_size=relay.stream_batch_size,
                # Only INSERTs reach the function: the pattern the local runtime applies too.
                filters=[lambda_.FilterCriteria.filter(dict(INSERT_ONLY))],
                report_batch_item_failures=True,
                bisect_batch_on_error=True,
                retry_attempts=relay.retry_attempts,
                max_record_age=cdk.Duration.seconds(relay.max_record_age_s),
                # An S3 destination keeps the records themselves (an SQS one gets metadata only).
                on_failure=PutOnlyS3FailureDestination(failure_bucket),
                # One batch per shard at a time: per-key order is the point.
                parallelization_factor=1,
            )
        )
        queue.grant_send_messages(function)
        acknowledge(
            function,
            Ack(
                "Serverless-LambdaDLQ",
                "invoked only by its DynamoDB stream mapping, never asynchronously; records it "
                "cannot relay go to the mapping's S3 on-failure destination",
            ),
            Ack(
                "Serverless-LambdaAsyncFailureDestination",
                "invoked only by its DynamoDB stream mapping, which has an S3 on-failure destination",
            ),
            Ack(
                "AwsSolutions-IAM5",
                "Lambda names the on-failure objects itself (per mapping, shard and time): the role "
                "may put any object into that one bucket (the relay's own, nothing else writes "
                "there), and only put",
                (resource_finding(function, failure_bucket.arn_for_objects("*")),),
            ),
        )
        return function

    # -- drain: FIFO -> API --------------------------------------------------------------------

    def _drain_function(
        self,
        config: EnvironmentConfig,
        create_function: CreateFunction,
        queue: sqs.IQueue,
        dead_letter_queue: sqs.IQueue,
        ledger_table: dynamodb.ITable,
    ) -> lambda_.Function:
        function = create_function(
            self,
            FunctionSpec(
                name="drain",
                handler=DRAIN_HANDLER,
                timeout_s=config.relay.drain_timeout_s,
                description="sluice drain: the oldest relay FIFO messages -> the third-party API",
                sections=frozenset({"relay"}),
            ),
        )
        queue.grant_consume_messages(function)
        dead_letter_queue.grant_send_messages(function)
        # Delivery records: a consistent read and a create-only put, nothing else.
        ledger_table.grant(function, "dynamodb:GetItem", "dynamodb:PutItem")
        self._grant_api_key(function)
        acknowledge(
            function,
            Ack(
                "Serverless-LambdaDLQ",
                "scheduled: the event is a timer tick; the messages stay in the FIFO queue when a "
                "run fails and the next tick resumes them (failures alarm on the error rate)",
            ),
            Ack(
                "Serverless-LambdaAsyncFailureDestination",
                "scheduled: a failed run leaves its messages in the FIFO queue for the next tick",
            ),
        )
        return function

    def _grant_api_key(self, function: lambda_.Function) -> None:
        """Read exactly the one SecureString; decrypt with KMS only when SSM asks on its behalf."""
        stack = cdk.Stack.of(self)
        parameter_arn = stack.format_arn(
            service="ssm",
            resource="parameter",
            resource_name=self.parameter_name.lstrip("/"),
            arn_format=cdk.ArnFormat.SLASH_RESOURCE_NAME,
        )
        function.add_to_role_policy(
            iam.PolicyStatement(actions=["ssm:GetParameter"], resources=[parameter_arn])
        )
        any_key_arn = stack.format_arn(
            service="kms", resource="key", resource_name="*", arn_format=cdk.ArnFormat.SLASH_RESOURCE_NAME
        )
        function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["kms:Decrypt"],
                resources=[any_key_arn],
                conditions={
                    "StringEquals": {
                        "kms:ViaService": f"ssm.{stack.region}.{stack.url_suffix}",
                        "kms:EncryptionContext:PARAMETER_ARN": parameter_arn,
                    }
                },
            )
        )
        acknowledge(
            function,
            Ack(
                "AwsSolutions-IAM5",
                "the SecureString's key (aws/ssm or a customer key) is not known at synth; Decrypt "
                "is allowed only via SSM and only for this one parameter's encryption context",
                (resource_finding(function, any_key_arn),),
            ),
        )

    # -- alarms ----------------------------------------------------------------------------------

    def _alarms(
        self, config: EnvironmentConfig, queue: sqs.IQueue, dead_letter_queue: sqs.IQueue
    ) -> dict[str, cloudwatch.Alarm]:
        percent = config.alarms.error_rate_percent
        api_error_rate = cloudwatch.MathExpression(
            expression="IF(calls > 0, 100 * errors / calls, 0)",
            using_metrics={
                "calls": sluice_metric(names.RELAY_API_CALLS, period=FIVE_MINUTES),
                "errors": sluice_metric(names.RELAY_API_ERRORS, period=FIVE_MINUTES),
            },
            label="relay API error %",
            period=FIVE_MINUTES,
        )
        return {
            "oldest_message": threshold_alarm(
                self,
                "OldestMessage",
                queue.metric_approximate_age_of_oldest_message(period=ONE_MINUTE, statistic="Maximum"),
                threshold=config.relay.oldest_message_alarm_s,
                description="relay: the oldest FIFO message waits too long (API down, breaker open, "
                "budget too small, or the drain failing)",
                evaluation_periods=5,
            ),
            "dead_letters": dlq_depth_alarm(
                self, "DeadLetters", dead_letter_queue, threshold=config.alarms.dlq_depth, what="relay"
            ),
            "api_error_rate": threshold_alarm(
                self,
                "ApiErrorRate",
                api_error_rate,
                threshold=percent,
                description=f"relay: API calls failing (429, 5xx, timeouts) above {percent}% over 5 minutes",
            ),
            "failed_records": threshold_alarm(
                self,
                "FailedStreamRecords",
                sluice_metric(names.RELAY_FAILED_RECORDS, period=FIVE_MINUTES),
                threshold=1,
                description="relay: a stream record could not be put on the FIFO queue (retried; after "
                "the retry attempts it lands in the S3 on-failure destination)",
            ),
        }
