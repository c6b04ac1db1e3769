"""A Flower 1.42 Deployment Engine federation on loopback: one SuperLink, N SuperNodes.

``start_federation(out_dir, n)`` starts ``flower-superlink`` and ``n`` ``flower-supernode``
processes on free 127.0.0.1 ports, by default with TLS (a CA and server certificate made
here, offline) and SuperNode authentication (keys made here, registered with
``flwr supernode register``); ``insecure=True`` turns both off. ``LocalFederation.run_app``
submits an app with ``flwr run --stream`` and waits for the run's final status.

How flwr 1.42 is driven (read from its source, checked on this machine):

* The SuperLink serves the Fleet, Control and Runtime APIs over one HTTP(S) port
  (``--host``/``--port``; the old ``--fleet-api-address`` etc. are deprecated). A SuperNode
  dials it with ``--superlink host:port`` and serves its own Runtime API on ``--host``/
  ``--port`` (default 9094, so every node needs its own port).
* ``flwr run APP CONNECTION`` reads CONNECTION from ``$FLWR_HOME/config.toml``
  (``[superlink.<name>] address/root-certificates/insecure``); ``[tool.flwr.federations]`` in an
  app's pyproject is legacy and ``flwr run`` *rewrites* that pyproject when it finds one.
  We point ``FLWR_HOME`` of every process into ``out_dir/flower/home/`` so nothing is written
  to ``~/.flwr`` (FABs are also unpacked under ``$FLWR_HOME/apps``).
* The ServerApp runs in a ``flwr-serverapp`` process (one per run) and each message to a
  SuperNode in a fresh ``flwr-clientapp`` process (one per message, it exits after replying),
  both started by a ``flower-superexec`` that the SuperLink/SuperNode spawn through ``PATH``:
  we put this interpreter's ``bin/`` first on ``PATH`` so they run in this virtualenv.
* ``clientapp="warm"`` keeps one ClientApp process per SuperNode for the whole federation
  instead: the SuperNode runs with ``--isolation process`` and we start, next to it, a
  worker (``python -m fedmllm.runtime.flower.local clientapp-worker``) that takes the node's
  tasks one after the other from its Runtime API and calls the ClientApp in-process, so
  whatever the app keeps in module state (a loaded model) survives from round to round.
  It reuses flwr 1.42's own task helpers (``flwr.supernode.runtime.run_clientapp``), through
  :mod:`.flwr_internals`, the one module that imports flwr's non-public modules.
* The ServerApp's stdout/stderr do not reach any file: its SuperExec starts it with
  ``stdout=DEVNULL`` and it uploads its output to the SuperLink, from where ``flwr run --stream``
  / ``flwr log`` print it; ``run_app`` keeps that text in ``logs/run-<k>.log``. ClientApp output
  goes to its SuperNode's log (``clientapp-<i>.log`` for the warm worker).
* Run and node configs are passed as TOML files (``--run-config f.toml``, ``--node-config
  f.toml``: flwr reads a single ``*.toml`` argument as a file), so no value needs shell or
  ``key="value"`` quoting. Run-config keys must exist in the app's ``[tool.flwr.app.config]``
  (flwr raises only later, in the ServerApp and in every SuperNode), so ``submit_app`` checks.
* A SIGKILLed SuperNode stays "online" for the SuperLink until its heartbeat lapses (flwr
  1.42: 30 s interval, offline after 2 x 30 s); messages to it then get an error reply
  ``NODE_UNAVAILABLE`` (code 5) whose ``src_node_id`` is 1, the SuperLink, so map errors to
  nodes through ``reply_to_message_id``. A ServerApp that waits with a timeout sees the reply
  missing sooner; ``AppRun.wait``'s own timeout ends the run with ``flwr stop``.
* Latency floors of flwr 1.42 (fixed in its code): an idle SuperNode asks for messages every
  3 s, ``Grid.send_and_receive`` looks for replies every 3 s, a SuperExec asks for tasks every
  1 s (``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``); so a round takes 3-6 s even for an echo. Our
  SuperNodes run through :mod:`.fastnode` (the idle poll shortened to 0.25 s) and fedmllm's
  ServerApp pulls replies every 0.25 s itself.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import tomli_w

from ...config import flatten
from .certs import NodeKeys, TlsFiles, generate_node_keys, generate_tls_files

HOST = "127.0.0.1"
CONNECTION = "fedmllm-local"
START_TIMEOUT = 90.0  # generous: the first start on a busy 2-core machine takes seconds

# Always set for the processes we start (offline machine; no uv sync at run time).
BASE_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "HF_HUB_OFFLINE": "1",
    "PYTHONUNBUFFERED": "1",
}

_NODE_ID_RE = re.compile(r"SuperNode ID: (\d+)")
_RUN_ID_RE = re.compile(r"Successfully started run (\d+)")
_ADDR_IN_USE = "address already in use"
_NOT_ACTIVATED = "Failed to activate SuperNode"
# flwr 1.42: SuperNodes heartbeat every 30 s; the SuperLink calls a node offline after 2 x that.
HEARTBEAT_LAPSE = 2 * 30.0 + 5.0


class FederationError(RuntimeError):
    """A process of the local federation died or did not come up in time."""


ConfigValue = str | int | float | bool


@dataclass
class RunResult:
    """What ``run_app`` found out about one run."""

    run_id: int | None
    status: str  # flwr's "finished:completed" | "finished:failed" | "finished:stopped" | ...
    details: str
    seconds: float
    log_path: Path  # ``flwr run --stream`` output: the ServerApp's stdout/stderr
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "finished:completed"

    @property
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""


@dataclass
class _Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


@dataclass
class _Node:
    partition_id: int
    node_config: dict[str, ConfigValue]
    config_file: Path
    home: Path
    keys: NodeKeys | None = None
    node_id: int | None = None
    port: int = 0
    proc: _Proc | None = None
    worker: _Proc | None = None  # clientapp="warm": the long-lived ClientApp process
    restarts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- processes


def _bin_dir() -> Path:
    return Path(sys.executable).parent


def _exe(name: str) -> str:
    local = _bin_dir() / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FederationError(f"{name} not found next to {sys.executable} nor on PATH")
    return found


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on loopback (all held open together while picking)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _proc_table() -> dict[int, tuple[int, int, int, str]]:
    """{pid: (ppid, pgrp, session, state)} from Linux ``/proc`` (empty elsewhere)."""
    table: dict[int, tuple[int, int, int, str]] = {}
    if not os.path.isdir("/proc"):
        return table
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ...; comm may hold spaces and parentheses
        fields = stat[stat.rfind(")") + 2 :].split()
        table[int(entry)] = (int(fields[1]), int(fields[2]), int(fields[3]), fields[0])
    return table


def descendants(pid: int, table: dict | None = None) -> list[int]:
    """All descendants of ``pid`` (Linux ``/proc``; empty elsewhere)."""
    table = _proc_table() if table is None else table
    kids: dict[int, list[int]] = {}
    for child, (ppid, _, _, _) in table.items():
        kids.setdefault(ppid, []).append(child)
    out, todo = [], list(kids.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def _tree(root: int) -> list[int]:
    """Descendants of ``root`` plus every process still in its session.

    Each process we start leads a new session, so its children stay findable through the
    session id even after it died and they were re-parented; flwr's SuperLink starts its
    SuperExec in a session of its own, which only the parent link finds.
    """
    table = _proc_table()
    found = set(descendants(root, table))
    found |= {p for p, (_, _, sid, _) in table.items() if sid == root and p != root}
    return sorted(found)


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode(errors="replace")
        return stat[stat.rfind(")") + 2] != "Z"
    except OSError:
        return True


def _signal_tree(root: int, pids: list[int], sig: int, *, root_group: bool = True) -> None:
    """Send ``sig`` to the process group of ``root`` (= its pid: we start every process in a
    new session), to the groups of ``pids`` and to each of them. Our own group is spared.

    ``root_group=False`` once ``root`` is reaped and nothing is left in its session: its pid
    (and so that group id) may belong to someone else by then.
    """
    own = os.getpgrp()
    groups = {root} if root_group else set()
    for pid in pids:
        try:
            groups.add(os.getpgid(pid))
        except OSError:
            pass
    for pgid in groups - {own}:
        try:
            os.killpg(pgid, sig)
        except OSError:
            pass
    for pid in [root, *pids] if root_group else pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def _terminate(proc: _Proc, grace: float = 5.0) -> None:
    """SIGTERM the process tree, SIGKILL what is left after ``grace`` s; reap our child."""
    if proc.popen is None:
        return
    root = proc.popen.pid
    tree = _tree(root)

    def done() -> bool:
        return proc.popen.poll() is not None and not any(pid_alive(p) for p in tree)

    def root_group() -> bool:
        return proc.popen.returncode is None or bool(tree)

    if not done():
        _signal_tree(root, tree, signal.SIGTERM, root_group=root_group())
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and not done():
            time.sleep(0.1)
            tree = sorted(set(tree) | set(_tree(root)))
        if not done():
            _signal_tree(root, tree, signal.SIGKILL, root_group=root_group())
    try:
        proc.popen.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILLed above
        pass


def _spawn(proc: _Proc, cwd: Path) -> None:
    proc.log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(proc.log_path, "ab") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"=== {stamp} fedmllm starts: {' '.join(proc.argv)}\n".encode())
        log.flush()
        proc.popen = subprocess.Popen(
            proc.argv,
            cwd=cwd,
            env=proc.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _log_tail(path: Path, start: int = 0) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(empty log)"


# ----------------------------------------------------------------------------- configs


def _flat_config(values: Mapping[str, Any], what: str) -> dict[str, ConfigValue]:
    out: dict[str, ConfigValue] = {}
    for key, value in values.items():
        if not isinstance(value, (str, int, float, bool)):
            raise TypeError(f"{what}: {key}={value!r} is not str, int, float or bool")
        out[str(key)] = value
    return out


def _write_toml(path: Path, values: Mapping[str, ConfigValue]) -> Path:
    """A flat TOML file; flwr reads a single ``*.toml`` argument of ``--run-config`` /
    ``--node-config`` as a file, which avoids all quoting of ``key=value`` strings."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(dict(values)), encoding="utf-8")
    return path


