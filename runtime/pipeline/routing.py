"""Running the user's router over an envelope's items: the only place user code is called.

The result is per-item and policy-free (next / done / failed / poisoned / not run); the
standard and FIFO processors turn it into outcomes differently.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from runtime import codec
from runtime.pipeline.errors import PoisonItem
from runtime.pipeline.plan import (
    DONE,
    MAX_DETAIL_CHARS,
    NEXT,
    Failure,
    ItemExtras,
    Output,
    OutputRules,
    build_outputs,
    with_history,
)
from runtime.pipeline.state import Router, begin_transition, copy_state, routing_item, transition_step_name

FAILED, POISON_NOW, NOT_RUN = "F", "X", "-"
"""Per-item results beside plan.NEXT and plan.DONE."""

STEP_LIMIT = "step limit"
STATE_TOO_LARGE = "state too large"
DONE_STEP = "done"


@dataclass(slots=True)
class Routed:
    """What the router made of one envelope. `results[i]` is one of N, D, F, X, -."""

    results: list[str] = field(default_factory=list)
    next_items: dict[int, bytes] = field(default_factory=dict)
    failures: dict[int, Failure] = field(default_factory=dict)
    steps: Counter[tuple[str, str]] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class RouteLimits:
    """Guards and packing of one queue type. `fifo_group` set means FIFO outputs: at most
    `max_items` items per next envelope, grouped by the state field `group_field` (when set
    and present) or else `fifo_group`. `source` names the system and queue in dead letters."""

    max_steps: int
    history_limit: int
    max_message_bytes: int
    max_items: int | None = None
    fifo_group: str | None = None
    group_field: str = ""
    source: str = "router"

    def group_of(self, envelope: codec.Envelope) -> Callable[[int], str] | None:
        default = self.fifo_group
        if default is None:
            return None
        field_name = self.group_field
        if not field_name:
            return lambda _index: default

        def group(index: int) -> str:
            state = envelope.items[index].state
            value = state.get(field_name) if isinstance(state, dict) else None
            return default if value is None or value == "" else str(value)[:128]

        return group

    def build_outputs(
        self,
        envelope: codec.Envelope,
        outcomes: str,
        next_items: Mapping[int, bytes],
        extras: Mapping[int, ItemExtras],
    ) -> list[Output]:
        return build_outputs(envelope, outcomes, next_items, extras, self.output_rules(envelope))

    def output_rules(self, envelope: codec.Envelope | None = None) -> OutputRules:
        return OutputRules(
            max_bytes=self.max_message_bytes,
            source=self.source,
            history_limit=self.history_limit,
            max_items=self.max_items,
            group_of=self.group_of(envelope) if envelope is not None else None,
        )


class Deadline:
    """The time budget of one invocation, on the monotonic clock."""

    def __init__(self, remaining_ms: float, margin_s: float, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self.budget_s = remaining_ms / 1000.0 - margin_s
        self._at = clock() + self.budget_s

    def passed(self) -> bool:
        return self._clock() >= self._at

    def remaining_s(self) -> float:
        return self._at - self._clock()


def route_envelope(
    envelope: codec.Envelope, router: Router, limits: RouteLimits, deadline: Deadline | None
) -> Routed:
    """Route every item in order; once `deadline` has passed, the rest are not run."""
    routed = Routed()
    fits = _fits_alone_check(envelope.id, limits.max_message_bytes)
    out_of_time = False
    for index, item in enumerate(envelope.items):
        if not out_of_time and deadline is not None and deadline.passed():
            out_of_time = True
        if out_of_time:
            routed.results.append(NOT_RUN)
            continue
        route_item(routed, index, item, router, limits=limits, fits=fits)
    return routed


def route_item(
    routed: Routed,
    index: int,
    item: codec.Item,
    router: Router,
    *,
    limits: RouteLimits,
    fits: Callable[[bytes], bool],
) -> None:
    """Route one item into `routed` (also used to re-route a single item when following a plan)."""
    if item.step >= limits.max_steps:
        _fail(routed, index, Failure(reason=STEP_LIMIT, detail=f"step {item.step}", poison_now=True))
        return
    begin_transition()
    try:
        # A private copy: a router that changes its state and then raises leaves the item as
        # it was for the retry, the DLQ or the sink.
        with routing_item(item.id):
            next_state = router(copy_state(item.state))
        step = DONE_STEP if next_state is None else transition_step_name(_router_name(router))
        encoded = None if next_state is None else _encode_next(item, next_state, step, limits.history_limit)
    except PoisonItem as exc:
        step_name = transition_step_name(_router_name(router))
        failure = Failure(exc.reason, exc.detail[:MAX_DETAIL_CHARS], True, type(exc).__name__, step_name)
        _fail(routed, index, failure)
        return
    except Exception as exc:  # noqa: BLE001 - whatever a router raises fails that item alone
        failed_step = transition_step_name(_router_name(router))
        routed.steps[(failed_step, "failed")] += 1
        _fail(routed, index, Failure.of(exc, step=failed_step))
        return
    if encoded is None:
        routed.results.append(DONE)
    elif not fits(encoded):
        _fail(routed, index, Failure(STATE_TOO_LARGE, f"{len(encoded)} bytes", poison_now=True))
        return
    else:
        routed.results.append(NEXT)
        routed.next_items[index] = encoded
    routed.steps[(step, "ok")] += 1


def _fail(routed: Routed, index: int, failure: Failure) -> None:
    routed.results.append(POISON_NOW if failure.poison_now else FAILED)
    routed.failures[index] = failure


def _encode_next(item: codec.Item, state: object, step: str, history_limit: int) -> bytes:
    history = with_history(item.history, step, history_limit) if history_limit else None
    return codec.encode_item(codec.Item(item.id, item.step + 1, 0, state, history))


def _router_name(router: Router) -> str:
    return getattr(router, "__name__", type(router).__name__)


def _fits_alone_check(envelope_id: str, max_bytes: int) -> Callable[[bytes], bool]:
    packer = codec.EnvelopePacker(
        max_bytes=max_bytes, make_id=lambda k: codec.derived_id(envelope_id, f"n{k}"), parent=envelope_id
    )
    return packer.fits_alone
