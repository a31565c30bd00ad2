"""`sluice status` and `sluice dlq` against the local runtime (real moto server and
redis-server), with a quarantined file, a halted batch and dead letters made on purpose;
redrive keeps every envelope exactly once (nothing duplicated, nothing lost) and FIFO order."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from local.environment import LocalEnvironment, load_local_config, local_environment
from local.serve import write_state
from ops.cli import main
from runtime import codec

REASONS = ("mutation_failed", "time budget")


@pytest.fixture
def served(tmp_path: Path, redis_server: Any, moto: Any) -> Iterator[tuple[LocalEnvironment, Path]]:
    with local_environment(
        config=load_local_config("dev"),
        share=tmp_path / "share",
        redis_url=redis_server.url,
        aws_endpoint_url=moto.url,
    ) as environment:
        state = tmp_path / "local-serve.json"
        write_state(state, environment)
        yield environment, state


def _sluice(state: Path, *args: str) -> tuple[int, Any]:
    result = CliRunner().invoke(main, [*args, "--local", "--state", str(state), "--json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.output)


def _envelope(envelope_id: str) -> str:
    item = {"id": f"{envelope_id}#0", "step": "greet", "attempt": 4, "state": {"n": envelope_id}}
    return json.dumps({"v": 1, "id": envelope_id, "parent": None, "items": [item]})


def _dead_letter(env: LocalEnvironment, queue: str, envelope_id: str, reason: str, **fifo: str) -> None:
    def text(value: str) -> dict[str, str]:
        return {"DataType": "String", "StringValue": value}

    attributes = {
        codec.ATTR_REASON: text(reason),
        codec.ATTR_SOURCE: text("pipeline/state"),
        codec.ATTR_STEP: text("greet"),
        codec.ATTR_ATTEMPTS: text("5"),
        codec.ATTR_ERROR: text("ValueError"),
        codec.ATTR_DETAIL: text("made on purpose"),
    }
    env.client("sqs").send_message(
        QueueUrl=env.provisioned.url(queue),
        MessageBody=_envelope(envelope_id),
        MessageAttributes=attributes,
        **fifo,
    )


def _drain(env: LocalEnvironment, queue: str) -> list[dict[str, Any]]:
    sqs, url = env.client("sqs"), env.provisioned.url(queue)
    out: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60, AttributeNames=["All"]
        ).get("Messages", [])
        if not messages:
            return out
        for message in messages:
            out.append(message)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def test_status_names_what_needs_a_person(served: tuple[LocalEnvironment, Path]) -> None:
    env, state = served
    code, doc = _sluice(state, "status")
    assert code == 0 and doc["attention"] == []
    # A quarantined file, a halted batch and a dead letter, made on purpose.
    rejected = env.share / "rejected" / "b-1"
    rejected.mkdir()
    (rejected / "bad.json").write_text("not json")
    reason = {"code": "invalid_json", "detail": "x", "batch": "b-1", "bytes_sent": 0, "at": 0}
    (rejected / "bad.json.reason.json").write_text(json.dumps(reason))
    (env.share / "halted" / "b-2").mkdir()
    (env.share / "inbox" / "2026-12-02T00-00-00.json").write_text("[]")
    names = env.provisioned.names
    _dead_letter(env, names.state_dlq, "dead-1", REASONS[0])
    code, doc = _sluice(state, "status")
    assert code == 1
    share = doc["ingest"]["share"]
    assert (share["rejected_files"], share["halted_batches"], share["inbox_files"]) == (1, 1, 1)
    assert doc["ingest"]["redis"]["batches_in_flight"] == 0
    dlq = next(q for q in doc["queues"] if q["name"] == names.state_dlq)
    assert dlq["dlq_of"] == names.state_queue and dlq["visible"] == 1 and dlq["oldest_age_s"] is not None
    assert any("halted" in reason for reason in doc["attention"])
    assert any(names.state_dlq in reason for reason in doc["attention"])


def test_dlq_ls_show_and_redrive_exactly_once(served: tuple[LocalEnvironment, Path]) -> None:
    env, state = served
    names = env.provisioned.names
    ids = [f"env-{i:02d}" for i in range(12)]
    for i, envelope_id in enumerate(ids):
        _dead_letter(env, names.state_dlq, envelope_id, REASONS[i % 2])
    _, listed = _sluice(state, "dlq", "ls", names.state_dlq)
    assert sorted(m["envelope_id"] for m in listed) == ids
    assert {(m["reason"], m["step"], m["attempts"], m["error"]) for m in listed} == {
        (reason, "greet", "5", "ValueError") for reason in REASONS
    }
    _, shown = _sluice(state, "dlq", "show", names.state_dlq, "env-03")
    assert json.loads(shown["body"])["id"] == "env-03" and shown["reason"] == REASONS[1]
    _, dry = _sluice(state, "dlq", "redrive", names.state_dlq, "--reason", REASONS[0], "--dry-run")
    assert dry["redriven"] == 0 and len(dry["matched"]) == 6
    _, first = _sluice(state, "dlq", "redrive", names.state_dlq, "--reason", REASONS[0], "--max", "4")
    assert first["redriven"] == 4 and first["left_in_dlq"] == 8
    _, rest = _sluice(state, "dlq", "redrive", names.state_dlq)
    assert rest["redriven"] == 8 and rest["left_in_dlq"] == 0
    bodies = [json.loads(m["Body"]) for m in _drain(env, names.state_queue)]
    assert sorted(b["id"] for b in bodies) == ids  # every envelope once, under its own id
    assert _drain(env, names.state_dlq) == []


def test_dlq_redrive_keeps_fifo_groups_in_order(served: tuple[LocalEnvironment, Path]) -> None:
    env, state = served
    names = env.provisioned.names
    ids = [f"fifo-{i:02d}" for i in range(6)]
    for envelope_id in ids:
        _dead_letter(
            env,
            names.fifo_dlq,
            envelope_id,
            REASONS[0],
            MessageGroupId="g1",
            MessageDeduplicationId=envelope_id,
        )
    _, moved = _sluice(state, "dlq", "redrive", names.fifo_dlq)
    assert moved["redriven"] == 6
    redriven = _drain(env, names.fifo_queue)
    assert [json.loads(m["Body"])["id"] for m in redriven] == ids
    assert {m["Attributes"]["MessageGroupId"] for m in redriven} == {"g1"}


def test_dlq_refuses_a_queue_that_is_not_a_dlq(served: tuple[LocalEnvironment, Path]) -> None:
    env, state = served
    result = CliRunner().invoke(
        main, ["dlq", "ls", env.provisioned.names.state_queue, "--local", "--state", str(state)]
    )
    assert result.exit_code != 0 and "not a dead-letter queue" in result.output


def test_local_needs_the_state_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["status", "--local", "--state", str(tmp_path / "none.json")])
    assert result.exit_code != 0 and "python -m local --serve" in result.output
