"""ingest: the EFS inbox → SQS loader, its checker and archiver, on schedules, with alarms and
a dashboard (docs/architecture.md#the-five-systems, docs/ingest.md#the-protocol)."""

from __future__ import annotations

from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from runtime.metric_names import (
    BATCHES_IN_FLIGHT,
    ENVIRONMENT_ERRORS,
    FAILED_BATCH_RUNS,
    FILES_LOADED,
    HALTED_BATCHES,
    INBOX_DEPTH,
    OLDEST_FILE_AGE_SECONDS,
    RECORDS_SENT,
    REJECTED_FILES,
    STUCK_INBOX_FILES,
)
from stacks.alarms import (
    FIVE_MINUTES,
    ONE_MINUTE,
    per_second,
    sluice_metric,
    threshold_alarm,
)
from stacks.config import EnvironmentConfig
from stacks.functions import FunctionFactory, FunctionSpec
from stacks.nag import Ack, acknowledge
from stacks.schedules import schedule
from stacks.shared import SharedResources

SCHEDULED_ACKS = (
    Ack(
        "Serverless-LambdaDLQ",
        "scheduled and idempotent: a failed run's work stays on EFS and in Redis leases, and the "
        "next scheduled run (minutes later) resumes it; a DLQ would hold only empty timer events",
    ),
    Ack(
        "Serverless-LambdaAsyncFailureDestination",
        "scheduled and idempotent: the next scheduled run resumes a failed one from EFS state; "
        "failures are alarmed on the function's error rate",
    ),
)


