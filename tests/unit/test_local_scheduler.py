"""The local scheduler and the Lambda-like function wrapper (tiny in-test handlers)."""

from __future__ import annotations

import threading
import time

import pytest

from local.functions import KillPlan, LambdaContext, LocalFunction
from local.scheduler import Schedule, Scheduler, parse_interval, scheduled_event


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [
        ("rate(1 minute)", 60),
        ("rate(5 minutes)", 300),
        ("rate(2 hours)", 7200),
        ("rate(1 day)", 86_400),
        ("2s", 2),
        ("500ms", 0.5),
        ("1.5s", 1.5),
        ("1m", 60),
    ],
)
def test_intervals_parse(expression: str, seconds: float) -> None:
    assert parse_interval(expression) == seconds


@pytest.mark.parametrize("expression", ["cron(0 * * * ? *)", "rate(0x minutes)", "0s", "fast", ""])
def test_bad_intervals_are_refused(expression: str) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_interval(expression)


def test_context_counts_down_and_reports_its_identity() -> None:
    context = LambdaContext("loader", timeout_s=0.3)
    first = context.get_remaining_time_in_millis()
    assert 200 < first <= 300
    time.sleep(0.05)
    assert context.get_remaining_time_in_millis() < first
    assert context.function_name == "loader"
    assert context.invoked_function_arn.endswith(":function:loader")
    assert len(context.aws_request_id) == 36
    assert LambdaContext("loader", 1).aws_request_id != context.aws_request_id


def test_function_reports_errors_and_late_responses_as_failures() -> None:
    failures: list[tuple[str, int]] = []

    def boom(event: object, context: object) -> None:
        raise RuntimeError("nope")

    failing = LocalFunction(
        "f", timeout_s=1, handler=boom, on_failure=lambda name, number, _: failures.append((name, number))
    )
    result = failing.invoke({})
    assert result.error == "RuntimeError: nope" and not result.ok
    assert failures == [("f", 1)]

    def slow(event: object, context: LambdaContext) -> dict[str, int]:
        time.sleep(0.25)
        return {"remaining": context.get_remaining_time_in_millis()}

    late = LocalFunction("g", timeout_s=0.2, handler=slow)
    outcome = late.invoke({})
    # Lambda would have stopped it: the response must not count.
    assert outcome.timed_out and not outcome.ok
    assert late.stats.timeouts == 1 and late.stats.invocations == 1


def test_scheduler_ticks_at_its_rate_with_scheduled_events() -> None:
    events: list[dict[str, object]] = []
    function = LocalFunction("ticker", timeout_s=5, handler=lambda event, context: events.append(event))
    scheduler = Scheduler([Schedule(function, every_s=0.1, max_concurrency=1)])
    started = time.monotonic()
    scheduler.start()
    deadline = started + 30  # a loaded machine delays ticks: wait for them, never assert latency
    while len(events) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert scheduler.stop(timeout_s=2)
    elapsed_s = time.monotonic() - started
    # Never faster than its rate: the first tick fires at start, then one per 0.1 s at most.
    assert 5 <= len(events) <= int(elapsed_s / 0.1) + 1
    assert all(event["detail-type"] == "Scheduled Event" for event in events)
    assert events[0]["source"] == "aws.events"
    assert scheduled_event("x")["resources"] == ["arn:aws:events:us-east-1:000000000000:rule/x"]


def test_scheduler_throttles_past_the_concurrency_limit_and_waits_on_stop() -> None:
    running = 0
    most = 0
    lock = threading.Lock()

    def slow(event: object, context: object) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.3)
        with lock:
            running -= 1

    function = LocalFunction("slow", timeout_s=5, handler=slow)
    scheduler = Scheduler([Schedule(function, every_s=0.05, max_concurrency=2)])
    scheduler.start()
    time.sleep(0.5)
    assert scheduler.stop(timeout_s=2)
    assert most == 2
    assert function.stats.throttles > 0
    assert running == 0  # stop() waited for the invocations in flight
    assert not scheduler.busy()


def test_a_kill_plan_arms_one_invocation_at_a_time_until_enough_died() -> None:
    plan = KillPlan("part.sent", deaths=2)
    assert plan.arm() == {"SLUICE_KILL_AT": "part.sent"}
    assert plan.arm() == {}  # another invocation while the armed one runs
    plan.disarm(killed=False)  # it never reached the step
    assert plan.arm() == {"SLUICE_KILL_AT": "part.sent"}
    plan.disarm(killed=True)
    assert plan.arm() == {"SLUICE_KILL_AT": "part.sent"}
    plan.disarm(killed=True)
    assert plan.arm() == {}
