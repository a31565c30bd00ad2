"""ingest: the filesystem -> SQS loader and its checker (docs/ingest.md#the-protocol).

Layers, bottom up: `fs` (every EFS operation, injectable), `coord` (Redis leases and acks,
fenced Lua), `sender` (part senders: SQS, or nowhere), `parse` (junk, JSON, projection, items);
the protocol's steps in order: `selection` (listing and settle checks), `readahead` (the next
selection made while a batch runs), `claim`, `header`, `batch` (parts, commit); `loader` /
`checker` / `archiver` (the cores the handlers call) and `wiring` (`build_ingest`).
"""

from __future__ import annotations

from runtime.ingest.checker import CheckerResult, run_checker
from runtime.ingest.coord import Coordinator
from runtime.ingest.fs import Fs
from runtime.ingest.layout import Layout
from runtime.ingest.loader import LoaderResult, run_loader
from runtime.ingest.model import Counters, Ingest
from runtime.ingest.sender import DiscardingPartSender, SqsPartSender

__all__ = [
    "CheckerResult",
    "Coordinator",
    "Counters",
    "DiscardingPartSender",
    "Fs",
    "Ingest",
    "Layout",
    "LoaderResult",
    "SqsPartSender",
    "run_checker",
    "run_loader",
]
