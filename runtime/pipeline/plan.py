"""Outcome plans: what one incoming envelope turns into, fixed before anything is sent.

A plan records each item's outcome (one letter per item, in item order) and every output the
envelope produces: its derived id, the sha256 of its body, the body itself and, for a dead
letter, its message attributes. A redelivery replays a stored plan exactly as recorded — the
router is not called again (docs/pipeline.md#2-ledger-first). The ledger stores the plan inline while the
item fits DynamoDB's 400 KB, else in a create-only S3 object the item points to
(`runtime.pipeline.ledger`).

Encoding (`Plan.to_bytes`): one JSON header line (outcomes, and per output its kind, id, hash,
body length and extras), a newline, then the bodies back to back — no escaping of JSON inside
JSON. A plan written before bodies were recorded has no newline: it can still say `complete`,
but its outputs cannot be replayed (`LegacyPlan`).

Output ids are `derived_id(envelope id, slot)`, with slots that follow from the outcomes in
item order: `n<k>` for the k-th packed next envelope, `r<i>` / `p<i>` for item i's retry or
poison message, `c` (then `c1`, `c2`… when they overflow) for the continuation. The sink
object is keyed by the envelope id itself.
"""

from __future__ import annotations

import hashlib
import math
import random
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Any

import orjson

from runtime import codec
from runtime.pipeline.errors import LegacyPlan

NEXT, DONE, RETRY, CONTINUED, POISONED = "N", "D", "R", "C", "P"
"""Item outcomes, one letter each, as stored in a plan's `outcomes` string."""

OUTCOME_NAMES = {NEXT: "next", DONE: "done", RETRY: "retry", CONTINUED: "continued", POISONED: "poisoned"}

MAX_DETAIL_CHARS = codec.MAX_DETAIL_CHARS
REDRIVEN = "redriven"
"""The history entry of an item that came back from a dead-letter queue (a fresh start)."""


class OutputKind(StrEnum):
    NEXT = "next"
    RETRY = "retry"
    CONTINUED = "continued"
    POISONED = "poisoned"
    SINK = "sink"


QUEUE_KINDS = frozenset({OutputKind.NEXT, OutputKind.RETRY, OutputKind.CONTINUED})

Attributes = tuple[tuple[str, str], ...]
"""Message attributes of a dead letter as (name, string value) pairs, in a fixed order."""


@dataclass(frozen=True, slots=True)
class PlannedOutput:
    """One output as the ledger records it (besides its body). `item` is the item index for
    retry/poison outputs; `group` the FIFO message group; `attributes` a dead letter's."""

    kind: OutputKind
    id: str
    sha256: str
    item: int | None = None
    delay_s: int = 0
    reason: str | None = None
    detail: str | None = None
    group: str | None = None
    attributes: Attributes = ()

    def as_dict(self, size: int) -> dict[str, Any]:
        out: dict[str, Any] = {"k": self.kind.value, "id": self.id, "h": self.sha256, "n": size}
        for key, value in (
            ("i", self.item),
            ("d", self.delay_s or None),
            ("r", self.reason),
            ("g", self.group),
        ):
            if value is not None:
                out[key] = value
        if self.detail:
            out["x"] = self.detail
        if self.attributes:
            out["a"] = [list(pair) for pair in self.attributes]
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PlannedOutput:
        return cls(
            kind=OutputKind(raw["k"]),
            id=raw["id"],
            sha256=raw["h"],
            item=raw.get("i"),
            delay_s=raw.get("d", 0),
            reason=raw.get("r"),
            detail=raw.get("x"),
            group=raw.get("g"),
            attributes=tuple((name, value) for name, value in raw.get("a", ())),
        )


@dataclass(frozen=True, slots=True)
class Output:
    """A planned output with its body."""

    planned: PlannedOutput
    body: bytes

    @property
    def kind(self) -> OutputKind:
        return self.planned.kind

    @property
    def id(self) -> str:
        return self.planned.id

    @property
    def sha256(self) -> str:
        return self.planned.sha256

    @property
    def delay_s(self) -> int:
        return self.planned.delay_s

    @property
    def group(self) -> str | None:
        return self.planned.group

    @property
    def attributes(self) -> dict[str, dict[str, str]] | None:
        """SQS `MessageAttributes` (string values), or None."""
        if not self.planned.attributes:
            return None
        return {name: {"DataType": "String", "StringValue": value} for name, value in self.planned.attributes}


