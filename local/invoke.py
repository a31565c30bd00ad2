"""One Lambda invocation in a child process: `python -m local.invoke <function> <timeout_s>
<memory_mb>` reads the event (JSON) on stdin and writes `{"response", "error"}` on stdout.

The local runtime uses it to isolate invocations that may die (crash tests): a kill point or a
SIGKILL ends this process, which the parent reports as a failed invocation, as Lambda would.
"""

from __future__ import annotations

import os
import sys

import orjson

from local.functions import LambdaContext, load_handler


def main(argv: list[str]) -> int:
    name, timeout_s, memory_mb = argv[0], float(argv[1]), int(argv[2])
    event = orjson.loads(sys.stdin.buffer.read())
    # Handlers log to stdout (Powertools); keep the real stdout for the result alone.
    result_fd = os.dup(1)
    os.dup2(2, 1)
    handler = load_handler(name)
    try:
        outcome = {"response": handler(event, LambdaContext(name, timeout_s, memory_mb)), "error": None}
    except Exception as exc:  # noqa: BLE001 - reported to the parent as a function error
        outcome = {"response": None, "error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.flush()
    os.write(result_fd, orjson.dumps(outcome, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
