"""The SuperNodes of a local federation: stock ``flower-supernode`` processes.

:class:`NodeStarter` registers the nodes' keys (``flwr supernode register``), starts each node
(and, for ``clientapp="warm"``, its ClientApp worker) and waits until the node logs the id the
SuperLink gave it (``SuperNode ID: N``, flwr 1.42's start-up line). A port that was taken
between picking and binding is retried once with another.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .certs import NodeKeys, TlsFiles, generate_node_keys
from .procs import HOST, FederationError, Proc, exe, free_ports, last_line, log_tail
from .runs import FlwrCli

_NODE_ID_RE = re.compile(r"SuperNode ID: (\d+)")
_ADDR_IN_USE = "address already in use"


@dataclass
class Node:
    """One SuperNode: its partition and config, its processes, the id the SuperLink gave it."""

    partition_id: int
    node_config: dict[str, Any]
    config_file: Path
    home: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)  # CUDA_VISIBLE_DEVICES with --gpus
    keys: NodeKeys | None = None
    node_id: int | None = None
    port: int = 0
    proc: Proc | None = None
    worker: Proc | None = None  # clientapp="warm": the long-lived ClientApp process
    restarts: int = 0
    log_offset: int = 0  # where the current process's part of the log starts

    def log_text(self) -> str:
        """The log of the node's current process."""
        return log_tail(self.log_path, self.log_offset)

    def record(self) -> dict[str, Any]:
        return {
            "partition_id": self.partition_id,
            "pid": self.proc.pid if self.proc else None,
            "clientapp_worker_pid": self.worker.pid if self.worker else None,
            "node_id": self.node_id, "runtime_api_port": self.port,
            "node_config": self.node_config, "env": self.env, "log": str(self.log_path),
            "restarts": self.restarts,
        }


class Federation(Protocol):
    """What :class:`NodeStarter` needs of its federation (``federation.LocalFederation``)."""

    nodes: list[Node]
    cli: FlwrCli
    connection: str
    tls: TlsFiles | None
    clientapp: str
    dir: Path
    logs_dir: Path
    start_timeout: float

    @property
    def address(self) -> str: ...

    def proc_env(self, home: Path, extra: Mapping[str, str] | None = None
                 ) -> dict[str, str]: ...

    def superlink_alive(self) -> bool: ...


class NodeStarter:
    """Starts, waits for and stops the SuperNodes of ``fed``."""

    def __init__(self, fed: Federation) -> None:
        self.fed = fed

    def register(self, keys_dir: Path) -> None:
        """A key pair per node, registered with the SuperLink (which gives the node id)."""
        for node in self.fed.nodes:
            node.keys = generate_node_keys(keys_dir, f"supernode-{node.partition_id}")
            data = self.fed.cli.json("supernode", "register", str(node.keys.public_key),
                                     self.fed.connection)
            node.node_id = int(data["node-id"])

    def _tls_args(self, *, server: bool) -> list[str]:
        tls = self.fed.tls
        if tls is None:
            return ["--insecure"]
        args = ["--root-certificates", str(tls.ca_cert)]
        if server:  # the node's own Runtime API (SuperExec/ClientApp -> SuperNode) on TLS too
            args += ["--ssl-certfile", str(tls.server_cert), "--ssl-keyfile",
                     str(tls.server_key), "--ssl-ca-certfile", str(tls.ca_cert)]
        return args

    def node_argv(self, node: Node) -> list[str]:
        argv = [exe("flower-supernode"), "--superlink", self.fed.address, "--host", HOST,
                "--port", str(node.port), "--node-config", str(node.config_file),
                *self._tls_args(server=True)]
        if node.keys is not None:
            argv += ["--auth-supernode-private-key", str(node.keys.private_key)]
        if self.fed.clientapp == "warm":
            argv += ["--isolation", "process"]
        return argv

    def worker_argv(self, node: Node) -> list[str]:
        assert node.proc is not None and node.proc.pid is not None
        return [sys.executable, "-m", "fedmllm.runtime.flower.local", "clientapp-worker",
                "--runtime-api-address", f"{HOST}:{node.port}",
                "--parent-pid", str(node.proc.pid), *self._tls_args(server=False)]

    def start(self, node: Node) -> None:
        """Start the node's processes on a fresh port (without waiting for them)."""
        (node.port,) = free_ports(1)
        node.log_offset = node.log_path.stat().st_size if node.log_path.exists() else 0
        env = self.fed.proc_env(node.home, node.env)
        node.proc = Proc(f"supernode-{node.partition_id}", self.node_argv(node), env,
                         node.log_path).start(self.fed.dir)
        if self.fed.clientapp == "warm":  # it retries until the node's Runtime API is up
            log = self.fed.logs_dir / f"clientapp-{node.partition_id}.log"
            node.worker = Proc(f"clientapp-{node.partition_id}", self.worker_argv(node), env,
                               log).start(self.fed.dir)

    def stop(self, node: Node, *, kill: bool = False) -> None:
        """SIGTERM (or, ``kill``, SIGKILL) the node's processes and their children."""
        for proc in (node.worker, node.proc):
            if proc is not None:
                proc.kill() if kill else proc.terminate()

    def _check(self, node: Node, retried: set[int]) -> bool:
        """Whether ``node`` is connected; raises if it died (restarts it once on a taken
        port)."""
        assert node.proc is not None and node.proc.popen is not None
        text = node.log_text()
        if (m := _NODE_ID_RE.search(text)) is not None:
            node.node_id = int(m.group(1))
            return True
        if not node.proc.alive():
            if _ADDR_IN_USE in text and node.partition_id not in retried:
                retried.add(node.partition_id)
                self.stop(node)
                self.start(node)
                return False
            raise FederationError(
                f"flower-supernode {node.partition_id} exited with code "
                f"{node.proc.popen.returncode} during start: {last_line(text)} "
                f"(log: {node.log_path})")
        worker = node.worker
        if worker is not None and worker.popen is not None and not worker.alive():
            raise FederationError(
                f"ClientApp worker {node.partition_id} exited with code "
                f"{worker.popen.returncode}: {last_line(log_tail(worker.log_path))} "
                f"(log: {worker.log_path})")
        return False

    def wait(self, nodes: list[Node]) -> None:
        """Wait until every one of ``nodes`` is connected to the SuperLink."""
        deadline = time.monotonic() + self.fed.start_timeout
        pending, retried = list(nodes), set()
        while pending:
            pending = [n for n in pending if not self._check(n, retried)]
            if not pending:
                return
            if not self.fed.superlink_alive():
                raise FederationError("flower-superlink died while SuperNodes connected "
                                      f"(log: {self.fed.logs_dir / 'superlink.log'})")
            if time.monotonic() > deadline:
                raise FederationError(
                    f"flower-supernode {pending[0].partition_id} not connected after "
                    f"{self.fed.start_timeout:.0f} s (log: {pending[0].log_path})")
            time.sleep(0.2)