def app_run_config_defaults(app_dir: Path) -> dict[str, Any]:
    """``[tool.flwr.app.config]`` of an app, flattened the way flwr flattens it."""
    with open(Path(app_dir) / "pyproject.toml", "rb") as fh:
        conf = tomllib.load(fh)
    flwr = conf.get("tool", {}).get("flwr", {})
    if "federations" in flwr:
        raise ValueError(
            f"{app_dir}/pyproject.toml has [tool.flwr.federations]: flwr 1.42 `flwr run` would "
            "migrate it to $FLWR_HOME/config.toml and comment it out in the file; remove it"
        )
    if "app" not in flwr:
        raise ValueError(f"{app_dir}/pyproject.toml has no [tool.flwr.app] section")
    return flatten(flwr["app"].get("config", {}))  # the table declares no table-valued key


# ----------------------------------------------------------------------------- federation


def _process_env(extra: dict | None) -> dict[str, str]:
    """The environment of the federation's processes: this one's, Flower's offline settings,
    ``extra``, this venv's ``bin`` first on ``PATH``, and no inherited ``FLWR_HOME``."""
    env = dict(os.environ)
    env.update(BASE_ENV)
    if extra:
        env.update({str(k): str(v) for k, v in extra.items()})
    env["PATH"] = os.pathsep.join([str(_bin_dir()), env.get("PATH", "")])
    env.pop("FLWR_HOME", None)
    return env


