"""The ingest system's one wiring: `build_ingest(settings, clients)` makes the `Ingest` that a
loader, checker or archiver run uses. It constructs, never connects: the clients come in — the
handlers' real ones (`clients_from_settings`), the tests' and benchmarks' own (a file system
that injects faults or latency, a part sender that captures or discards)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from runtime.clients import aws_client, make_redis
from runtime.config import Settings
from runtime.errors import ConfigError
from runtime.ingest.coord import Coordinator
from runtime.ingest.fs import Fs
from runtime.ingest.layout import Layout
from runtime.ingest.model import Ingest
from runtime.ingest.sender import PartSender, SqsPartSender


@dataclass(frozen=True)
class IngestClients:
    """What the ingest system talks to: EFS (through `Fs`), Redis, and where packed parts go."""

    fs: Fs
    redis: redis.Redis
    sender: PartSender


def build_ingest(settings: Settings, clients: IngestClients) -> Ingest:
    ingest = settings.require_ingest()
    return Ingest(
        settings=ingest,
        max_message_bytes=settings.queues.max_message_bytes,
        fs=clients.fs,
        coord=Coordinator(clients.redis),
        sender=clients.sender,
        layout=Layout(ingest.root),
    )


def clients_from_settings(settings: Settings, *, sends: bool = True) -> IngestClients:
    """The real clients (boto3 honours AWS_ENDPOINT_URL, which points the local runtime's at
    moto). `sends=False` for the checker and archiver: their sender refuses every part."""
    sender = part_sender_for(settings, aws_client("sqs")) if sends else _NoPartSender()
    return IngestClients(fs=Fs(), redis=make_redis(settings.redis), sender=sender)


def part_sender_for(settings: Settings, sqs: Any) -> SqsPartSender:
    """The loader's queue: the state queue, or the FIFO one with `ingest.target=fifo`."""
    ingest, queues = settings.require_ingest(), settings.queues
    if ingest.target == "fifo":
        if not queues.fifo_url:
            raise ConfigError("SLUICE_QUEUES__FIFO_URL is required with SLUICE_INGEST__TARGET=fifo")
        return SqsPartSender(sqs, queues.fifo_url, group_id=queues.fifo_message_group_id)
    if not queues.state_url:
        raise ConfigError("SLUICE_QUEUES__STATE_URL is required for the loader")
    return SqsPartSender(sqs, queues.state_url)


class _NoPartSender:
    """The checker and archiver send nothing; a sender that refuses makes that a loud error,
    not a drop."""

    calls = 0
    billing_units = 0
    ordered = True

    def send(self, parts: object) -> None:
        raise ConfigError("the checker and archiver have no queue to send to")
