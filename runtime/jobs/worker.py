"""The worker side of jobs: a router step for the state queue.

`JobsRouter(job_router, fallback=...)` routes an item whose state carries `_job` through
`job_router` (the job's own state machine, deterministic like every router); when that router
says done, the step stores the final state as the job's result in S3 (create-only, keyed by the
job id), then records the status in Redis and publishes the completion. A job item the
framework gives up on — its router raised `PoisonItem`, failed `max_attempts` times, or hit the
step limit — is recorded as failed the same way (`on_poisoned`, called once the item is in the
DLQ with its reason). Other items go to `fallback` (the queue's ordinary router), so one router function
serves both jobs and gateway messages.

A crash anywhere re-runs the step on redelivery: the S3 write answers 412 and the outcome
already stored is announced again, so a job has exactly one outcome.
"""

from __future__ import annotations

import threading
from typing import Any

from runtime.config import Settings
from runtime.jobs.model import INNER_FIELD, JOB_FIELD, JobOutcome, job_state
from runtime.jobs.store import JobStore, make_store
from runtime.kill import kill_point
from runtime.pipeline.errors import PoisonItem
from runtime.pipeline.state import Router, State, routed_item_id


def job_id_of(state: State) -> Any:
    """The job a state belongs to, or None. Only the jobs route makes a job: its item id is the
    job id, so a gateway body (item id `gw-...`) that merely carries a `_job` field is not one.
    (Outside the framework, called directly, the field alone decides.)"""
    job_id = state.get(JOB_FIELD) if isinstance(state, dict) else None
    item_id = routed_item_id()
    if job_id is None or item_id is None or item_id == job_id:
        return job_id
    return None


class JobsRouter:
    """`router(state)` completing jobs; its store is injected or built from the settings on
    first use (S3 and Redis clients, the results bucket)."""

    def __init__(
        self,
        job_router: Router,
        *,
        fallback: Router | None = None,
        store: JobStore | None = None,
        settings: Settings | None = None,
    ) -> None:
        self._job_router = job_router
        self._fallback = fallback
        self._store = store
        self._settings = settings
        self._lock = threading.Lock()
        self.__name__ = f"jobs({getattr(job_router, '__name__', type(job_router).__name__)})"

    def __call__(self, state: State) -> State | None:
        job_id = job_id_of(state)
        if job_id is None:
            if self._fallback is None:
                raise PoisonItem("not_a_job", "this queue's router only runs jobs")
            return self._fallback(state)
        if not isinstance(job_id, str) or INNER_FIELD not in state:
            raise PoisonItem("invalid_job", f"a job state needs a string {JOB_FIELD} and a {INNER_FIELD}")
        inner = state[INNER_FIELD]
        next_inner = self._job_router(inner)  # a failure is recorded by `on_poisoned`, below
        if next_inner is not None:
            return job_state(job_id, next_inner)
        self.finish(JobOutcome.done(job_id, inner))
        return None

    def on_poisoned(self, state: State, reason: str, detail: str) -> None:
        """The framework sent this item to the DLQ (a `PoisonItem`, attempts exhausted, the step
        limit...): a job ends `failed` with that reason, so GET never stays pending."""
        job_id = job_id_of(state)
        if isinstance(job_id, str):
            self.finish(JobOutcome.failed(job_id, reason, detail))

    def finish(self, outcome: JobOutcome) -> JobOutcome:
        """S3 first (the record of truth), then the Redis status and the completion."""
        store = self.store()
        stored = store.write_outcome(outcome)
        kill_point("jobs.after_outcome")
        store.announce(stored)
        return stored

    def store(self) -> JobStore:
        with self._lock:
            if self._store is None:
                from runtime.config import get_settings
                from runtime.jobs.wiring import clients_from_environment

                settings = self._settings or get_settings()
                self._store = make_store(clients_from_environment(settings), settings)
            return self._store
