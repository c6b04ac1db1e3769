"""A Flower 1.42 Deployment Engine federation on loopback: one SuperLink, N SuperNodes.

Stock commands only: ``flower-superlink`` serves the Fleet, Control and Runtime APIs on one
HTTP(S) port (``--host``/``--port``); each ``flower-supernode`` dials it (``--superlink``) and
serves its own Runtime API on a port of its own (``--port``, default 9094); ``flwr supernode
register`` registers the nodes' public keys; ``flwr run`` / ``flwr log`` / ``flwr list`` /
``flwr stop`` drive the runs (:mod:`.runs`). TLS (a CA and server certificate made offline,
:mod:`.certs`) and SuperNode authentication are on unless ``insecure``.

SuperNode ``i`` holds partition ``i`` (node config ``partition-id=i num-partitions=N`` and
``node_configs[i]``) and, with ``gpus``, sees only device ``gpus[i % len(gpus)]``
(``CUDA_VISIBLE_DEVICES``, which its SuperExec and ClientApp processes inherit). With
``clientapp="warm"`` a SuperNode runs with ``--isolation process`` and a long-lived ClientApp
worker (:mod:`.local`'s ``clientapp-worker``) serves it instead of flwr's process per
message. Every process is recorded in ``out_dir/flower/processes.json`` and logs to
``out_dir/flower/logs/``.
"""

from __future__ import annotations

import atexit
import json
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from .certs import TlsFiles, generate_tls_files
from .procs import HOST, FederationError, Proc, exe, free_ports, last_line, log_tail
from .runs import AppRun, FlwrCli, RunResult
from .supernodes import Node, NodeStarter
from .tomlconf import (
    ConfigValue,
    app_run_config_defaults,
    flat_config,
    process_env,
    write_connection,
    write_toml,
)

CONNECTION = "fedmllm-local"
START_TIMEOUT = 90.0  # generous: the first start on a busy 2-core machine takes seconds
_ADDR_IN_USE = "address already in use"
CLIENTAPP_MODES = ("subprocess", "warm")


