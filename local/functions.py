"""Lambda functions run locally: the real `runtime/handlers/<name>.py` handler, called with a
Lambda-like context whose remaining time counts down from the configured timeout, so the
handlers' deadline logic runs exactly as on AWS.

An invocation runs in-process (a thread of the local runtime) or, for crash tests, in a child
process (`python -m local.invoke`), where a `SLUICE_KILL_AT` kill point or a SIGKILL ends
only that invocation, the way a crashed Lambda sandbox ends.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

LOCAL_ACCOUNT = "000000000000"
LOCAL_REGION = "us-east-1"
HANDLER_PACKAGE = "runtime.handlers"
KILL_ENV = "SLUICE_KILL_AT"
# A kill point `os._exit(137)`s (what SIGKILL leaves); a real SIGKILL shows as -9.
KILLED_RETURN_CODES = (137, -9)

Handler = Callable[[Any, Any], Any]


class LambdaContext:
    """The attributes and method of AWS's Python `LambdaContext` that handlers and Powertools use."""

    def __init__(self, function_name: str, timeout_s: float, memory_mb: int = 1024) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{LOCAL_REGION}:{LOCAL_ACCOUNT}:function:{function_name}"
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = f"local/{self.aws_request_id}"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    @property
    def timed_out(self) -> bool:
        return time.monotonic() >= self._deadline


def handler_module(name: str) -> str:
    return f"{HANDLER_PACKAGE}.{name.replace('-', '_')}"


def load_handler(name: str) -> Handler:
    module = importlib.import_module(handler_module(name))
    handler: Handler = module.handler
    return handler


@dataclass
class InvocationResult:
    """What Lambda would report: the response, or the error, and whether it ran out of time."""

    response: Any = None
    error: str | None = None
    timed_out: bool = False
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and not self.timed_out


@dataclass
class FunctionStats:
    invocations: int = 0
    errors: int = 0
    timeouts: int = 0
    throttles: int = 0
    last_error: str | None = None
    # Sums of the integer fields of the responses (the loader reports `records`, `parts_resent`,
    # ...): what the functions say they did, beside what the run observes.
    totals: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, result: InvocationResult) -> None:
        with self.lock:
            self.invocations += 1
            if result.ok and isinstance(result.response, dict):
                self.totals.update(
                    {
                        key: value
                        for key, value in result.response.items()
                        if isinstance(value, int) and not isinstance(value, bool)
                    }
                )
            if result.timed_out:
                self.timeouts += 1
            if result.error is not None:
                self.errors += 1
                self.last_error = result.error

    def throttled(self) -> None:
        with self.lock:
            self.throttles += 1


@dataclass
class KillPlan:
    """Crash tests: arm `SLUICE_KILL_AT=<step>` in invocations until `deaths` of them have died
    there (one armed invocation at a time), so the step is reached whenever work arrives."""

    step: str
    deaths: int = 1
    died: int = 0
    armed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def arm(self) -> dict[str, str]:
        with self.lock:
            if self.armed or self.died >= self.deaths:
                return {}
            self.armed = True
            return {KILL_ENV: self.step}

    def disarm(self, killed: bool) -> None:
        with self.lock:
            self.armed = False
            self.died += int(killed)


@dataclass
class LocalFunction:
    """One function: its handler, timeout, and (for crash tests) per-invocation isolation.

    `handler` defaults to `runtime/handlers/<name>.py`'s, loaded on the first call. `isolate`
    runs every invocation in a child process with the runtime's environment (plus the kill
    point of `kill`, which implies isolation).
    `on_failure(name, n, result)` hears of every failed or timed-out invocation.
    """

    name: str
    timeout_s: float
    memory_mb: int = 1024
    isolate: bool = False
    kill: KillPlan | None = None
    handler: Handler | None = field(default=None, repr=False)
    on_failure: Callable[[str, int, InvocationResult], None] | None = None
    stats: FunctionStats = field(default_factory=FunctionStats)
    _count_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _started: int = 0

    def _next_number(self) -> int:
        with self._count_lock:
            self._started += 1
            return self._started

    def invoke(self, event: Any) -> InvocationResult:
        number = self._next_number()
        isolated = self.isolate or self.kill is not None
        if not isolated:
            self._initialize()
        started = time.monotonic()
        result = self._invoke_in_child(event) if isolated else self._invoke_here(event)
        result.duration_s = time.monotonic() - started
        # A handler that returns after its timeout would have been stopped by Lambda: its
        # response never reaches the trigger.
        result.timed_out = result.timed_out or result.duration_s > self.timeout_s
        self.stats.record(result)
        if not result.ok and self.on_failure is not None:
            self.on_failure(self.name, number, result)
        return result

    def _initialize(self) -> None:
        """Lambda's init phase: the handler's module is imported before the first invocation and
        outside its timeout (init has a limit of its own), so a cold start's imports, slowed by
        every other function starting at once, never time out a local invocation."""
        with self._count_lock:
            if self.handler is None:
                self.handler = load_handler(self.name)

    def _invoke_here(self, event: Any) -> InvocationResult:
        assert self.handler is not None  # _initialize ran
        context = LambdaContext(self.name, self.timeout_s, self.memory_mb)
        try:
            return InvocationResult(response=self.handler(event, context))
        except Exception as exc:  # noqa: BLE001 - Lambda reports any exception as a function error
            return InvocationResult(error=f"{type(exc).__name__}: {exc}")

    def _invoke_in_child(self, event: Any) -> InvocationResult:
        armed = self.kill.arm() if self.kill is not None else {}
        returncode: int | None = None
        try:
            result, returncode = self._run_child(event, {**os.environ, **armed})
        finally:
            if self.kill is not None and armed:
                self.kill.disarm(killed=returncode in KILLED_RETURN_CODES)
        return result

    def _run_child(self, event: Any, environ: Mapping[str, str]) -> tuple[InvocationResult, int | None]:
        command = [sys.executable, "-m", "local.invoke", self.name, str(self.timeout_s), str(self.memory_mb)]
        try:
            finished = subprocess.run(
                command,
                input=orjson.dumps(event),
                capture_output=True,
                env=dict(environ),
                timeout=self.timeout_s + 30,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return InvocationResult(timed_out=True, error="timed out"), None
        if finished.returncode != 0:
            tail = finished.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            error = f"process exited with {finished.returncode}: {tail[0]}".rstrip(": ")
            return InvocationResult(error=error), finished.returncode
        outcome = orjson.loads(finished.stdout)
        return InvocationResult(response=outcome.get("response"), error=outcome.get("error")), 0
