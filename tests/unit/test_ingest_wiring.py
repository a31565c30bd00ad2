"""The ingest wiring: settings pick the queue (standard or FIFO) and fail by name; the
checker and archiver get a part sender that refuses."""

from __future__ import annotations

import pytest

from runtime.config import load_settings
from runtime.errors import ConfigError
from runtime.ingest.wiring import build_ingest, clients_from_settings, part_sender_for

BASE = {
    "SLUICE_INGEST__ROOT": "/mnt/efs",
    "SLUICE_REDIS__URL": "redis://127.0.0.1:1/0",
    "SLUICE_QUEUES__STATE_URL": "https://sqs.example/state",
    "SLUICE_QUEUES__FIFO_URL": "https://sqs.example/state.fifo",
    "SLUICE_QUEUES__FIFO_MESSAGE_GROUP_ID": "g7",
    "SLUICE_QUEUES__MAX_MESSAGE_BYTES": "8192",
}
SQS = object()  # choosing the queue never calls the client


def test_standard_target() -> None:
    settings = load_settings(BASE)
    sender = part_sender_for(settings, SQS)
    assert sender.queue_url == "https://sqs.example/state" and sender.group_id is None
    ingest = build_ingest(settings, clients_from_settings(settings))
    assert ingest.max_message_bytes == 8192 and ingest.layout.inbox == "/mnt/efs/inbox"


def test_fifo_target_uses_the_group_id() -> None:
    sender = part_sender_for(load_settings({**BASE, "SLUICE_INGEST__TARGET": "fifo"}), SQS)
    assert sender.queue_url == "https://sqs.example/state.fifo" and sender.group_id == "g7"


@pytest.mark.parametrize(
    ("overrides", "missing"),
    [
        ({"SLUICE_QUEUES__STATE_URL": ""}, "SLUICE_QUEUES__STATE_URL"),
        ({"SLUICE_INGEST__TARGET": "fifo", "SLUICE_QUEUES__FIFO_URL": ""}, "SLUICE_QUEUES__FIFO_URL"),
    ],
)
def test_a_missing_queue_fails_by_name(overrides: dict[str, str], missing: str) -> None:
    with pytest.raises(ConfigError, match=missing):
        clients_from_settings(load_settings({**BASE, **overrides}))


def test_the_checker_and_archiver_never_send() -> None:
    settings = load_settings(BASE)
    ingest = build_ingest(settings, clients_from_settings(settings, sends=False))
    with pytest.raises(ConfigError):
        ingest.sender.send([])