@dataclass(frozen=True)
class Plan:
    """An envelope's outcome plan. It never changes once written; `complete` is set later."""

    outcomes: str
    outputs: tuple[Output, ...]
    complete: bool = False

    @cached_property
    def header(self) -> bytes:
        return orjson.dumps(
            {"o": self.outcomes, "out": [o.planned.as_dict(len(o.body)) for o in self.outputs]}
        )

    @property
    def digest(self) -> str:
        """What this plan is, in one hash (its header names every output's id and body hash)."""
        return sha256_hex(self.header)

    def to_bytes(self) -> bytes:
        return b"".join((self.header, b"\n", *(o.body for o in self.outputs)))

    @classmethod
    def from_bytes(cls, data: bytes, *, complete: bool = False) -> Plan:
        header, newline, bodies = data.partition(b"\n")
        raw = orjson.loads(header)
        if not newline:
            if not complete:
                raise LegacyPlan("a plan recorded without its bodies cannot be replayed")
            return cls(outcomes=raw["o"], outputs=(), complete=True)
        outputs: list[Output] = []
        offset = 0
        for entry in raw["out"]:
            size = entry["n"]
            outputs.append(Output(PlannedOutput.from_dict(entry), bodies[offset : offset + size]))
            offset += size
        return cls(outcomes=raw["o"], outputs=tuple(outputs), complete=complete)

    @property
    def needs_complete_mark(self) -> bool:
        """Only a plan that sends messages needs the `complete` mark.

        A redelivery of a plan whose single output is the sink object re-puts that object
        (`If-None-Match: *` answers 412) and sends nothing, so the create-only object is its
        own completion record and the mark would be a second ledger write for nothing.
        """
        return any(o.kind is not OutputKind.SINK for o in self.outputs)


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an item failed: a reason code, its detail, and as known the exception type, the
    step (mutation) that failed and a traceback excerpt."""

    reason: str
    detail: str = ""
    poison_now: bool = False
    error: str | None = None
    step: str | None = None
    trace: str | None = None

    @classmethod
    def of(cls, exc: BaseException, *, step: str | None = None, poison_now: bool = False) -> Failure:
        return cls(
            reason=type(exc).__name__,
            detail=str(exc)[:MAX_DETAIL_CHARS],
            poison_now=poison_now,
            error=type(exc).__name__,
            step=step,
            trace=trace_excerpt(exc),
        )


def trace_excerpt(exc: BaseException, limit: int = codec.MAX_TRACE_BYTES) -> str:
    """The end of `exc`'s traceback (where it was raised), at most `limit` UTF-8 bytes."""
    text = "".join(traceback.format_exception(exc)).encode()
    return text[-limit:].decode(errors="ignore")


@dataclass(frozen=True, slots=True)
class ItemExtras:
    """What a retry or poison output needs beyond the item: recorded once, in the plan."""

    delay_s: int = 0
    failure: Failure | None = None
    attempts: int | None = None

    @property
    def reason(self) -> str | None:
        return self.failure.reason if self.failure else None

    @property
    def detail(self) -> str | None:
        return (self.failure.detail or None) if self.failure else None


@dataclass(frozen=True, slots=True)
class OutputRules:
    """How outputs are shaped beyond the envelope and its outcomes: message size, FIFO grouping
    (`max_items` per next envelope, `group_of(i)` for item i), where dead letters say they came
    from, and how much history an item keeps."""

    max_bytes: int
    source: str = "router"
    history_limit: int = 0
    max_items: int | None = None
    group_of: Callable[[int], str] | None = None


