"""Test harness for jobs: the pipeline harness's queues, bucket and Redis, plus the jobs
settings and clients, a worker thread that runs the real router core against the state queue
the way the event source mapping would, and the local HTTP API in front of the real handler."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from local.http import GatewayClients, LocalHttpApi, build_gateway
from runtime.config import JobsSettings, Settings
from runtime.jobs import JobClients, JobsRouter, JobStore
from runtime.jobs.api import JobsApi
from runtime.jobs.store import make_store
from runtime.jobs.wiring import build_jobs
from runtime.pipeline.state import Router
from tests.support.pipeline import Harness


@dataclass
class Jobs:
    h: Harness
    settings: Settings
    redis: Any = None  # the API side's client; default: the harness's

    @classmethod
    def create(cls, h: Harness, **jobs: Any) -> Jobs:
        return cls(h, h.settings.model_copy(update={"jobs": JobsSettings(**jobs)}))

    @property
    def clients(self) -> JobClients:
        return JobClients(sqs=self.h.sqs, s3=self.h.s3, redis=self.redis or self.h.redis)

    @property
    def store(self) -> JobStore:
        return make_store(self.clients, self.settings)

    @property
    def api(self) -> JobsApi:
        """The jobs API as the handler and the local runtime build it."""
        return build_jobs(self.settings, self.clients)

    def router(self, job_router: Router, fallback: Router | None = None) -> JobsRouter:
        return JobsRouter(job_router, fallback=fallback, store=self.store)


class Worker(threading.Thread):
    """Receives from the state queue and runs each batch through the router core until
    stopped (one poller of an event source mapping)."""

    def __init__(self, h: Harness, router: Router) -> None:
        super().__init__(name="jobs-worker", daemon=True)
        self.h = h
        self.router = router
        self.errors: list[BaseException] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                messages = self.h.receive(wait_s=1)
                if messages:
                    self.h.process(messages, self.router)
            except self.h.sqs.exceptions.ReceiptHandleIsInvalid:
                # Processed after its visibility ran out (a loaded machine) and received again
                # elsewhere: as on Lambda, the delete fails and the ledger makes the rerun a no-op.
                continue
            except Exception as exc:
                self.errors.append(exc)
                return

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)
        assert not self.errors, self.errors


def serve(jobs: Jobs) -> LocalHttpApi:
    """The local HTTP API with the real jobs handler on `jobs`' settings and clients (a context
    manager: it serves on loopback while entered)."""
    return build_gateway(jobs.settings, GatewayClients(sqs=jobs.h.sqs, jobs=jobs.api.handle))
