"""Pure logic of plans and outputs: no Redis, no AWS."""

from __future__ import annotations

import random

import orjson
from hypothesis import given
from hypothesis import strategies as st

from runtime import codec
from runtime.pipeline.plan import (
    CONTINUED,
    DONE,
    NEXT,
    POISONED,
    RETRY,
    Failure,
    ItemExtras,
    OutputKind,
    OutputRules,
    Plan,
    backoff_delay_s,
    build_outputs,
    fresh_start,
)
from runtime.pipeline.state import copy_state


def make_envelope(states: list[object], envelope_id: str = "e/1") -> codec.Envelope:
    items = tuple(codec.Item(id=f"i#{n}", step=0, attempt=0, state=s) for n, s in enumerate(states))
    return codec.Envelope(id=envelope_id, parent=None, items=items)


def next_items(envelope: codec.Envelope) -> dict[int, bytes]:
    return {
        i: codec.encode_item(codec.Item(item.id, 1, 0, {"moved": item.state}))
        for i, item in enumerate(envelope.items)
    }


@given(st.integers(min_value=0, max_value=20), st.floats(min_value=0.1, max_value=100), st.integers(0, 900))
def test_backoff_is_exponential_jittered_and_capped(attempt: int, base: float, cap: int) -> None:
    delay = backoff_delay_s(attempt, base_s=base, cap_s=cap, rng=random.Random(attempt))
    ceiling = min(cap, base * 2**attempt)
    assert 0 <= delay <= cap
    assert ceiling / 2 - 1 <= delay <= ceiling + 1


def test_plan_round_trips_and_outputs_are_a_pure_function() -> None:
    envelope = make_envelope([{"n": n} for n in range(6)])
    outcomes = NEXT + DONE + RETRY + NEXT + POISONED + DONE
    extras = {
        2: ItemExtras(delay_s=7, failure=Failure("ValueError")),
        4: ItemExtras(failure=Failure("step limit", "s", step="add_name")),
    }
    rules = OutputRules(max_bytes=4096, history_limit=4)
    first = build_outputs(envelope, outcomes, next_items(envelope), extras, rules)
    again = build_outputs(envelope, outcomes, next_items(envelope), extras, rules)
    assert [o.body for o in first] == [o.body for o in again]
    plan = Plan(outcomes=outcomes, outputs=tuple(first))
    stored = Plan.from_bytes(plan.to_bytes())
    assert stored.outputs == plan.outputs and stored.outcomes == outcomes  # bodies included
    assert stored.digest == Plan(outcomes=outcomes, outputs=tuple(again)).digest
    kinds = [o.kind for o in first]
    assert kinds == [OutputKind.NEXT, OutputKind.RETRY, OutputKind.POISONED, OutputKind.SINK]
    assert all(len(o.planned.id) == 26 for o in first if o.kind is not OutputKind.SINK)
    retry = orjson.loads(first[1].body)
    assert retry["items"][0]["attempt"] == 1 and first[1].planned.delay_s == 7
    assert retry["items"][0]["history"] == ["retry 1: ValueError"]  # failures are history too
    assert plan.needs_complete_mark
    dead = orjson.loads(first[2].body)["items"][0]
    assert dead["dead_letter"] == "step limit"  # the mark a redrive is recognised by
    attributes = {name: value["StringValue"] for name, value in (first[2].attributes or {}).items()}
    assert attributes == {
        codec.ATTR_REASON: "step limit",
        codec.ATTR_DETAIL: "s",
        codec.ATTR_SOURCE: "router",
        codec.ATTR_STEP: "add_name",
        codec.ATTR_ATTEMPTS: "1",
    }


