"""``flower-supernode`` with a shorter idle poll, for federations on one machine.

A flwr 1.42 SuperNode that finds no message waiting sleeps 3 s before it asks its SuperLink
again, and looks for its ClientApp's reply every 0.5 s (``flwr.supernode.
start_client_internal``), so every round waits up to 3.5 s on top of the training. On loopback,
where a request costs nothing, ``fedmllm flower local`` runs its SuperNodes through this module
(``python -m fedmllm.runtime.flower.fastnode``), which shortens those two sleeps to
``FEDMLLM_SUPERNODE_POLL`` seconds (default 0.25) and a tenth of it, and is otherwise
``flower-supernode`` with the same arguments. A real deployment runs the stock
``flower-supernode``. The patch itself lives in :mod:`.flwr_internals` (it needs flwr's
non-public modules).
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    from .flwr_internals import run_fast_supernode

    return run_fast_supernode(float(os.environ.get("FEDMLLM_SUPERNODE_POLL", "0.25")))


if __name__ == "__main__":
    sys.exit(main())
