"""`sluice status`: what needs a person, per system — the ingest share and its Redis state,
every queue and dead-letter queue, alarms in ALARM and the last run of each scheduled function."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ops.target import Target
from runtime import metric_names
from runtime.declarations.names import OPERATIONS_URL_OUTPUT
from runtime.operations import share_status


def redis_status(redis_url: str) -> dict[str, Any]:
    import redis

    from runtime.ingest.coord import HALTED, PROCESSING, RESUMABLE

    client = redis.Redis.from_url(redis_url, socket_timeout=3)
    try:
        pipe = client.pipeline(transaction=False)
        for key in (PROCESSING, RESUMABLE, HALTED):
            pipe.zcard(key)
        in_flight, resumable, halted = pipe.execute()
    except redis.RedisError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        client.close()
    return {"batches_in_flight": in_flight, "batches_resumable": resumable, "batches_halted": halted}


def queue_table(target: Target) -> list[dict[str, Any]]:
    """Every queue with its depth; a queue another's redrive policy names is a DLQ."""
    sqs = target.client("sqs")
    rows = []
    for url in target.queue_urls:
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        rows.append({"url": url, "name": url.rsplit("/", 1)[-1], "attributes": attributes})
    by_dlq_arn = {
        json.loads(row["attributes"]["RedrivePolicy"])["deadLetterTargetArn"]: row["name"]
        for row in rows
        if "RedrivePolicy" in row["attributes"]
    }
    out = []
    for row in rows:
        attributes = row["attributes"]
        arn = attributes.get("QueueArn", "")
        out.append(
            {
                "name": row["name"],
                "url": row["url"],
                "dlq_of": by_dlq_arn.get(arn),
                "visible": int(attributes.get("ApproximateNumberOfMessages", 0)),
                "in_flight": int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
                "delayed": int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
                "oldest_age_s": None,
            }
        )
    return out


def _oldest_by_peek(target: Target, url: str) -> float | None:
    """Local only: the oldest of the first messages, peeked with a zero visibility timeout."""
    messages = (
        target.client("sqs")
        .receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0, AttributeNames=["SentTimestamp"]
        )
        .get("Messages", [])
    )
    sent = [int(m["Attributes"]["SentTimestamp"]) / 1000 for m in messages]
    return round(time.time() - min(sent), 1) if sent else None


def _metric_max(target: Target, namespace: str, metric: str, dimension: tuple[str, str]) -> float | None:
    now = datetime.now(UTC)
    points = target.client("cloudwatch").get_metric_statistics(
        Namespace=namespace,
        MetricName=metric,
        Dimensions=[{"Name": dimension[0], "Value": dimension[1]}],
        StartTime=now - timedelta(minutes=10),
        EndTime=now + timedelta(minutes=1),
        Period=300,
        Statistics=["Maximum"],
    )["Datapoints"]
    return max((p["Maximum"] for p in points), default=None)


def add_oldest_ages(target: Target, queues: list[dict[str, Any]]) -> None:
    for queue in queues:
        if target.share is not None:
            if queue["dlq_of"] is not None and queue["visible"]:
                queue["oldest_age_s"] = _oldest_by_peek(target, queue["url"])
        else:
            queue["oldest_age_s"] = _metric_max(
                target, "AWS/SQS", "ApproximateAgeOfOldestMessage", ("QueueName", queue["name"])
            )


def alarms_in_alarm(target: Target) -> list[dict[str, str]]:
    """Local: every alarm on the server. Deployed: the stacks' alarms (CloudFormation names
    them `<stack name>-<logical id>-<suffix>`) and any listed among the stacks' resources."""
    cloudwatch = target.client("cloudwatch")
    query: dict[str, str] = {"StateValue": "ALARM"}
    if target.share is None:
        query["AlarmNamePrefix"] = f"sluice-{target.name}-"
    pages = cloudwatch.get_paginator("describe_alarms").paginate(**query)
    found = {a["AlarmName"]: a for page in pages for a in page["MetricAlarms"]}
    named = [name for name in target.alarm_names if name not in found]
    for start in range(0, len(named), 100):
        chunk = named[start : start + 100]
        found.update(
            {
                a["AlarmName"]: a
                for a in cloudwatch.describe_alarms(AlarmNames=chunk, StateValue="ALARM")["MetricAlarms"]
            }
        )
    return [{"name": a["AlarmName"], "reason": a.get("StateReason", "")} for a in found.values()]


