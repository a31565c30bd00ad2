"""Synchronous jobs over Redis pub/sub, with results in S3.

`POST /jobs` (`submit_job`) subscribes to the job's channel, then enqueues the job on the state
queue as a one-item envelope, then waits (bounded under the HTTP API's 30 s) for the worker's
completion; `GET /jobs/{id}` (`job_status`) answers pending / done / failed. The worker side is
`JobsRouter`, a router step that stores the outcome in S3 (create-only, the record of truth),
records the status in Redis with a TTL and publishes the completion.
"""

from runtime.jobs.errors import BadJobRequest
from runtime.jobs.model import JOB_FIELD, Answer, JobOutcome, job_state, new_job_id
from runtime.jobs.service import job_status, submit_job
from runtime.jobs.store import JobClients, JobStore
from runtime.jobs.worker import JobsRouter

__all__ = [
    "JOB_FIELD",
    "Answer",
    "BadJobRequest",
    "JobClients",
    "JobOutcome",
    "JobStore",
    "JobsRouter",
    "job_state",
    "job_status",
    "new_job_id",
    "submit_job",
]
