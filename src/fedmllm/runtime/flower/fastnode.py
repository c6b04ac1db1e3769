"""``flower-supernode`` with a shorter idle poll, for federations on one machine.

A flwr 1.42 SuperNode that finds no message waiting sleeps 3 s before it asks its SuperLink
again, and looks for its ClientApp's reply every 0.5 s (``flwr.supernode.
start_client_internal``), so every round waits up to 3.5 s on top of the training. On loopback,
where a request costs nothing, ``fedmllm flower local`` runs its SuperNodes through this module,
which shortens those two sleeps to ``FEDMLLM_SUPERNODE_POLL`` seconds (default 0.25) and a
tenth of it, and is otherwise ``flower-supernode`` with the same arguments. A real deployment
runs the stock ``flower-supernode``.
"""

from __future__ import annotations

import os
import sys
import time as _time
import types

IDLE_SLEEP = 3.0  # flwr 1.42's idle poll of the SuperLink
REPLY_SLEEP = 0.5  # flwr 1.42's poll for the ClientApp's reply


def _patched_time(poll: float) -> types.ModuleType:
    fast = types.ModuleType("time")
    fast.__dict__.update(_time.__dict__)
    shorter = {IDLE_SLEEP: poll, REPLY_SLEEP: poll / 10}

    def sleep(seconds: float) -> None:
        _time.sleep(shorter.get(seconds, seconds))

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
