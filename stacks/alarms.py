"""Metrics and alarms shared by the system constructs (one way to build each kind)."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from constructs import Construct

# Metrics are emitted by runtime/observability.py with this namespace and service dimension;
# alarms, dashboards and the functions' environment must name exactly the same (a test checks).
METRICS_NAMESPACE = "sluice"
SERVICE_NAME = "sluice"
METRIC_DIMENSIONS = {"service": SERVICE_NAME}
ONE_MINUTE = cdk.Duration.minutes(1)
FIVE_MINUTES = cdk.Duration.minutes(5)


def sluice_metric(
    name: str, *, statistic: str = "Sum", period: cdk.Duration = ONE_MINUTE, label: str | None = None
) -> cloudwatch.Metric:
    """A custom metric the runtime emits through Powertools (namespace and service dimension)."""
    return cloudwatch.Metric(
        namespace=METRICS_NAMESPACE,
        metric_name=name,
        dimensions_map=METRIC_DIMENSIONS,
        statistic=statistic,
        period=period,
        label=label,
    )


def per_second(metric: cloudwatch.Metric, label: str) -> cloudwatch.MathExpression:
    """A summed count as a rate over its period."""
    key = metric.metric_name.lower()  # ids must differ between expressions on one graph
    return cloudwatch.MathExpression(
        expression=f"{key} / PERIOD({key})", using_metrics={key: metric}, label=label, period=metric.period
    )


def threshold_alarm(
    scope: Construct,
    construct_id: str,
    metric: cloudwatch.IMetric,
    *,
    threshold: float,
    description: str,
    evaluation_periods: int = 1,
    missing_data_breaches: bool = False,
) -> cloudwatch.Alarm:
    """Alarm when `metric` reaches `threshold`; missing data (no traffic) is not a breach unless
    the metric is a heartbeat (`missing_data_breaches`)."""
    return cloudwatch.Alarm(
        scope,
        construct_id,
        metric=metric,
        threshold=threshold,
        evaluation_periods=evaluation_periods,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treat_missing_data=cloudwatch.TreatMissingData.BREACHING
        if missing_data_breaches
        else cloudwatch.TreatMissingData.NOT_BREACHING,
        alarm_description=description,
    )


def dlq_depth_alarm(
    scope: Construct, construct_id: str, queue: sqs.IQueue, *, threshold: int, what: str
) -> cloudwatch.Alarm:
    return threshold_alarm(
        scope,
        construct_id,
        queue.metric_approximate_number_of_messages_visible(period=ONE_MINUTE, statistic="Maximum"),
        threshold=threshold,
        description=f"{what}: messages in the dead-letter queue need an operator (each carries its reason)",
    )


def error_rate_alarm(
    scope: Construct, construct_id: str, function: lambda_.IFunction, *, percent: float, what: str
) -> cloudwatch.Alarm:
    rate = cloudwatch.MathExpression(
        expression="IF(invocations > 0, 100 * errors / invocations, 0)",
        using_metrics={
            "errors": function.metric_errors(period=FIVE_MINUTES, statistic="Sum"),
            "invocations": function.metric_invocations(period=FIVE_MINUTES, statistic="Sum"),
        },
        label=f"{what} error %",
        period=FIVE_MINUTES,
    )
    return threshold_alarm(
        scope,
        construct_id,
        rate,
        threshold=percent,
        description=f"{what}: failed invocations above {percent}% over 5 minutes",
    )
