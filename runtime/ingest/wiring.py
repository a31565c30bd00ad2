"""Builds an `Ingest` from validated settings with the default clients (the handlers' lazy
path; tests and benchmarks build `Ingest` themselves with the clients they want)."""

from __future__ import annotations

from runtime import clients
from runtime.config import Settings, get_settings
from runtime.errors import ConfigError
from runtime.ingest.coord import Coordinator
from runtime.ingest.fs import Fs
from runtime.ingest.layout import Layout
from runtime.ingest.model import Ingest
from runtime.ingest.sender import SqsSink


def sink_for(settings: Settings) -> SqsSink:
    ingest, queues = settings.require_ingest(), settings.queues
    if ingest.target == "fifo":
        if not queues.fifo_url:
            raise ConfigError("SLUICE_QUEUES__FIFO_URL is required with SLUICE_INGEST__TARGET=fifo")
        return SqsSink(clients.aws_client("sqs"), queues.fifo_url, group_id=queues.fifo_message_group_id)
    if not queues.state_url:
        raise ConfigError("SLUICE_QUEUES__STATE_URL is required for the loader")
    return SqsSink(clients.aws_client("sqs"), queues.state_url)


def ingest_from_settings(settings: Settings, *, with_sink: bool = True) -> Ingest:
    ingest = settings.require_ingest()
    coord = Coordinator(clients.make_redis(settings.redis))
    sink = sink_for(settings) if with_sink else _NoSink()
    return Ingest(
        settings=ingest,
        max_message_bytes=settings.queues.max_message_bytes,
        fs=Fs(),
        coord=coord,
        sink=sink,
        layout=Layout(ingest.root),
    )


def ingest_from_environment() -> Ingest:
    """A loader helper process's `Ingest`: settings from the environment it inherited, its own
    clients (module-level, so it pickles to a spawned process by name)."""
    return ingest_from_settings(get_settings())


class _NoSink:
    """The checker sends nothing; a sink that refuses makes that a loud error, not a drop."""

    calls = 0
    billing_units = 0
    ordered = True

    def send(self, parts: object) -> None:
        raise ConfigError("the checker has no queue to send to")
