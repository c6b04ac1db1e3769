"""Named points where a test can kill the process, to prove that resuming works from anywhere.

``FEDMLLM_FAILPOINT=<name>:<n>`` in the environment makes the process send itself SIGKILL —
no clean-up, no ``finally``, exactly like a crash or an out-of-memory kill — the ``n``-th time
it passes :func:`failpoint` ``(name, n)`` (``n`` is the round or the client count);
``<name>:<n>:pause`` makes it sleep there instead (up to :data:`PAUSE` seconds), so that a test
can interrupt a run at a known point, however fast the run is. Without the variable
:func:`failpoint` does nothing but one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import time

PAUSE = 120.0
"""Seconds a ``:pause`` failpoint sleeps (a Ctrl-C ends the sleep as it ends a run)."""


def failpoint(name: str, n: int) -> None:
    """Kill this process with SIGKILL if ``FEDMLLM_FAILPOINT`` is ``"<name>:<n>"``; sleep
    :data:`PAUSE` seconds if it is ``"<name>:<n>:pause"``."""
    target = os.environ.get("FEDMLLM_FAILPOINT")
    if target and target == f"{name}:{n}":
        os.kill(os.getpid(), signal.SIGKILL)
    elif target and target == f"{name}:{n}:pause":
        time.sleep(PAUSE)
