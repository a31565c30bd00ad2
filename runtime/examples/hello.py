"""The original's hello/world machine: `{}` → `{greeting}` → `{greeting, name}` → done."""

from __future__ import annotations

from typing import Any

from runtime.pipeline import mutation


@mutation
def add_greeting(state: dict[str, Any]) -> dict[str, Any]:
    state["greeting"] = "hello"
    return state


@mutation
def add_name(state: dict[str, Any]) -> dict[str, Any]:
    state["name"] = "world"
    return state


def router(state: dict[str, Any]) -> dict[str, Any] | None:
    if "greeting" not in state:
        return add_greeting(state)
    if "name" not in state:
        return add_name(state)
    return None