class LocalFederation:
    """Handle on a running loopback federation; a context manager that stops it on exit."""

    def __init__(
        self,
        out_dir: Path,
        num_supernodes: int,
        *,
        insecure: bool = False,
        supernode_auth: bool | None = None,
        node_configs: list[dict] | None = None,
        env: dict | None = None,
        start_timeout: float = START_TIMEOUT,
        clientapp: str = "subprocess",
    ) -> None:
        if clientapp not in ("subprocess", "warm"):
            raise ValueError(f"clientapp must be 'subprocess' or 'warm', not {clientapp!r}")
        if num_supernodes < 1:
            raise ValueError("num_supernodes must be at least 1")
        if node_configs is not None and len(node_configs) != num_supernodes:
            raise ValueError(
                f"node_configs has {len(node_configs)} entries for {num_supernodes} SuperNodes"
            )
        self.out_dir = Path(out_dir).resolve()
        self.dir = self.out_dir / "flower"
        self.logs_dir = self.dir / "logs"
        self.certs_dir = self.dir / "certs"
        self.home_dir = self.dir / "home"
        self.cli_home = self.home_dir / "cli"
        self.insecure = insecure
        self.supernode_auth = (not insecure) if supernode_auth is None else supernode_auth
        if self.supernode_auth and insecure:
            raise ValueError("SuperNode authentication needs TLS (flwr refuses it with --insecure)")
        self.start_timeout = start_timeout
        self.clientapp = clientapp
        self.connection = CONNECTION
        self.tls: TlsFiles | None = None
        self.superlink: _Proc | None = None
        self.port = 0
        self._stopped = False
        self._lock = threading.RLock()
        self._runs: list[subprocess.Popen] = []
        self._run_seq = 0

        self.env = _process_env(env)
        self.nodes = [self._node(i, num_supernodes, node_configs) for i in range(num_supernodes)]

    def _node(self, i: int, num_supernodes: int, node_configs: list[dict] | None) -> _Node:
        """SuperNode ``i``'s partition, node config, config file and home folder."""
        conf: dict[str, ConfigValue] = {"partition-id": i, "num-partitions": num_supernodes}
        if node_configs is not None:
            conf.update(_flat_config(node_configs[i], f"node_configs[{i}]"))
        return _Node(partition_id=i, node_config=conf,
                     config_file=self.dir / "node-config" / f"supernode-{i}.toml",
                     home=self.home_dir / f"supernode-{i}")

    # -- context manager
    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- start
    def _proc_env(self, home: Path) -> dict[str, str]:
        env = dict(self.env)
        env["FLWR_HOME"] = str(home)
        return env

    def _cli_env(self) -> dict[str, str]:
        return self._proc_env(self.cli_home)

    def start(self) -> LocalFederation:
        atexit.register(self.stop)
        try:
            for d in (self.logs_dir, self.cli_home):
                d.mkdir(parents=True, exist_ok=True)
            if not self.insecure:
                self.tls = generate_tls_files(self.certs_dir)
            self._start_superlink()
            self._write_cli_config()
            if self.supernode_auth:
                self._register_nodes()
            for node in self.nodes:
                _write_toml(node.config_file, node.node_config)
                self._start_node(node, wait=False)
            self._wait_nodes(self.nodes)
            self._write_record()
        except BaseException:
            self.stop()
            raise
        return self

    def _superlink_argv(self, port: int) -> list[str]:
        argv = [_exe("flower-superlink"), "--host", HOST, "--port", str(port)]
        if self.insecure:
            argv.append("--insecure")
        else:
            assert self.tls is not None
            argv += [
                "--ssl-ca-certfile", str(self.tls.ca_cert),
                "--ssl-certfile", str(self.tls.server_cert),
                "--ssl-keyfile", str(self.tls.server_key),
            ]
            if self.supernode_auth:
                argv.append("--enable-supernode-auth")
        argv.append("--disable-runtime-dependency-installation")
        return argv

    def _start_superlink(self) -> None:
        log = self.logs_dir / "superlink.log"
        for attempt in range(3):
            (port,) = _free_ports(1)
            proc = _Proc("superlink", self._superlink_argv(port),
                         self._proc_env(self.home_dir / "superlink"), log)
            offset = log.stat().st_size if log.exists() else 0
            self.superlink, self.port = proc, port
            _spawn(proc, self.dir)
            try:
                self._wait_superlink(proc, offset)
                return
            except FederationError:
                text = _log_tail(log, offset)
                _terminate(proc)
                if _ADDR_IN_USE in text and attempt < 2:
                    continue
                raise

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.insecure:
            return None
        assert self.tls is not None
        return ssl.create_default_context(cafile=str(self.tls.ca_cert))

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def _health(self) -> bool:
        scheme = "http" if self.insecure else "https"
        try:
            with urllib.request.urlopen(
                f"{scheme}://{self.address}/health", timeout=2, context=self._ssl_context()
            ) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError, ssl.SSLError):
            return False

    def _wait_superlink(self, proc: _Proc, offset: int) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                raise FederationError(
                    f"flower-superlink exited with code {proc.popen.returncode} during start: "
                    f"{_last_line(_log_tail(proc.log_path, offset))} (log: {proc.log_path})"
                )
            if self._health():
                return
            time.sleep(0.2)
        raise FederationError(
            f"flower-superlink not answering on {self.address} after {self.start_timeout:.0f} s "
            f"(log: {proc.log_path})"
        )

    def _write_cli_config(self) -> None:
        conn: dict[str, Any] = {"address": self.address}
        if self.insecure:
            conn["insecure"] = True
        else:
            assert self.tls is not None
            conn["root-certificates"] = str(self.tls.ca_cert)
        doc = {"superlink": {"default": self.connection, self.connection: conn}}
        (self.cli_home / "config.toml").write_text(tomli_w.dumps(doc), encoding="utf-8")

    def flwr_cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run ``flwr ARGS`` against this federation (its ``FLWR_HOME``, its connection)."""
        return subprocess.run(
            [_exe("flwr"), *args],
            check=False,
            cwd=self.dir,
            env=self._cli_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def _flwr_json(self, *args: str, timeout: float = 60.0) -> dict:
        res = self.flwr_cli(*args, "--format", "json", timeout=timeout)
        text = res.stdout.strip()
        start = text.find("{")
        try:
            data = json.loads(text[start:]) if start >= 0 else None
        except json.JSONDecodeError:
            data = None
        if res.returncode != 0 or not isinstance(data, dict) or not data.get("success", False):
            msg = (res.stderr.strip() or text or "no output").splitlines()
            raise FederationError(f"flwr {' '.join(args)} failed: {msg[-1] if msg else ''}")
        return data

    def _register_nodes(self) -> None:
        keys_dir = self.dir / "keys"
        for node in self.nodes:
            node.keys = generate_node_keys(keys_dir, f"supernode-{node.partition_id}")
            data = self._flwr_json(
                "supernode", "register", str(node.keys.public_key), self.connection
            )
            node.node_id = int(data["node-id"])

    def _node_argv(self, node: _Node) -> list[str]:
        # flower-supernode itself, with its 3 s idle poll shortened (loopback costs nothing)
        argv = [
            sys.executable, "-m", "fedmllm.runtime.flower.fastnode",
            "--superlink", self.address,
            "--host", HOST,
            "--port", str(node.port),
            "--node-config", str(node.config_file),
        ]
        if self.insecure:
            argv.append("--insecure")
        else:
            assert self.tls is not None
            argv += ["--root-certificates", str(self.tls.ca_cert)]
            # The node's own Runtime API (SuperExec/ClientApp -> SuperNode) on TLS too.
            argv += [
                "--ssl-certfile", str(self.tls.server_cert),
                "--ssl-keyfile", str(self.tls.server_key),
                "--ssl-ca-certfile", str(self.tls.ca_cert),
            ]
        if node.keys is not None:
            argv += ["--auth-supernode-private-key", str(node.keys.private_key)]
        if self.clientapp == "warm":
            argv += ["--isolation", "process"]
        return argv

    def _worker_argv(self, node: _Node) -> list[str]:
        assert node.proc is not None and node.proc.pid is not None
        argv = [
            sys.executable, "-m", "fedmllm.runtime.flower.local", "clientapp-worker",
            "--runtime-api-address", f"{HOST}:{node.port}",
            "--parent-pid", str(node.proc.pid),
        ]
        if self.insecure:
            argv.append("--insecure")
        else:
            assert self.tls is not None
            argv += ["--root-certificates", str(self.tls.ca_cert)]
        return argv

    def _node_log(self, node: _Node) -> Path:
        return self.logs_dir / f"supernode-{node.partition_id}.log"

    def _start_node(self, node: _Node, *, wait: bool = True) -> None:
        (node.port,) = _free_ports(1)
        log = self._node_log(node)
        node.extra["log_offset"] = log.stat().st_size if log.exists() else 0
        node.proc = _Proc(f"supernode-{node.partition_id}", self._node_argv(node),
                          self._proc_env(node.home), log)
        _spawn(node.proc, self.dir)
        if self.clientapp == "warm":
            # Polls the node's Runtime API (retrying until it is up); exits with the node.
            node.worker = _Proc(
                f"clientapp-{node.partition_id}", self._worker_argv(node),
                self._proc_env(node.home),
                self.logs_dir / f"clientapp-{node.partition_id}.log",
            )
            _spawn(node.worker, self.dir)
        if wait:
            self._wait_nodes([node])

    def _wait_nodes(self, nodes: list[_Node]) -> None:
        deadline = time.monotonic() + self.start_timeout
        pending = list(nodes)
        retried: set[int] = set()
        while pending:
            for node in list(pending):
                assert node.proc is not None
                text = _log_tail(node.proc.log_path, node.extra.get("log_offset", 0))
                if (m := _NODE_ID_RE.search(text)) is not None:
                    node.node_id = int(m.group(1))
                    pending.remove(node)
                elif not node.proc.alive():
                    if _ADDR_IN_USE in text and node.partition_id not in retried:
                        retried.add(node.partition_id)
                        self._start_node(node, wait=False)
                        continue
                    raise FederationError(
                        f"flower-supernode {node.partition_id} exited with code "
                        f"{node.proc.popen.returncode} during start: {_last_line(text)} "
                        f"(log: {node.proc.log_path})"
                    )
            for node in nodes:
                if node.worker is not None and not node.worker.alive():
                    raise FederationError(
                        f"ClientApp worker {node.partition_id} exited with code "
                        f"{node.worker.popen.returncode}: "
                        f"{_last_line(_log_tail(node.worker.log_path))} "
                        f"(log: {node.worker.log_path})"
                    )
            if not pending:
                break
            if self.superlink is None or not self.superlink.alive():
                raise FederationError(
                    f"flower-superlink died while SuperNodes connected "
                    f"(log: {self.logs_dir / 'superlink.log'})"
                )
            if time.monotonic() > deadline:
                node = pending[0]
                raise FederationError(
                    f"flower-supernode {node.partition_id} not connected after "
                    f"{self.start_timeout:.0f} s (log: {self._node_log(node)})"
                )
            time.sleep(0.2)

    # -- bookkeeping
    def record(self) -> dict[str, Any]:
        return {
            "superlink": self.superlink.pid if self.superlink else None,
            "supernodes": [
                {
                    "partition_id": n.partition_id,
                    "pid": n.proc.pid if n.proc else None,
                    "clientapp_worker_pid": n.worker.pid if n.worker else None,
                    "node_id": n.node_id,
                    "runtime_api_port": n.port,
                    "node_config": n.node_config,
                    "log": str(self._node_log(n)),
                    "restarts": n.restarts,
                }
                for n in self.nodes
            ],
            "address": self.address,
            "tls": not self.insecure,
            "supernode_auth": self.supernode_auth,
            "connection": self.connection,
            "flwr_home": str(self.cli_home),
            "ca_cert": str(self.tls.ca_cert) if self.tls else None,
            "superlink_log": str(self.logs_dir / "superlink.log"),
            "clientapp": self.clientapp,
            "python": sys.executable,
        }

    def _write_record(self) -> None:
        path = self.dir / "processes.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.record(), indent=2), encoding="utf-8")
        tmp.replace(path)

    def supernode_pid(self, i: int) -> int | None:
        proc = self.nodes[i].proc
        return proc.pid if proc and proc.alive() else None

    def clientapp_pids(self, i: int) -> list[int]:
        """PIDs of SuperNode ``i``'s ClientApp processes now: the ``flwr-clientapp`` ones
        working on a message, or the warm worker (always there)."""
        node = self.nodes[i]
        if self.clientapp == "warm":
            return [node.worker.pid] if node.worker and node.worker.alive() else []
        pid = self.supernode_pid(i)
        if pid is None:
            return []
        return [p for p in descendants(pid) if "flwr-clientapp" in _cmdline(p)]

    # -- faults
    def kill_supernode(self, i: int) -> None:
        """SIGKILL SuperNode ``i`` with its SuperExec and ClientApp processes (a crash)."""
        with self._lock:
            for proc in (self.nodes[i].proc, self.nodes[i].worker):
                if proc is None or proc.popen is None:
                    continue
                root = proc.popen.pid
                tree = _tree(root)
                _signal_tree(root, tree, signal.SIGKILL,
                             root_group=proc.popen.poll() is None or bool(tree))
                try:
                    proc.popen.wait(timeout=10)
                except subprocess.TimeoutExpired:  # pragma: no cover
                    pass

    def restart_supernode(self, i: int, timeout: float | None = None) -> None:
        """Stop SuperNode ``i`` if it still runs and start it again (same config and key).

        Without authentication the SuperLink gives the new process a new node id (the old
        id stays "online" until its heartbeat lapses). With authentication the node keeps its
        id (it belongs to the registered key), but after a crash the SuperLink refuses to
        activate it again ("Failed to activate SuperNode", exit code 305) until the dead
        node's heartbeat lapses, up to 2 x 30 s after its last heartbeat: we retry until then.
        """
        with self._lock:
            node = self.nodes[i]
            for proc in (node.worker, node.proc):
                if proc is not None:
                    _terminate(proc)
            node.restarts += 1
            limit = timeout if timeout is not None else self.start_timeout + HEARTBEAT_LAPSE
            deadline = time.monotonic() + limit
            while True:
                self._start_node(node, wait=False)
                try:
                    self._wait_nodes([node])
                    break
                except FederationError:
                    assert node.proc is not None
                    text = _log_tail(node.proc.log_path, node.extra.get("log_offset", 0))
                    for proc in (node.worker, node.proc):
                        if proc is not None:
                            _terminate(proc)
                    if _NOT_ACTIVATED not in text or time.monotonic() > deadline:
                        raise
                    time.sleep(3.0)
            self._write_record()

    # -- runs
    def submit_app(
        self, app_dir: Path, run_config: Mapping[str, ConfigValue] | None = None
    ) -> AppRun:
        """Start ``flwr run APP --stream`` in the background; ``.wait()`` on the result."""
        app_dir = Path(app_dir).resolve()
        run_config = _flat_config(run_config or {}, "run_config")
        defaults = app_run_config_defaults(app_dir)
        unknown = sorted(set(run_config) - set(defaults))
        if unknown:
            # flwr would accept the run and fail later, in the ServerApp and on every node.
            raise ValueError(
                f"run_config keys not in [tool.flwr.app.config] of {app_dir}: {unknown}"
            )
        with self._lock:
            if self._stopped:
                raise FederationError("the federation was stopped")
            self._run_seq += 1
            seq = self._run_seq
        argv = [_exe("flwr"), "run", str(app_dir), self.connection, "--stream"]
        if run_config:
            conf_file = _write_toml(self.dir / "runs" / f"run-{seq}-config.toml", run_config)
            argv += ["--run-config", str(conf_file)]
        proc = _Proc(f"run-{seq}", argv, self._cli_env(), self.logs_dir / f"run-{seq}.log")
        # a folder used again (a resumed run) appends to the same log: read from here on
        offset = proc.log_path.stat().st_size if proc.log_path.exists() else 0
        _spawn(proc, self.dir)
        with self._lock:
            self._runs.append(proc.popen)
        return AppRun(self, proc, offset)

    def run_app(
        self,
        app_dir: Path,
        run_config: Mapping[str, ConfigValue] | None = None,
        timeout: float = 600.0,
    ) -> RunResult:
        """``flwr run`` the app against this federation and wait for the run to finish."""
        return self.submit_app(app_dir, run_config).wait(timeout)

    def run_status(self, run_id: int) -> tuple[str, str]:
        """(status, details) of a run, e.g. ("finished:completed", "N/A")."""
        data = self._flwr_json("list", self.connection, "--run-id", str(run_id))
        run = data["runs"][0]
        return str(run.get("status", "unknown")), str(run.get("status-details", ""))

    # -- stop
    def stop(self) -> None:
        """Stop every process started here (and their children); safe to call again."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            runs, self._runs = self._runs, []
        for popen in runs:
            _terminate(_Proc("run", [], {}, Path(os.devnull), popen), grace=2.0)
        for node in self.nodes:
            for proc in (node.worker, node.proc):
                if proc is not None:
                    _terminate(proc)
        if self.superlink is not None:
            _terminate(self.superlink)
        atexit.unregister(self.stop)

    @property
    def stopped(self) -> bool:
        return self._stopped


