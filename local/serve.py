"""`python -m local --serve`: keep redis-server, the moto server and the provisioned resources
up (no writer, no functions) until interrupted, with their endpoints and names in a small state
file the operator CLI reads (`sluice … --local`)."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Any

from rich.console import Console

from local.environment import LocalEnvironment, local_environment

DEFAULT_STATE_FILE = Path("build/local-serve.json")


def state_of(environment: LocalEnvironment) -> dict[str, Any]:
    names = environment.provisioned.names
    return {
        "env": environment.config.name,
        "prefix": environment.config.prefix,
        "aws_endpoint_url": environment.aws_endpoint_url,
        "redis_url": environment.redis_url,
        "share": str(environment.share),
        "queue_urls": environment.provisioned.queue_urls,
        "results_bucket": names.results_bucket,
        "ledger_table": names.ledger_table,
    }


def write_state(path: Path, environment: LocalEnvironment) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(state_of(environment), indent=2))
    temporary.replace(path)


def serve(console: Console, config: Any, *, share: Path | None, state_file: Path) -> int:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with local_environment(config=config, share=share) as environment:
        write_state(state_file, environment)
        console.print(
            f"sluice local (serving): redis {environment.redis_url}, moto {environment.aws_endpoint_url}, "
            f"share {environment.share}; state in {state_file}; Ctrl-C stops"
        )
        try:
            stop.wait()
        finally:
            state_file.unlink(missing_ok=True)
    return 0
