"""The moto server of the local runtime and the tests: stock moto with one fix.

    python -m local.moto_server -H HOST -p PORT    (moto.server's own arguments)

moto 5.2.5's SQS long poll spins on a FIFO queue. `receive_message` passes over the queue and,
finding nothing it may deliver, waits "until a message is visible". When the visible messages all
belong to a message group already in flight (the FIFO router's or the relay drain's next message,
behind the one being processed), they are visible but not deliverable: the wait returns at once and
the pass runs again, at full speed, until WaitTimeSeconds ends — a whole core per waiting poller
(measured: 2.98 s of moto's CPU for a 3 s receive). The fix waits `BLOCKED_POLL_S` between such
passes: a message sent meanwhile still wakes the wait at once, and an in-flight message whose
visibility timeout ends is seen within `BLOCKED_POLL_S` (moto announces neither that nor a
delete; with no visible message at all it looks again every second, as before). A group freed by
a delete opens on the next ReceiveMessage, not during a wait already under way: moto reads the
in-flight groups once per call, patched or not.

The patch is checked against the pinned moto (`PINNED_MOTO`, as requirements-dev.txt pins it):
another version refuses to start until the patch has been re-checked.
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from typing import Any

PINNED_MOTO = "5.2.5"
BLOCKED_POLL_S = 0.05


def patch_blocked_fifo_long_poll() -> None:
    """Between the passes of a long poll, wait `BLOCKED_POLL_S` instead of not at all when the
    queue's visible messages are all undeliverable (moto's `Queue.wait_for_messages`)."""
    from moto.sqs.models import Queue

    def wait_for_messages(self: Any, timeout: int) -> None:
        with self._messages_lock:
            if self.messages:
                self._messages_lock.wait(timeout=min(timeout, BLOCKED_POLL_S))
            else:
                self._messages_lock.wait_for(lambda: self.messages, timeout=timeout)

    Queue.wait_for_messages = wait_for_messages  # type: ignore[method-assign]


def require_moto(pinned: str, patches: str) -> None:
    """Refuse to patch a moto other than the one the patches in `patches` were checked against."""
    installed = version("moto")
    if installed != pinned:
        raise SystemExit(
            f"moto {installed} is installed; the patches in {patches} were checked against {pinned}: "
            "re-check every patch, then move its PINNED_MOTO"
        )


def check_moto_version() -> None:
    require_moto(PINNED_MOTO, "local/moto_server.py")


def main(argv: list[str] | None = None) -> None:
    check_moto_version()
    patch_blocked_fifo_long_poll()
    from moto.server import main as moto_main

    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
