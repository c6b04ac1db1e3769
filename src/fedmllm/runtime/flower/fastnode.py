"""``flower-supernode`` with a shorter idle poll, for federations on one machine.

A flwr 1.42 SuperNode that finds no message waiting sleeps 3 s before it asks its SuperLink
again (``flwr.supernode.start_client_internal``), so every round waits up to 3 s before a node
starts training. On loopback, where a request costs nothing, ``fedmllm flower local`` runs its
SuperNodes through this module, which shortens that one sleep to ``FEDMLLM_SUPERNODE_POLL``
seconds (default 0.25) and is otherwise ``flower-supernode`` with the same arguments. A real
deployment runs the stock ``flower-supernode``.
"""

from __future__ import annotations

import os
import sys
import time as _time
import types

IDLE_SLEEP = 3.0  # flwr 1.42's idle poll of the SuperLink


def _patched_time(poll: float) -> types.ModuleType:
    fast = types.ModuleType("time")
    fast.__dict__.update(_time.__dict__)

    def sleep(seconds: float) -> None:
        _time.sleep(poll if seconds == IDLE_SLEEP else seconds)

    fast.sleep = sleep
    return fast


def main() -> int:
    from flwr.supernode import start_client_internal
    from flwr.supernode.cli import flower_supernode

    poll = float(os.environ.get("FEDMLLM_SUPERNODE_POLL", "0.25"))
    start_client_internal.time = _patched_time(poll)
    sys.argv[0] = "flower-supernode"
    return flower_supernode()


if __name__ == "__main__":
    sys.exit(main())
