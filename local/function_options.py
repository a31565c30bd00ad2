"""How a local run drives its functions (schedules, concurrency, crash-test isolation). Every
system (`local.systems`) builds on this."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from local.functions import InvocationResult, KillPlan, LocalFunction


@dataclass(frozen=True)
class FunctionOptions:
    """How the run drives functions: schedules, concurrency, and crash-test isolation."""

    schedules: Mapping[str, str] = field(default_factory=dict)
    use_config_schedules: bool = False
    concurrency: Mapping[str, int] = field(default_factory=dict)
    isolate: frozenset[str] = frozenset()
    kill_at: Mapping[str, tuple[str, int]] = field(default_factory=dict)  # name -> (step, deaths)
    on_failure: Callable[[str, int, InvocationResult], None] | None = None

    def function(self, name: str, timeout_s: float, memory_mb: int) -> LocalFunction:
        return LocalFunction(
            name=name,
            timeout_s=timeout_s,
            memory_mb=memory_mb,
            isolate=name in self.isolate,
            kill=KillPlan(*self.kill_at[name]) if name in self.kill_at else None,
            on_failure=self.on_failure,
        )
