"""ingest: the filesystem -> SQS loader and its checker (DESIGN "The ingest batch protocol").

Layers, bottom up: `fs` (every EFS operation, injectable), `coord` (Redis leases and acks,
fenced Lua), `sender` (SQS sink), `parse` (junk, JSON, projection, items), `claim` / `batch`
(the protocol), `loader` / `checker` (the cores the handlers call).
"""

from __future__ import annotations

from runtime.ingest.checker import CheckerResult, run_checker
from runtime.ingest.coord import Coordinator
from runtime.ingest.fs import Fs
from runtime.ingest.layout import Layout
from runtime.ingest.loader import LoaderResult, run_loader
from runtime.ingest.model import Counters, Ingest
from runtime.ingest.sender import DiscardingSink, SqsSink

__all__ = [
    "CheckerResult",
    "Coordinator",
    "Counters",
    "DiscardingSink",
    "Fs",
    "Ingest",
    "Layout",
    "LoaderResult",
    "SqsSink",
    "run_checker",
    "run_loader",
]
