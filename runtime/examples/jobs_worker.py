"""A jobs-aware router for the state queue: text statistics as the example job, and the
ingest demo's enrich-and-store for every item that is not a job.

A job is `{"text": "..."}`; its state machine counts the words (one step), then the lines
(another step), then is done: the final state is the job's result. A job without a string
`text` fails (the client sees `failed` with the reason, the item goes to the DLQ).
"""

from __future__ import annotations

from typing import Any

from runtime.examples import enrich
from runtime.jobs import JobsRouter
from runtime.pipeline import PoisonItem, mutation


@mutation
def count_words(state: dict[str, Any]) -> dict[str, Any]:
    state["words"] = len(state["text"].split())
    return state


@mutation
def count_lines(state: dict[str, Any]) -> dict[str, Any]:
    state["lines"] = len(state["text"].splitlines())
    return state


def text_stats(state: Any) -> dict[str, Any] | None:
    if not isinstance(state, dict) or not isinstance(state.get("text"), str):
        raise PoisonItem("no_text", "a text-statistics job needs a string field 'text'")
    if "words" not in state:
        return count_words(state)
    if "lines" not in state:
        return count_lines(state)
    return None


router = JobsRouter(text_stats, fallback=enrich.router)
