"""Named kill points for crash tests, shared by every system: `SLUICE_KILL_AT=<step>` makes
the process `_exit(137)` (what a SIGKILL leaves behind) the first time it reaches that step.
The variable is read when the process starts.

`<step>=<detail>` narrows a step to one detail (e.g. `parse.file=2026-01-01T00.json`, a file
that "kills the loader"). Steps: claim.mid, header.before, part.published, part.sent,
commit.before_rename, commit.after_rename, link.before_unlink, reject.before_link, parse.file.
"""

from __future__ import annotations

import os
import sys

KILL_ENV = "SLUICE_KILL_AT"
KILLED_EXIT_CODE = 137


# Read once: the loader passes a kill point per file, and an environment lookup per call cost
# more than the rest of the check. Crash tests set it in the environment of a fresh process.
_WANTED = os.environ.get(KILL_ENV)


def kill_point(step: str, detail: str | None = None) -> None:
    wanted = _WANTED
    if not wanted:
        return
    if wanted == step or (detail is not None and wanted == f"{step}={detail}"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(KILLED_EXIT_CODE)