def test_a_redriven_item_starts_over_and_its_history_says_so() -> None:
    marked = codec.Item(
        "i#0", 100, 4, {"n": 0}, ("add_name", "dead-lettered: step limit"), dead_letter="step limit"
    )
    plain = codec.Item("i#1", 3, 1, {"n": 1})
    envelope = codec.decode(codec.encode(codec.Envelope("e/1", None, (marked, plain))))
    fresh, redriven = fresh_start(envelope, history_limit=3)
    assert redriven
    assert fresh.items[0] == codec.Item(
        "i#0", 0, 0, {"n": 0}, ("add_name", "dead-lettered: step limit", "redriven")
    )
    assert fresh.items[1] == plain
    assert fresh_start(fresh, history_limit=3) == (fresh, False)


def test_a_sink_only_plan_needs_no_complete_mark() -> None:
    envelope = make_envelope([{"n": 0}, {"n": 1}])
    outputs = build_outputs(envelope, DONE + DONE, {}, {}, OutputRules(max_bytes=4096))
    assert [o.kind for o in outputs] == [OutputKind.SINK]
    assert not Plan(outcomes=DONE + DONE, outputs=tuple(outputs)).needs_complete_mark


def test_items_left_unrun_by_a_full_envelope_are_repacked_within_the_limit() -> None:
    """A loader packs envelopes to the byte limit; the same items continued under a derived id
    and a parent are larger, so one continuation envelope would break the limit (SQS refuses
    it, and the envelope would loop until its DLQ). They are packed again instead."""
    max_bytes = 2048

    def envelope_with_last_pad(extra: int) -> codec.Envelope:
        pads = ["x" * 90] * 12 + ["x" * (90 + extra)]
        items = tuple(codec.Item(f"i#{n}", 0, 0, {"pad": pad}) for n, pad in enumerate(pads))
        return codec.Envelope(id="batch/0", parent=None, items=items)

    short_by = max_bytes - len(codec.encode(envelope_with_last_pad(0)))
    envelope = envelope_with_last_pad(short_by)
    assert len(codec.encode(envelope)) == max_bytes  # packed to the limit, as the loader may
    count = len(envelope.items)

    outputs = build_outputs(envelope, CONTINUED * count, {}, {}, OutputRules(max_bytes=max_bytes))

    assert len(outputs) == 2 and {o.kind for o in outputs} == {OutputKind.CONTINUED}
    assert all(len(o.body) <= max_bytes for o in outputs)
    continuation_ids = [codec.derived_id(envelope.id, slot) for slot in ("c", "c1")]
    assert [o.planned.id for o in outputs] == continuation_ids
    continuations = [codec.decode(o.body) for o in outputs]
    assert [item for c in continuations for item in c.items] == list(envelope.items)
    assert all(c.parent == envelope.id for c in continuations)


def test_fifo_next_envelopes_never_mix_groups_and_hold_at_most_max_items() -> None:
    groups = ["a", "a", "a", "b", "a", "a"]
    envelope = make_envelope([{"g": g} for g in groups])
    outputs = build_outputs(
        envelope,
        NEXT * 6,
        next_items(envelope),
        {},
        OutputRules(max_bytes=4096, max_items=2, group_of=lambda i: groups[i]),
    )
    packed = [([i["id"] for i in orjson.loads(o.body)["items"]], o.group) for o in outputs]
    assert packed == [
        (["i#0", "i#1"], "a"),
        (["i#2"], "a"),
        (["i#3"], "b"),
        (["i#4", "i#5"], "a"),
    ]


def test_copy_state_is_deep_for_json_containers_only() -> None:
    original = {"a": [1, {"b": 2}], "c": "text", "d": None}
    copied = copy_state(original)
    assert copied == original
    assert (
        copied is not original and copied["a"] is not original["a"] and copied["a"][1] is not original["a"][1]
    )
    assert copied["c"] is original["c"]  # immutable leaves are shared


def test_a_mutation_copies_its_state_passed_by_keyword_too() -> None:
    from runtime.pipeline import mutation

    @mutation
    def tag(state: dict[str, list[int]], value: int) -> dict[str, list[int]]:
        state["tags"].append(value)
        return state

    original = {"tags": [1]}
    assert tag(state=original, value=2) == {"tags": [1, 2]}
    assert tag(original, 3) == {"tags": [1, 3]}
    assert original == {"tags": [1]}