class LocalFederation:
    """Handle on a running loopback federation; a context manager that stops it on exit."""

    def __init__(self, out_dir: Path, num_supernodes: int, *, insecure: bool = False,
                 supernode_auth: bool | None = None, node_configs: list[dict] | None = None,
                 env: Mapping[str, Any] | None = None, start_timeout: float = START_TIMEOUT,
                 clientapp: str = "subprocess", gpus: Sequence[str] | None = None) -> None:
        if clientapp not in CLIENTAPP_MODES:
            raise ValueError(f"clientapp must be 'subprocess' or 'warm', not {clientapp!r}")
        if num_supernodes < 1:
            raise ValueError("num_supernodes must be at least 1")
        if node_configs is not None and len(node_configs) != num_supernodes:
            raise ValueError(
                f"node_configs has {len(node_configs)} entries for {num_supernodes} SuperNodes")
        self.supernode_auth = (not insecure) if supernode_auth is None else supernode_auth
        if self.supernode_auth and insecure:
            raise ValueError("SuperNode authentication needs TLS (flwr refuses it with --insecure)")
        self.out_dir = Path(out_dir).resolve()
        self.dir = self.out_dir / "flower"
        self.logs_dir, self.home_dir = self.dir / "logs", self.dir / "home"
        self.cli_home = self.home_dir / "cli"
        self.insecure, self.start_timeout, self.clientapp = insecure, start_timeout, clientapp
        self.connection = CONNECTION
        self.gpus = [str(g) for g in gpus] if gpus else []
        self.tls: TlsFiles | None = None
        self.superlink: Proc | None = None
        self.port = 0
        self.lock = threading.RLock()
        self._stopped = False
        self._runs: list[Proc] = []
        self.env = process_env(env)
        self.cli = FlwrCli(self.connection, self.proc_env(self.cli_home), self.dir)
        self.nodes = [self._node(i, num_supernodes, node_configs) for i in range(num_supernodes)]
        self.starter = NodeStarter(self)

    def _node(self, i: int, num_supernodes: int, node_configs: list[dict] | None) -> Node:
        """SuperNode ``i``'s partition, node config, config file, home folder and device."""
        conf: dict[str, ConfigValue] = {"partition-id": i, "num-partitions": num_supernodes}
        if node_configs is not None:
            conf.update(flat_config(node_configs[i], f"node_configs[{i}]"))
        env = {"CUDA_VISIBLE_DEVICES": self.gpus[i % len(self.gpus)]} if self.gpus else {}
        return Node(partition_id=i, node_config=conf, env=env,
                    config_file=self.dir / "node-config" / f"supernode-{i}.toml",
                    home=self.home_dir / f"supernode-{i}",
                    log_path=self.logs_dir / f"supernode-{i}.log")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def proc_env(self, home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The processes' environment with ``FLWR_HOME=home`` (and ``extra``)."""
        return {**self.env, **(extra or {}), "FLWR_HOME": str(home)}

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    # -- start
    def start(self) -> LocalFederation:
        """Certificates, the SuperLink, the CLI's connection, node keys, the SuperNodes."""
        atexit.register(self.stop)
        try:
            for d in (self.logs_dir, self.cli_home):
                d.mkdir(parents=True, exist_ok=True)
            if not self.insecure:
                self.tls = generate_tls_files(self.dir / "certs")
            self._start_superlink()
            write_connection(self.cli_home, self.connection, self.address,
                             None if self.tls is None else self.tls.ca_cert)
            if self.supernode_auth:
                self.starter.register(self.dir / "keys")
            for node in self.nodes:
                write_toml(node.config_file, node.node_config)
                self.starter.start(node)
            self.starter.wait(self.nodes)
            self.write_record()
        except BaseException:
            self.stop()
            raise
        return self

    def _superlink_argv(self, port: int) -> list[str]:
        argv = [exe("flower-superlink"), "--host", HOST, "--port", str(port)]
        if self.tls is None:
            argv.append("--insecure")
        else:
            argv += ["--ssl-ca-certfile", str(self.tls.ca_cert),
                     "--ssl-certfile", str(self.tls.server_cert),
                     "--ssl-keyfile", str(self.tls.server_key)]
            if self.supernode_auth:
                argv.append("--enable-supernode-auth")
        return [*argv, "--disable-runtime-dependency-installation"]

    def _start_superlink(self) -> None:
        log = self.logs_dir / "superlink.log"
        for attempt in range(3):
            (self.port,) = free_ports(1)
            offset = log.stat().st_size if log.exists() else 0
            self.superlink = Proc("superlink", self._superlink_argv(self.port),
                                  self.proc_env(self.home_dir / "superlink"), log)
            self.superlink.start(self.dir)
            try:
                return self._wait_superlink(offset)
            except FederationError:
                self.superlink.terminate()
                if _ADDR_IN_USE not in log_tail(log, offset) or attempt == 2:
                    raise

    def _health(self) -> bool:
        scheme, ctx = "http", None
        if self.tls is not None:
            scheme, ctx = "https", ssl.create_default_context(cafile=str(self.tls.ca_cert))
        try:
            with urllib.request.urlopen(f"{scheme}://{self.address}/health", timeout=2,
                                        context=ctx) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError, ssl.SSLError):
            return False

    def _wait_superlink(self, offset: int) -> None:
        proc = self.superlink
        assert proc is not None and proc.popen is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                raise FederationError(
                    f"flower-superlink exited with code {proc.popen.returncode} during start: "
                    f"{last_line(log_tail(proc.log_path, offset))} (log: {proc.log_path})")
            if self._health():
                return
            time.sleep(0.2)
        raise FederationError(f"flower-superlink not answering on {self.address} after "
                              f"{self.start_timeout:.0f} s (log: {proc.log_path})")

    def superlink_alive(self) -> bool:
        return self.superlink is not None and self.superlink.alive()

    # -- bookkeeping
    def record(self) -> dict[str, Any]:
        """What ``processes.json`` holds: the PIDs, ports, logs and settings."""
        return {
            "superlink": self.superlink.pid if self.superlink else None,
            "supernodes": [node.record() for node in self.nodes],
            "address": self.address, "tls": not self.insecure,
            "supernode_auth": self.supernode_auth, "connection": self.connection,
            "flwr_home": str(self.cli_home),
            "ca_cert": str(self.tls.ca_cert) if self.tls else None,
            "superlink_log": str(self.logs_dir / "superlink.log"),
            "clientapp": self.clientapp, "gpus": self.gpus, "python": sys.executable,
        }

    def write_record(self) -> None:
        path = self.dir / "processes.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.record(), indent=2), encoding="utf-8")
        tmp.replace(path)

    def supernode_pid(self, i: int) -> int | None:
        proc = self.nodes[i].proc
        return proc.pid if proc and proc.alive() else None

    # -- runs
    def submit_app(self, app_dir: Path, run_config: Mapping[str, ConfigValue] | None = None
                   ) -> AppRun:
        """Submit the app with ``flwr run`` and follow its output; ``.wait()`` on the result."""
        app_dir = Path(app_dir).resolve()
        run_config = flat_config(run_config or {}, "run_config")
        unknown = sorted(set(run_config) - set(app_run_config_defaults(app_dir)))
        if unknown:  # flwr would accept the run and fail later, in the ServerApp and nodes
            raise ValueError(f"run_config keys not in [tool.flwr.app.config] of {app_dir}: "
                             f"{unknown}")
        with self.lock:
            if self._stopped:
                raise FederationError("the federation was stopped")
            seq = len(self._runs) + 1
            log = Proc(f"run-{seq}", [], self.cli.env, self.logs_dir / f"run-{seq}.log")
            self._runs.append(log)
        conf = write_toml(self.dir / "runs" / f"run-{seq}-config.toml", run_config) \
            if run_config else None
        return self.cli.submit(app_dir, conf, log)

    def run_app(self, app_dir: Path, run_config: Mapping[str, ConfigValue] | None = None,
                timeout: float = 600.0) -> RunResult:
        """``flwr run`` the app against this federation and wait for the run to finish."""
        return self.submit_app(app_dir, run_config).wait(timeout)

    # -- stop
    def stop(self) -> None:
        """Stop every process started here (and their children); safe to call again."""
        with self.lock:
            if self._stopped:
                return
            self._stopped = True
        for proc in self._runs:
            proc.terminate(grace=2.0)
        for node in self.nodes:
            self.starter.stop(node)
        if self.superlink is not None:
            self.superlink.terminate()
        atexit.unregister(self.stop)

    @property
    def stopped(self) -> bool:
        return self._stopped
