"""How the jobs system is put together: `build_jobs(settings, clients)`, the one wiring the
Lambda handler, the local runtime and the tests share, and the clients a function makes from
its environment."""

from __future__ import annotations

from runtime.clients import aws_client, make_redis
from runtime.config import Settings
from runtime.jobs.api import JobsApi
from runtime.jobs.store import JobClients


def build_jobs(settings: Settings, clients: JobClients) -> JobsApi:
    return JobsApi(settings, clients)


def clients_from_environment(settings: Settings) -> JobClients:
    """The function's own clients (boto3's are cached per process, so the router's jobs step
    shares the SQS and S3 clients it already has)."""
    return JobClients(sqs=aws_client("sqs"), s3=aws_client("s3"), redis=make_redis(settings.redis))
