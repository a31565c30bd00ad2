"""`python -m runtime.ingest.helper <fd>`: one helper process of a loader invocation.

Reads `(work, share)` pickled on stdin, runs `work(share)`, and writes `("ok", result)` or
`("error", traceback)` pickled to file descriptor `<fd>` (stdout stays the helper's log).
See `runtime/ingest/processes.py`.
"""

from __future__ import annotations

import os
import pickle
import sys
import traceback
from typing import Any


def main(outcome_fd: int) -> None:
    try:
        work, share = pickle.load(sys.stdin.buffer)  # noqa: S301 - our own parent wrote it
        outcome: tuple[str, Any] = ("ok", work(share))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it there
        outcome = ("error", traceback.format_exc())
    with os.fdopen(outcome_fd, "wb") as out:
        pickle.dump(outcome, out)


if __name__ == "__main__":
    main(int(sys.argv[1]))