class IngestConstruct(Construct):
    """loader, checker and archiver, each on its schedule, with the EFS share mounted."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        shared: SharedResources,
        factory: FunctionFactory,
        target_dlq_alarm: cloudwatch.IAlarm,
    ) -> None:
        super().__init__(scope, construct_id)
        ingest = config.ingest
        self.target_queue: sqs.IQueue = (
            shared.state_queue if ingest.target == "standard" else shared.fifo_queue
        )
        # Only the loader is CPU-bound (decoding and packing records); the checker and archiver
        # mostly wait on EFS and Redis, so they keep the functions' default memory (None).
        specs = {
            "loader": (
                ingest.loader_timeout_s,
                ingest.loader_schedule,
                "claims settled inbox files and sends them",
                ingest.loader_memory_mb,
            ),
            "checker": (ingest.checker_timeout_s, ingest.checker_schedule, "hands expired claims back", None),
            "archiver": (
                ingest.archiver_timeout_s,
                ingest.archiver_schedule,
                "archives committed batches",
                None,
            ),
        }
        self.functions: dict[str, lambda_.Function] = {}
        for name, (timeout_s, expression, does, memory_mb) in specs.items():
            function = factory.create(
                self,
                FunctionSpec(
                    name=name,
                    handler=f"runtime.handlers.{name}.handler",
                    timeout_s=timeout_s,
                    description=f"sluice ingest {name}: {does}",
                    mount_efs=True,
                    memory_mb=memory_mb,
                    sections=frozenset({"ingest"}),
                ),
            )
            shared.redis_auth_secret.grant_read(function)
            acknowledge(function, *SCHEDULED_ACKS)
            schedule(
                self,
                f"{name.capitalize()}Schedule",
                function,
                expression,
                description=f"sluice ingest {name}: {expression}",
            )
            self.functions[name] = function
        self.loader = self.functions["loader"]
        # Only the loader sends, and only to the one queue ingest targets.
        self.target_queue.grant_send_messages(self.loader)
        self.alarms = self._alarms(config, shared, factory)
        self.dashboard = self._dashboard(config, target_dlq_alarm)

    # -- alarms -----------------------------------------------------------------------------------

    def _alarms(
        self, config: EnvironmentConfig, shared: SharedResources, factory: FunctionFactory
    ) -> dict[str, cloudwatch.Alarm]:
        thresholds = config.alarms
        alarms = {
            "loader_errors": factory.error_alarms["loader"],
            "oldest_file_age": threshold_alarm(
                self,
                "OldestFileAge",
                sluice_metric(OLDEST_FILE_AGE_SECONDS, statistic="Maximum"),
                threshold=thresholds.oldest_file_age_s,
                evaluation_periods=3,
                # The checker reports the age every run (0 when the inbox is empty): silence
                # means the checker is not running, and nothing else would notice.
                missing_data_breaches=True,
                description="ingest: the oldest inbox file is waiting too long (loader stalled or behind)",
            ),
            "rejected_files": threshold_alarm(
                self,
                "RejectedFiles",
                sluice_metric(REJECTED_FILES, period=FIVE_MINUTES),
                threshold=thresholds.rejected_files_per_5min,
                description="ingest: files quarantined under rejected/ with a reason file",
            ),
            "halted_batches": threshold_alarm(
                self,
                "HaltedBatches",
                sluice_metric(HALTED_BATCHES, period=FIVE_MINUTES),
                threshold=1,
                description="ingest: a batch under halted/ cannot be resumed safely and needs an operator",
            ),
            "environment_errors": threshold_alarm(
                self,
                "LoaderEnvironmentErrors",
                sluice_metric(ENVIRONMENT_ERRORS, period=FIVE_MINUTES),
                threshold=1,
                description="ingest: the environment refuses the loader (access denied, queue missing or its "
                "MaximumMessageSize below queues.max_message_bytes, KMS key disabled); runs stop until fixed",
            ),
            "failed_batch_runs": threshold_alarm(
                self,
                "FailedBatchRuns",
                sluice_metric(FAILED_BATCH_RUNS, period=FIVE_MINUTES),
                threshold=1,
                evaluation_periods=3,
                description="ingest: a batch keeps failing (backing off while new files load; quarantined or "
                "halted after max_crash_runs)",
            ),
            "stuck_inbox_files": threshold_alarm(
                self,
                "StuckInboxFiles",
                sluice_metric(STUCK_INBOX_FILES, statistic="Maximum"),
                threshold=1,
                evaluation_periods=3,
                description="ingest: the oldest inbox files have mtimes in the future or cannot be stat'ed",
            ),
            "redis_memory": threshold_alarm(
                self,
                "RedisMemory",
                _redis_memory_percent(shared, config.redis.replicas),
                threshold=config.redis.memory_alarm_percent,
                evaluation_periods=3,
                description="Redis runs noeviction: near full, writes fail; grow the node or find the leak",
            ),
            "efs_throughput": self._efs_alarm(config, shared),
        }
        return alarms

    def _efs_alarm(self, config: EnvironmentConfig, shared: SharedResources) -> cloudwatch.Alarm:
        file_system_id = shared.file_system.file_system_id

        def efs_metric(name: str, statistic: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(
                namespace="AWS/EFS",
                metric_name=name,
                dimensions_map={"FileSystemId": file_system_id},
                statistic=statistic,
                period=ONE_MINUTE,
            )

        if config.ingest.efs_throughput_mode == "bursting":
            return cloudwatch.Alarm(
                self,
                "EfsBurstCredits",
                metric=efs_metric("BurstCreditBalance", "Minimum"),
                threshold=config.alarms.efs_burst_credit_bytes,
                evaluation_periods=5,
                comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                alarm_description="EFS bursting: credits running out, throughput will drop to the baseline",
            )
        utilisation = cloudwatch.MathExpression(
            expression="100 * (metered / PERIOD(metered)) / permitted",
            using_metrics={
                "metered": efs_metric("MeteredIOBytes", "Sum"),
                "permitted": efs_metric("PermittedThroughput", "Average"),
            },
            label="EFS throughput used %",
            period=ONE_MINUTE,
        )
        return threshold_alarm(
            self,
            "EfsThroughput",
            utilisation,
            threshold=config.alarms.efs_throughput_percent,
            evaluation_periods=5,
            description=f"EFS {config.ingest.efs_throughput_mode}: metered I/O near the permitted "
            "throughput (and, on elastic, the bill); see `sluice cost` (records per file is the lever)",
        )

    # -- dashboard --------------------------------------------------------------------------------

    def _dashboard(
        self, config: EnvironmentConfig, target_dlq_alarm: cloudwatch.IAlarm
    ) -> cloudwatch.Dashboard:
        dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=f"{config.prefix}-ingest")
        dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="records/s and files/s",
                left=[per_second(sluice_metric(RECORDS_SENT), "records/s")],
                right=[per_second(sluice_metric(FILES_LOADED), "files/s")],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="backlog and batches in flight",
                left=[sluice_metric(INBOX_DEPTH, statistic="Maximum", label="inbox files")],
                right=[sluice_metric(BATCHES_IN_FLIGHT, statistic="Maximum", label="batches in flight")],
                width=12,
            ),
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="rejected files and halted batches",
                left=[
                    sluice_metric(REJECTED_FILES, period=FIVE_MINUTES, label="rejected"),
                    sluice_metric(HALTED_BATCHES, period=FIVE_MINUTES, label="halted"),
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="loader duration (ms)",
                left=[
                    self.loader.metric_duration(statistic="p99"),
                    self.loader.metric_duration(statistic="Average"),
                ],
                width=12,
            ),
        )
        dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(
                title="ingest alarms", alarms=[*self.alarms.values(), target_dlq_alarm], width=24
            )
        )
        return dashboard


def _redis_memory_percent(shared: SharedResources, replicas: int) -> cloudwatch.IMetric:
    """The fullest node's memory use: the primary may move on failover, so watch every member."""
    nodes = {
        f"node{index}": cloudwatch.Metric(
            namespace="AWS/ElastiCache",
            metric_name="DatabaseMemoryUsagePercentage",
            # Members of a replication group are named <group id>-001, -002, …
            dimensions_map={"CacheClusterId": f"{shared.redis_replication_group_id}-{index:03d}"},
            statistic="Maximum",
            period=ONE_MINUTE,
        )
        for index in range(1, replicas + 2)
    }
    if len(nodes) == 1:
        return next(iter(nodes.values()))
    return cloudwatch.MathExpression(
        expression=f"MAX([{', '.join(nodes)}])",
        using_metrics=nodes,
        label="Redis memory used % (fullest node)",
        period=ONE_MINUTE,
    )