class AppRun:
    """A submitted ``flwr run``; ``wait()`` gives its ``RunResult``."""

    def __init__(self, fed: LocalFederation, proc: _Proc, log_offset: int = 0) -> None:
        self.fed = fed
        self.proc = proc
        self.log_offset = log_offset  # where this run's part of the log file starts
        self.started = time.monotonic()
        self.run_id: int | None = None

    def _scan_run_id(self) -> int | None:
        if self.run_id is None:
            m = _RUN_ID_RE.search(_log_tail(self.proc.log_path, self.log_offset))
            if m is not None:
                self.run_id = int(m.group(1))
        return self.run_id

    def wait(self, timeout: float = 600.0) -> RunResult:
        """Wait for ``flwr run --stream`` to end (it ends when the run is finished)."""
        assert self.proc.popen is not None
        timed_out = False
        try:
            self.proc.popen.wait(timeout=max(0.0, self.started + timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
        run_id = self._scan_run_id()
        if timed_out:
            _terminate(self.proc, grace=2.0)
            if run_id is not None:
                self.fed.flwr_cli("stop", str(run_id), self.fed.connection)
        status, details = "not-started", _last_line(_log_tail(self.proc.log_path,
                                                              self.log_offset))
        if run_id is not None:
            try:
                status, details = self.fed.run_status(run_id)
            except FederationError as err:
                status, details = "unknown", str(err)
            if timed_out and not status.startswith("finished"):
                status = "timeout"
        elif timed_out:
            status = "timeout"
        return RunResult(
            run_id=run_id,
            status=status,
            details=details,
            seconds=round(time.monotonic() - self.started, 2),
            log_path=self.proc.log_path,
            timed_out=timed_out,
        )


def start_federation(
    out_dir: Path,
    num_supernodes: int,
    *,
    insecure: bool = False,
    node_configs: list[dict] | None = None,
    env: dict | None = None,
    supernode_auth: bool | None = None,
    start_timeout: float = START_TIMEOUT,
    clientapp: str = "subprocess",
) -> LocalFederation:
    """Start a SuperLink and ``num_supernodes`` SuperNodes on loopback; return the handle.

    TLS by default (certificates under ``out_dir/flower/certs``) with SuperNode
    authentication; ``insecure=True`` for plain HTTP without authentication. SuperNode ``i``
    gets the node config ``partition-id=i num-partitions=N`` updated with ``node_configs[i]``.
    Logs go to ``out_dir/flower/logs/``, the PIDs to ``out_dir/flower/processes.json``.
    ``clientapp="warm"``: one long-lived ClientApp process per SuperNode (see the module
    docstring) instead of flwr's one process per message.
    """
    return LocalFederation(
        out_dir,
        num_supernodes,
        insecure=insecure,
        supernode_auth=supernode_auth,
        node_configs=node_configs,
        env=env,
        start_timeout=start_timeout,
        clientapp=clientapp,
    ).start()


def kill_recorded(out_dir: Path) -> list[int]:
    """SIGKILL what ``out_dir/flower/processes.json`` lists (after a crash of the parent).

    Only PIDs whose command line still names a Flower process are touched (PIDs get reused).
    Returns the PIDs signalled.
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
        cmd = _cmdline(pid) if isinstance(pid, int) else ""
        if cmd and pid_alive(pid) and ("flower-super" in cmd or "clientapp-worker" in cmd
                                       or "flower.fastnode" in cmd):
            _signal_tree(pid, _tree(pid), signal.SIGKILL)
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

    serve_clientapp_tasks(
        args.runtime_api_address,
        insecure=args.insecure,
        root_certificates=args.root_certificates,
        parent_pid=args.parent_pid,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