def sha256_hex(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def backoff_delay_s(attempt: int, *, base_s: float, cap_s: int, rng: random.Random | None = None) -> int:
    """`DelaySeconds` for retry number `attempt + 1`: exponential with equal jitter, capped.

    Random on purpose (so retries of many items spread out); the value is recorded in the plan,
    so a re-run sends the same delay instead of drawing a new one.
    """
    ceiling = min(float(cap_s), base_s * (2.0**attempt))
    draw = (rng or random).uniform(ceiling / 2.0, ceiling)
    return min(cap_s, math.ceil(draw))


def with_history(history: tuple[str, ...] | None, entry: str, limit: int) -> tuple[str, ...] | None:
    """`history` with `entry` appended, keeping the last `limit` entries (0: no history)."""
    if not limit:
        return history
    return (*(history or ())[-(limit - 1) :], entry) if limit > 1 else (entry,)


def dead_letter_attributes(failure: Failure, *, source: str, attempts: int | None = None) -> Attributes:
    """The message attributes of a dead letter (names from `runtime.codec`), SQS-safe and
    bounded: reason, detail, source, and as they apply step, attempts, error type, trace."""
    pairs = [
        (codec.ATTR_REASON, failure.reason or "unknown"),
        (codec.ATTR_DETAIL, failure.detail[:MAX_DETAIL_CHARS]),
        (codec.ATTR_SOURCE, source),
        (codec.ATTR_STEP, failure.step or ""),
        (codec.ATTR_ATTEMPTS, "" if attempts is None else str(attempts)),
        (codec.ATTR_ERROR, failure.error or ""),
        (codec.ATTR_TRACE, failure.trace or ""),
    ]
    # SQS rejects an empty string value: an attribute that does not apply is left out.
    return tuple((name, codec.sqs_safe_text(value)) for name, value in pairs if value)


def _output(
    kind: OutputKind,
    output_id: str,
    body: bytes,
    *,
    item: int | None = None,
    extras: ItemExtras | None = None,
    attributes: Attributes = (),
    group: str | None = None,
) -> Output:
    extras = extras or ItemExtras()
    planned = PlannedOutput(
        kind=kind,
        id=output_id,
        sha256=sha256_hex(body),
        item=item,
        delay_s=extras.delay_s,
        reason=extras.reason,
        detail=extras.detail,
        group=group,
        attributes=attributes,
    )
    return Output(planned=planned, body=body)


def sink_body(envelope_id: str, done_items: Sequence[codec.Item]) -> bytes:
    """The sink object of one envelope: its done items, final states included."""
    return codec.dumps({"v": 1, "envelope": envelope_id, "items": [i.as_dict() for i in done_items]})


def build_outputs(
    envelope: codec.Envelope,
    outcomes: str,
    next_items: Mapping[int, bytes],
    extras: Mapping[int, ItemExtras],
    rules: OutputRules,
) -> list[Output]:
    """Every output of `envelope`, in slot order, as a pure function of its arguments.

    `next_items[i]` is item i's next item already encoded (`codec.encode_item`); `extras[i]`
    holds the delay and failure of a retried item and the failure of a poisoned one. A next
    envelope never mixes FIFO groups, so order within each group is kept.
    """
    outputs = _next_outputs(envelope, outcomes, next_items=next_items, rules=rules)
    env_id = envelope.id
    for index, outcome in enumerate(outcomes):
        if outcome == RETRY:
            item, extra = envelope.items[index], extras[index]
            note = f"retry {item.attempt + 1}: {extra.reason or 'failed'}"
            history = with_history(item.history, note, rules.history_limit)
            retried = codec.Item(item.id, item.step, item.attempt + 1, item.state, history)
            out_id = codec.derived_id(env_id, f"r{index}")
            body = codec.assemble(out_id, env_id, [codec.encode_item(retried)])
            outputs.append(_output(OutputKind.RETRY, out_id, body, item=index, extras=extra))
        elif outcome == POISONED:
            outputs.append(_poison_output(envelope, index, extras[index], rules))

    continued = [codec.encode_item(envelope.items[i]) for i, o in enumerate(outcomes) if o == CONTINUED]
    outputs.extend(_continuation_outputs(env_id, continued, rules))

    done = [envelope.items[i] for i, o in enumerate(outcomes) if o == DONE]
    if done:
        outputs.append(_output(OutputKind.SINK, env_id, sink_body(env_id, done)))
    return outputs


def _next_outputs(
    envelope: codec.Envelope, outcomes: str, *, next_items: Mapping[int, bytes], rules: OutputRules
) -> list[Output]:
    """Next items packed greedily in item order: a new envelope when one is full (bytes or
    items) or when the message group changes."""
    env_id = envelope.id
    outputs: list[Output] = []
    packer = codec.EnvelopePacker(
        max_bytes=rules.max_bytes, make_id=lambda k: codec.derived_id(env_id, f"n{k}"), parent=env_id
    )
    open_group: str | None = None
    open_count = 0
    group_of, max_items = rules.group_of, rules.max_items

    def close(part: codec.PackedPart | None) -> None:
        if part is not None:
            outputs.append(_output(OutputKind.NEXT, part.id, part.body, group=open_group))

    for index, outcome in enumerate(outcomes):
        if outcome != NEXT:
            continue
        group = group_of(index) if group_of else None
        if open_count and (group != open_group or (max_items is not None and open_count >= max_items)):
            close(packer.flush())
            open_count = 0
        closed = packer.add(next_items[index])
        if closed is not None:
            close(closed)
            open_count = 0
        open_group = group
        open_count += 1
    close(packer.flush())
    return outputs


def _continuation_outputs(env_id: str, continued: list[bytes], rules: OutputRules) -> list[Output]:
    """The items this run had no time for, packed again: the same items under a new id and a
    parent can outgrow an incoming envelope that was packed to the limit, so they are packed
    greedily, not copied into one envelope (`<id>/c`, then `c1`, `c2`... when they overflow)."""
    if not continued:
        return []
    packer = codec.EnvelopePacker(
        max_bytes=rules.max_bytes,
        make_id=lambda k: codec.derived_id(env_id, f"c{k}" if k else "c"),
        parent=env_id,
    )
    parts = [closed for item in continued if (closed := packer.add(item)) is not None]
    last = packer.flush()
    parts += [last] if last is not None else []
    return [_output(OutputKind.CONTINUED, part.id, part.body) for part in parts]


def _poison_output(envelope: codec.Envelope, index: int, extras: ItemExtras, rules: OutputRules) -> Output:
    """Item `index` to the DLQ, marked (`dead_letter`) so that a redrive gives it a fresh start."""
    out_id = codec.derived_id(envelope.id, f"p{index}")
    item = envelope.items[index]
    failure = extras.failure or Failure("unknown")
    history = with_history(item.history, f"dead-lettered: {failure.reason}", rules.history_limit)
    marked = codec.Item(item.id, item.step, item.attempt, item.state, history, dead_letter=failure.reason)
    body = codec.assemble(out_id, envelope.id, [codec.encode_item(marked)])
    attempts = extras.attempts if extras.attempts is not None else item.attempt + 1
    return _output(
        OutputKind.POISONED,
        out_id,
        body,
        item=index,
        extras=extras,
        attributes=dead_letter_attributes(failure, source=rules.source, attempts=attempts),
        group=rules.group_of(index) if rules.group_of else None,
    )


def quarantine_outputs(
    message_id: str, raw_body: bytes, failure: Failure, *, source: str, group: str | None = None
) -> list[Output]:
    """A body that is not JSON (or not a valid envelope) goes to the DLQ as it came."""
    return [
        _output(
            OutputKind.POISONED,
            codec.derived_id(message_id, "p0"),
            raw_body,
            item=0,
            extras=ItemExtras(failure=failure),
            attributes=dead_letter_attributes(failure, source=source),
            group=group,
        )
    ]


def notice_output(
    envelope_id: str, raw_body: bytes, failure: Failure, *, source: str, group: str | None
) -> Output:
    """A dead letter that reports this delivery (e.g. `plan_mismatch`) beside what the
    recorded plan sends: the body as it came, under a slot of its own."""
    return _output(
        OutputKind.POISONED,
        codec.derived_id(envelope_id, f"notice:{failure.reason}"),
        raw_body,
        extras=ItemExtras(failure=failure),
        attributes=dead_letter_attributes(failure, source=source),
        group=group,
    )


def fresh_start(envelope: codec.Envelope, history_limit: int) -> tuple[codec.Envelope, bool]:
    """A redriven envelope's items (those the framework dead-lettered: `dead_letter` set) start
    over — attempts and steps from 0, a `redriven` history entry; returns whether any did."""
    if all(item.dead_letter is None for item in envelope.items):
        return envelope, False
    items = tuple(
        item
        if item.dead_letter is None
        else codec.Item(item.id, 0, 0, item.state, with_history(item.history, REDRIVEN, history_limit))
        for item in envelope.items
    )
    return codec.Envelope(envelope.id, envelope.parent, items), True
