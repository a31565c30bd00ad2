"""Outcome plans: what one incoming envelope turns into, fixed before anything is sent.

A plan records each item's outcome (one letter per item, in item order) and every output the
envelope produces, each with its derived id and the sha256 of its body. Bodies themselves are
not stored: every output body is a pure function of the incoming envelope, the outcomes, the
recorded retry delays and reasons, and — for `next` outputs — the router's next states. A
re-run therefore rebuilds exactly the planned bodies (checked by hash) or stops.

Output ids are `derived_id(envelope id, slot)`, with slots that follow from the outcomes in
item order: `n<k>` for the k-th packed next envelope, `r<i>` / `p<i>` for item i's retry or
poison message, `c` for the continuation. The sink object is keyed by the envelope id itself.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from runtime import codec

NEXT, DONE, RETRY, CONTINUED, POISONED = "N", "D", "R", "C", "P"
"""Item outcomes, one letter each, as stored in a plan's `outcomes` string."""

OUTCOME_NAMES = {NEXT: "next", DONE: "done", RETRY: "retry", CONTINUED: "continued", POISONED: "poisoned"}

REASON_ATTRIBUTE = "sluice-reason"
DETAIL_ATTRIBUTE = "sluice-detail"
SOURCE_ATTRIBUTE = "sluice-source"
MAX_DETAIL_CHARS = 512


class OutputKind(StrEnum):
    NEXT = "next"
    RETRY = "retry"
    CONTINUED = "continued"
    POISONED = "poisoned"
    SINK = "sink"


QUEUE_KINDS = frozenset({OutputKind.NEXT, OutputKind.RETRY, OutputKind.CONTINUED})


@dataclass(frozen=True, slots=True)
class PlannedOutput:
    """One output as the ledger records it. `item` is the item index for retry/poison outputs."""

    kind: OutputKind
    id: str
    sha256: str
    item: int | None = None
    delay_s: int = 0
    reason: str | None = None
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"k": self.kind.value, "id": self.id, "h": self.sha256}
        for key, value in (("i", self.item), ("d", self.delay_s or None), ("r", self.reason)):
            if value is not None:
                out[key] = value
        if self.detail:
            out["x"] = self.detail
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
        )


@dataclass(frozen=True, slots=True)
class Plan:
    """An envelope's outcome plan. It never changes once written; `complete` is set later."""

    outcomes: str
    outputs: tuple[PlannedOutput, ...]
    complete: bool = False

    def to_bytes(self) -> bytes:
        return orjson.dumps({"o": self.outcomes, "out": [o.as_dict() for o in self.outputs]})

    @classmethod
    def from_bytes(cls, data: bytes, *, complete: bool = False) -> Plan:
        raw = orjson.loads(data)
        return cls(
            outcomes=raw["o"],
            outputs=tuple(PlannedOutput.from_dict(o) for o in raw["out"]),
            complete=complete,
        )

    @property
    def needs_complete_mark(self) -> bool:
        """Only a plan that sends messages needs the `complete` mark.

        A redelivery of a plan whose single output is the sink object re-puts that object
        (`If-None-Match: *` answers 412) and sends nothing, so the create-only object is its
        own completion record and the mark would be a second ledger write for nothing.
        """
        return any(o.kind is not OutputKind.SINK for o in self.outputs)

    def matches(self, outputs: Sequence[Output]) -> bool:
        return len(outputs) == len(self.outputs) and all(
            built.planned.id == planned.id and built.planned.sha256 == planned.sha256
            for built, planned in zip(outputs, self.outputs, strict=True)
        )


