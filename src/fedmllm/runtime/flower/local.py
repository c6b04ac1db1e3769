"""``fedmllm flower local``'s federation: start it, clean up after a crashed launcher, and the
warm ClientApp worker's entry point.

:func:`start_federation` starts one ``flower-superlink`` and N ``flower-supernode`` processes
on free 127.0.0.1 ports (:mod:`.federation`; TLS and SuperNode authentication by default),
all stock Flower 1.42 commands. What we rely on in Flower, and why, is in
``docs/flower-internals.md``. The pieces: :mod:`.procs` (process groups, through psutil),
:mod:`.tomlconf` (the TOML files and environment of Flower's commands), :mod:`.supernodes`,
:mod:`.runs` (``flwr run`` / ``log`` / ``list`` / ``stop``), :mod:`.certs`.

``python -m fedmllm.runtime.flower.local clientapp-worker --runtime-api-address ADDR`` is the
warm ClientApp: one long-lived process that serves a SuperNode started with ``--isolation
process`` in place of flwr's ``flwr-clientapp`` (see :mod:`.flwr_internals`).
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import psutil

from .federation import CLIENTAPP_MODES, START_TIMEOUT, LocalFederation
from .procs import FederationError, pid_alive, signal_tree, tree
from .runs import AppRun, RunResult

__all__ = [
    "CLIENTAPP_MODES",
    "AppRun",
    "FederationError",
    "LocalFederation",
    "RunResult",
    "kill_recorded",
    "pid_alive",
    "start_federation",
]

#: What the command line of a process we start names (``kill_recorded`` touches no other).
_OURS = ("flower-super", "clientapp-worker")


def start_federation(out_dir: Path, num_supernodes: int, *, insecure: bool = False,
                     node_configs: list[dict] | None = None, env: dict | None = None,
                     supernode_auth: bool | None = None, start_timeout: float = START_TIMEOUT,
                     clientapp: str = "subprocess", gpus: Sequence[str] | None = None
                     ) -> LocalFederation:
    """Start a SuperLink and ``num_supernodes`` SuperNodes on loopback; return the handle.

    TLS by default (certificates under ``out_dir/flower/certs``) with SuperNode
    authentication; ``insecure=True`` for plain HTTP without authentication. SuperNode ``i``
    gets the node config ``partition-id=i num-partitions=N`` updated with ``node_configs[i]``,
    and ``CUDA_VISIBLE_DEVICES=gpus[i % len(gpus)]`` when ``gpus`` is given (round-robin).
    Logs go to ``out_dir/flower/logs/``, the PIDs to ``out_dir/flower/processes.json``.
    ``clientapp="warm"``: one long-lived ClientApp process per SuperNode instead of flwr's
    one process per message.
    """
    return LocalFederation(out_dir, num_supernodes, insecure=insecure,
                           supernode_auth=supernode_auth, node_configs=node_configs, env=env,
                           start_timeout=start_timeout, clientapp=clientapp,
                           gpus=gpus).start()


def kill_recorded(out_dir: Path) -> list[int]:
    """SIGKILL what ``out_dir/flower/processes.json`` lists (after a crash of the parent),
    with their process trees.

    Only PIDs whose command line still names one of our Flower processes are touched (PIDs
    get reused). Returns the PIDs signalled.
    """
    path = Path(out_dir) / "flower" / "processes.json"
    if not path.exists():
        return []
    rec = json.loads(path.read_text(encoding="utf-8"))
    pids = [rec.get("superlink")]
    for node in rec.get("supernodes", []):
        pids += [node.get("pid"), node.get("clientapp_worker_pid")]
    killed = []
    for pid in pids:
        if not isinstance(pid, int) or not pid_alive(pid):
            continue
        try:
            cmd = " ".join(psutil.Process(pid).cmdline())
        except psutil.Error:
            continue
        if any(name in cmd for name in _OURS):
            signal_tree(pid, signal.SIGKILL, [psutil.Process(pid), *tree(pid)], group=True)
            killed.append(pid)
    return killed


def main(argv: list[str] | None = None) -> int:
    """``python -m fedmllm.runtime.flower.local clientapp-worker --runtime-api-address ...``"""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m fedmllm.runtime.flower.local")
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("clientapp-worker", help="a long-lived ClientApp for one SuperNode")
    worker.add_argument("--runtime-api-address", required=True)
    worker.add_argument("--insecure", action="store_true")
    worker.add_argument("--root-certificates", default=None)
    worker.add_argument("--parent-pid", type=int, default=None)
    args = parser.parse_args(argv)
    from .flwr_internals import serve_clientapp_tasks

    serve_clientapp_tasks(args.runtime_api_address, insecure=args.insecure,
                          root_certificates=args.root_certificates, parent_pid=args.parent_pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