def last_runs(target: Target) -> dict[str, Any]:
    """Deployed: the newest minute with invocations in the last hour, per scheduled function."""
    out: dict[str, Any] = {}
    now = datetime.now(UTC)
    for role, function in target.functions.items():
        points = target.client("cloudwatch").get_metric_statistics(
            Namespace="AWS/Lambda",
            MetricName="Invocations",
            Dimensions=[{"Name": "FunctionName", "Value": function}],
            StartTime=now - timedelta(hours=1),
            EndTime=now + timedelta(minutes=1),
            Period=60,
            Statistics=["Sum"],
        )["Datapoints"]
        ran = [p["Timestamp"] for p in points if p["Sum"] > 0]
        out[role] = max(ran).isoformat() if ran else None
    return out


RATE_METRICS = {"files_per_s": metric_names.FILES_LOADED, "records_per_s": metric_names.RECORDS_SENT}


def rates(target: Target, minutes: int) -> dict[str, float | None]:
    """Deployed: files/s and records/s the loaders reported over the last `minutes` (the
    runtime's Powertools metrics: namespace and service dimension from stacks/alarms.py)."""
    from stacks.alarms import METRIC_DIMENSIONS, METRICS_NAMESPACE

    now = datetime.now(UTC)
    out: dict[str, float | None] = {}
    for key, metric in RATE_METRICS.items():
        points = target.client("cloudwatch").get_metric_statistics(
            Namespace=METRICS_NAMESPACE,
            MetricName=metric,
            Dimensions=[{"Name": name, "Value": value} for name, value in METRIC_DIMENSIONS.items()],
            StartTime=now - timedelta(minutes=minutes),
            EndTime=now + timedelta(minutes=1),
            Period=60 * minutes,
            Statistics=["Sum"],
        )["Datapoints"]
        out[key] = round(sum(p["Sum"] for p in points) / (60 * minutes), 1) if points else None
    return out


def read_share(target: Target) -> dict[str, Any] | str:
    """The share's counts: read here (`--local`), or asked of the environment's operations
    function (deployed: EFS is only reachable from the VPC). What stops the answer is said."""
    if target.share is not None:
        return share_status(target.share)
    url = target.outputs.get(OPERATIONS_URL_OUTPUT)
    if not url:
        return f"no {OPERATIONS_URL_OUTPUT} output: deploy this version's stateless stack to see the share"
    from ops.remote import RemoteError, call

    try:
        answer = call(url, {"action": "share.status"})
    except (RemoteError, BotoCoreError, OSError) as exc:
        return f"the operations function did not answer: {exc}"
    return (
        answer if isinstance(answer, dict) else f"unexpected answer from the operations function: {answer!r}"
    )


def collect(target: Target, minutes: int = 5) -> dict[str, Any]:
    document: dict[str, Any] = {"environment": target.name, "at": datetime.now(UTC).isoformat()}
    ingest: dict[str, Any] = {}
    ingest["share"] = read_share(target)
    if target.redis_url is not None:
        ingest["redis"] = redis_status(target.redis_url)
    document["ingest"] = ingest
    try:
        if target.share is None:
            ingest[f"last_{minutes}_min"] = rates(target, minutes)
        queues = queue_table(target)
        add_oldest_ages(target, queues)
        document["queues"] = queues
        document["alarms_in_alarm"] = alarms_in_alarm(target)
        document["scheduled_last_run"] = last_runs(target)
    except (ClientError, BotoCoreError) as exc:
        document["error"] = f"{type(exc).__name__}: {exc}"
    document["attention"] = attention(document)
    return document


def attention(document: dict[str, Any]) -> list[str]:
    """Why a person is needed (empty: nothing)."""
    reasons = [f"alarm {a['name']} in ALARM" for a in document.get("alarms_in_alarm", [])]
    for queue in document.get("queues", []):
        if queue["dlq_of"] is not None and queue["visible"] + queue["in_flight"] > 0:
            reasons.append(f"dead-letter queue {queue['name']} holds {queue['visible'] + queue['in_flight']}")
    share = document["ingest"].get("share")
    halted = share.get("halted_batches", 0) if isinstance(share, dict) else 0
    if halted:
        reasons.append(f"{halted} halted batch(es) in halted/")
    if "error" in document:
        reasons.append(document["error"])
    return reasons