@dataclass(frozen=True, slots=True)
class Output:
    """A planned output with its body (and SQS message attributes, for poison messages)."""

    planned: PlannedOutput
    body: bytes
    attributes: Mapping[str, Mapping[str, str]] | None = None
    group: str | None = None  # FIFO MessageGroupId (derived from the items, not recorded)

    @property
    def kind(self) -> OutputKind:
        return self.planned.kind


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an item failed: the exception type (or a fixed reason) and its message."""

    reason: str
    detail: str = ""
    poison_now: bool = False

    @classmethod
    def of(cls, exc: BaseException, *, poison_now: bool = False) -> Failure:
        return cls(reason=type(exc).__name__, detail=str(exc)[:MAX_DETAIL_CHARS], poison_now=poison_now)


@dataclass(frozen=True, slots=True)
class ItemExtras:
    """What a retry or poison output needs beyond the item: recorded once, in the plan."""

    delay_s: int = 0
    reason: str | None = None
    detail: str | None = None


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


def poison_attributes(reason: str, detail: str | None, source: str) -> dict[str, dict[str, str]]:
    attributes = {
        REASON_ATTRIBUTE: {"DataType": "String", "StringValue": reason},
        SOURCE_ATTRIBUTE: {"DataType": "String", "StringValue": source},
    }
    if detail:  # SQS rejects an empty string value
        attributes[DETAIL_ATTRIBUTE] = {"DataType": "String", "StringValue": detail}
    return attributes


def _output(
    kind: OutputKind,
    output_id: str,
    body: bytes,
    *,
    item: int | None = None,
    extras: ItemExtras | None = None,
    attributes: Mapping[str, Mapping[str, str]] | None = None,
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
    )
    return Output(planned=planned, body=body, attributes=attributes, group=group)


def sink_body(envelope_id: str, done_items: Sequence[codec.Item]) -> bytes:
    """The sink object of one envelope: its done items, final states included."""
    return codec.dumps({"v": 1, "envelope": envelope_id, "items": [i.as_dict() for i in done_items]})


def build_outputs(
    envelope: codec.Envelope,
    outcomes: str,
    next_items: Mapping[int, bytes],
    extras: Mapping[int, ItemExtras],
    *,
    max_bytes: int,
    max_items: int | None = None,
    group_of: Callable[[int], str] | None = None,
) -> list[Output]:
    """Every output of `envelope`, in slot order, as a pure function of its arguments.

    `next_items[i]` is item i's next item already encoded (`codec.encode_item`); `extras[i]`
    holds the delay of a retried item and the reason of a poisoned one. For FIFO queues,
    `max_items` bounds the items per next envelope and `group_of(i)` names item i's message
    group: a next envelope never mixes groups, so order within each group is kept.
    """
    outputs = _next_outputs(
        envelope, outcomes, next_items=next_items, max_bytes=max_bytes, max_items=max_items, group_of=group_of
    )
    env_id = envelope.id
    for index, outcome in enumerate(outcomes):
        if outcome == RETRY:
            item = envelope.items[index]
            retried = codec.Item(item.id, item.step, item.attempt + 1, item.state, item.history)
            out_id = codec.derived_id(env_id, f"r{index}")
            body = codec.assemble(out_id, env_id, [codec.encode_item(retried)])
            outputs.append(_output(OutputKind.RETRY, out_id, body, item=index, extras=extras[index]))
        elif outcome == POISONED:
            group = group_of(index) if group_of else None
            outputs.append(_poison_output(envelope, index, extras[index], group))

    continued = [codec.encode_item(envelope.items[i]) for i, o in enumerate(outcomes) if o == CONTINUED]
    if continued:
        out_id = codec.derived_id(env_id, "c")
        outputs.append(_output(OutputKind.CONTINUED, out_id, codec.assemble(out_id, env_id, continued)))

    done = [envelope.items[i] for i, o in enumerate(outcomes) if o == DONE]
    if done:
        outputs.append(_output(OutputKind.SINK, env_id, sink_body(env_id, done)))
    return outputs


def _next_outputs(
    envelope: codec.Envelope,
    outcomes: str,
    *,
    next_items: Mapping[int, bytes],
    max_bytes: int,
    max_items: int | None,
    group_of: Callable[[int], str] | None,
) -> list[Output]:
    """Next items packed greedily in item order: a new envelope when one is full (bytes or
    items) or when the message group changes."""
    env_id = envelope.id
    outputs: list[Output] = []
    packer = codec.EnvelopePacker(
        max_bytes=max_bytes, make_id=lambda k: codec.derived_id(env_id, f"n{k}"), parent=env_id
    )
    open_group: str | None = None
    open_count = 0

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


def _poison_output(envelope: codec.Envelope, index: int, extras: ItemExtras, group: str | None) -> Output:
    out_id = codec.derived_id(envelope.id, f"p{index}")
    body = codec.assemble(out_id, envelope.id, [codec.encode_item(envelope.items[index])])
    reason = extras.reason or "unknown"
    return _output(
        OutputKind.POISONED,
        out_id,
        body,
        item=index,
        extras=extras,
        attributes=poison_attributes(reason, extras.detail, envelope.id),
        group=group,
    )


def quarantine_outputs(
    message_id: str, raw_body: bytes, failure: Failure, *, group: str | None = None
) -> list[Output]:
    """A body that is not JSON (or not a valid envelope) goes to the DLQ as it came."""
    extras = ItemExtras(reason=failure.reason, detail=failure.detail)
    return [
        _output(
            OutputKind.POISONED,
            codec.derived_id(message_id, "p0"),
            raw_body,
            item=0,
            extras=extras,
            attributes=poison_attributes(failure.reason, failure.detail, message_id),
            group=group,
        )
    ]


def extras_from_plan(plan: Plan) -> dict[int, ItemExtras]:
    return {
        o.item: ItemExtras(delay_s=o.delay_s, reason=o.reason, detail=o.detail)
        for o in plan.outputs
        if o.item is not None
    }
