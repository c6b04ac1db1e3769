"""Faults for a running ``LocalFederation`` (``fedmllm.runtime.flower.local``): kill a
SuperNode as a crash would, start it again, find the ClientApp processes working for it.

They use what the federation exposes: its ``nodes`` (processes, node ids), its ``starter``
(start, wait, stop one node), its ``lock`` and ``write_record``.
"""

from __future__ import annotations

import time

import psutil

from fedmllm.runtime.flower.local import FederationError, LocalFederation

# flwr 1.42: SuperNodes heartbeat every 30 s; the SuperLink calls a node offline after 2 x that.
HEARTBEAT_LAPSE = 2 * 30.0 + 5.0
_NOT_ACTIVATED = "Failed to activate SuperNode"


def kill_supernode(fed: LocalFederation, i: int) -> None:
    """SIGKILL SuperNode ``i`` with its SuperExec and ClientApp processes (a crash)."""
    with fed.lock:
        fed.starter.stop(fed.nodes[i], kill=True)


def restart_supernode(fed: LocalFederation, i: int, timeout: float | None = None) -> None:
    """Stop SuperNode ``i`` if it still runs and start it again (same config and key).

    Without authentication the SuperLink gives the new process a new node id (the old id
    stays "online" until its heartbeat lapses). With authentication the node keeps its id (it
    belongs to the registered key), but after a crash the SuperLink refuses to activate it
    again ("Failed to activate SuperNode", exit code 305) until the dead node's heartbeat
    lapses, up to 2 x 30 s after its last heartbeat: we retry until then.
    """
    with fed.lock:
        node = fed.nodes[i]
        fed.starter.stop(node)
        node.restarts += 1
        limit = timeout if timeout is not None else fed.start_timeout + HEARTBEAT_LAPSE
        deadline = time.monotonic() + limit
        while True:
            fed.starter.start(node)
            try:
                fed.starter.wait([node])
                break
            except FederationError:
                text = node.log_text()
                fed.starter.stop(node)
                if _NOT_ACTIVATED not in text or time.monotonic() > deadline:
                    raise
                time.sleep(3.0)
        fed.write_record()


def clientapp_pids(fed: LocalFederation, i: int) -> list[int]:
    """PIDs of SuperNode ``i``'s ClientApp processes now: the ``flwr-clientapp`` ones working
    on a message, or the warm worker (always there)."""
    node = fed.nodes[i]
    if fed.clientapp == "warm":
        return [node.worker.pid] if node.worker and node.worker.alive() else []
    pid = fed.supernode_pid(i)
    if pid is None:
        return []
    found = []
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    for child in children:
        try:
            if any("flwr-clientapp" in part for part in child.cmdline()):
                found.append(child.pid)
        except psutil.Error:
            continue
    return found
