"""Routers, mutations and the copy semantics that keep mutations pure.

A *state* is a JSON value (usually a dict) carried by one envelope item. A *router* looks at a
state and returns the next one, or `None` when the item is done::

    @mutation
    def add_greeting(state):
        state["greeting"] = "hello"      # changes a private copy, never the caller's object
        return state

    def router(state):
        if "greeting" not in state:
            return add_greeting(state)
        return None

**A router runs once per envelope, as far as sluice can see.** Before any user code runs, a
delivery reads the ledger; an envelope that already has an outcome plan (bodies included) is
replayed as recorded, without calling the router again. The router is called a second time
for the same item only when a run died before its plan was written, or when two workers raced
while Redis was down — so its side effects must be idempotent, keyed by the item id (the
README shows the pattern). A racing run whose outputs differ from the plan recorded meanwhile
is followed by the recorded plan, and its delivery is dead-lettered with reason
`plan_mismatch` (metric and alarm `PlanMismatch`). The router always gets a private copy of
the item's state: a change it makes and then raises on never reaches the retry, the DLQ or
the sink.

Copy semantics are the framework's job: `@mutation` hands the function a copy of its state
argument, so it may change that copy in place and return it. The copy is made by a JSON-aware
recursive copy (dicts and lists only: every other JSON value is immutable), several times
cheaper than `copy.deepcopy`. The mutation's name is also recorded as the *step name* of the
transition, which is how logs and metrics are broken down per step.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec, TypeVar

State = Any
"""A JSON value: dict, list, str, int, float, bool or None."""

Router = Callable[[State], State | None]
"""`router(state)` returns the next state, or None when the item is done."""

P = ParamSpec("P")
R = TypeVar("R")

_CONTAINERS = (dict, list)


def copy_state(value: State) -> State:
    """A deep copy of a JSON value that shares only immutable leaves."""
    kind = type(value)
    if kind is dict:
        return {
            key: copy_state(inner) if type(inner) in _CONTAINERS else inner for key, inner in value.items()
        }
    if kind is list:
        return [copy_state(inner) if type(inner) in _CONTAINERS else inner for inner in value]
    return value


class _StepTracker(threading.local):
    """The name of the last mutation applied in this thread (the current transition's step),
    and the id of the item being routed."""

    name: str | None = None
    item_id: str | None = None


_tracker = _StepTracker()


def mutation(function: Callable[P, R]) -> Callable[P, R]:
    """Make `function(state, *args, **kwargs)` pure from its caller's point of view.

    The first argument is copied before the call, so the function may change it in place; its
    `__name__` becomes the step name of the transition that calls it.
    """
    name = function.__name__
    state_parameter = next(iter(inspect.signature(function).parameters), None)

    @functools.wraps(function)
    def pure(*args: P.args, **kwargs: P.kwargs) -> R:
        _tracker.name = name
        if args:
            args = (copy_state(args[0]), *args[1:])  # type: ignore[assignment]
        elif state_parameter in kwargs:
            kwargs[state_parameter] = copy_state(kwargs[state_parameter])  # type: ignore[index]
        return function(*args, **kwargs)

    return pure


def begin_transition() -> None:
    """Forget the previous transition's step name (called before each router call)."""
    _tracker.name = None


@contextlib.contextmanager
def routing_item(item_id: str) -> Iterator[None]:
    """Around the framework's calls of a router (and its hooks) for one item."""
    _tracker.item_id = item_id
    try:
        yield
    finally:
        _tracker.item_id = None


def routed_item_id() -> str | None:
    """The id of the item the framework is routing on this thread (None outside a transition):
    what lets a router tell a job (its item id is the job id) from a gateway body that merely
    has a job's fields."""
    return _tracker.item_id


def transition_step_name(default: str) -> str:
    """The step name of the transition just routed: its last mutation, else `default`."""
    return _tracker.name or default


def load_router(spec: str) -> Router:
    """Resolve `"package.module:attribute"` to a router callable."""
    import importlib

    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        from runtime.errors import ConfigError

        raise ConfigError(f"router {spec!r} must look like 'package.module:attribute'")
    target = getattr(importlib.import_module(module_name), attribute)
    if not callable(target):
        from runtime.errors import ConfigError

        raise ConfigError(f"router {spec!r} is not callable")
    return target  # type: ignore[no-any-return]
