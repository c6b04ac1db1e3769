"""Process groups for the local federation, through :mod:`psutil`.

Every process started here (:meth:`Proc.start`) leads a new session, so it and the children
it starts share one process group whose id is its pid. Stopping one (:meth:`Proc.terminate`)
takes its whole tree: the process group and every descendant, also those that left the group
(flwr's SuperLink starts its SuperExec in a session of its own, found only through the parent
link), SIGTERM first and SIGKILL for what is left after a grace period. A tree is read before
it is signalled, because children re-parented after their parent died are no longer
descendants of anything of ours.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

HOST = "127.0.0.1"


class FederationError(RuntimeError):
    """A process of the local federation died or did not come up in time."""


def exe(name: str) -> str:
    """The console script ``name`` of this interpreter's environment (else from ``PATH``)."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FederationError(f"{name} not found next to {sys.executable} nor on PATH")
    return found


def free_ports(n: int) -> list[int]:
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


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def tree(pid: int) -> list[psutil.Process]:
    """``pid``'s descendants and the other members of its process group (the group outlives
    its leader: children of a dead process are found through it)."""
    found: dict[int, psutil.Process] = {}
    try:
        found.update({p.pid: p for p in psutil.Process(pid).children(recursive=True)})
    except psutil.NoSuchProcess:
        pass
    for proc in psutil.process_iter():
        try:
            if proc.pid != pid and os.getpgid(proc.pid) == pid:
                found.setdefault(proc.pid, proc)
        except (OSError, psutil.Error):
            continue
    return list(found.values())


def signal_tree(pid: int, sig: int, members: list[psutil.Process], *, group: bool) -> None:
    """Send ``sig`` to ``pid``'s process group (``group``: while that id is surely ours), to
    ``pid`` and to each of ``members``. Our own group is spared."""
    if group and pid != os.getpgrp():
        try:
            os.killpg(pid, sig)
        except OSError:
            pass
    for proc in members:
        try:
            proc.send_signal(sig)
        except psutil.Error:
            pass


@dataclass
class Proc:
    """A process of the federation: its command, environment and log file."""

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

    def start(self, cwd: Path) -> Proc:
        """Start it in a new session (its own process group), output appended to its log."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"=== {stamp} fedmllm starts: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(self.argv, cwd=cwd, env=self.env,
                                          stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def terminate(self, grace: float = 5.0) -> None:
        """SIGTERM the process tree, SIGKILL what is left after ``grace`` s; reap our child."""
        self._stop(grace)

    def kill(self) -> None:
        """SIGKILL the process tree at once (a crash)."""
        self._stop(None)

    def _stop(self, grace: float | None) -> None:
        if self.popen is None:
            return
        root = self.popen.pid
        members = tree(root)
        group = self.popen.poll() is None or bool(members)  # else the id may be reused
        root_proc = [psutil.Process(root)] if self.popen.poll() is None else []
        everyone = root_proc + members
        if grace is not None:
            signal_tree(root, signal.SIGTERM, everyone, group=group)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and (self.alive() or _living(everyone)):
                time.sleep(0.1)
                everyone += [p for p in tree(root) if p not in everyone]
        if self.alive() or _living(everyone):
            signal_tree(root, signal.SIGKILL, everyone, group=group)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILLed above
            pass
        psutil.wait_procs(members, timeout=5)


def _living(procs: list[psutil.Process]) -> bool:
    """Whether any of ``procs`` still runs (``is_running`` also sees a reused pid)."""
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except psutil.Error:
            continue
    return False


def log_tail(path: Path, start: int = 0) -> str:
    """The text of the file ``path`` from byte ``start`` on ("" when unreadable)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def last_line(text: str) -> str:
    """The last non-blank line of ``text`` (at most 300 characters)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(empty log)"
