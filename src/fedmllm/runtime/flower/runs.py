"""Runs on a SuperLink through Flower's own CLI: submit, follow, ask the status, stop.

A run is submitted with ``flwr run APP CONNECTION --format json``, which prints the new
run's id as JSON (``{"success": true, "run-id": "7", ...}``) and returns; ``flwr log RUN_ID
CONNECTION --stream`` then copies the ServerApp's output to the run's log file and ends when
the run has finished (the ServerApp's stdout/stderr reach no file of ours: its SuperExec
starts it with ``stdout=DEVNULL`` and it uploads its output to the SuperLink). The final
status comes from ``flwr list --run-id RUN_ID --format json``; ``flwr stop`` ends a run that
outlives its timeout.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .procs import FederationError, Proc, exe, last_line, log_tail


@dataclass
class RunResult:
    """What ``AppRun.wait`` found out about one run."""

    run_id: int | None
    status: str  # flwr's "finished:completed" | "finished:failed" | "finished:stopped" | ...
    details: str
    seconds: float
    log_path: Path  # the ServerApp's stdout/stderr, as ``flwr log --stream`` printed them
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "finished:completed"

    @property
    def log_text(self) -> str:
        return log_tail(self.log_path)


@dataclass
class FlwrCli:
    """The ``flwr`` command against one SuperLink connection of ``env``'s ``FLWR_HOME``."""

    connection: str
    env: dict[str, str]
    cwd: Path

    def __call__(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        return subprocess.run([exe("flwr"), *args], check=False, cwd=self.cwd, env=self.env,
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def json(self, *args: str, timeout: float = 60.0) -> dict:
        """``flwr ARGS --format json``'s answer; :class:`FederationError` unless it succeeded."""
        res = self(*args, "--format", "json", timeout=timeout)
        data = _json_object(res.stdout)
        if res.returncode != 0 or not isinstance(data, dict) or not data.get("success", False):
            lines = (res.stderr.strip() or res.stdout.strip() or "no output").splitlines()
            reason = data.get("error-message") if isinstance(data, dict) else None
            raise FederationError(f"flwr {' '.join(args)} failed: {reason or lines[-1]}")
        return data

    def run_status(self, run_id: int) -> tuple[str, str]:
        """(status, details) of a run, e.g. ("finished:completed", "N/A")."""
        run = self.json("list", self.connection, "--run-id", str(run_id))["runs"][0]
        return str(run.get("status", "unknown")), str(run.get("status-details", ""))

    def submit(self, app_dir: Path, config_file: Path | None, log: Proc) -> AppRun:
        """``flwr run`` the app (run config from ``config_file``), then follow its output
        into ``log.log_path`` with ``log``'s name and environment."""
        args = ["run", str(app_dir), self.connection]
        if config_file is not None:
            args += ["--run-config", str(config_file)]
        offset = log.log_path.stat().st_size if log.log_path.exists() else 0
        started = time.monotonic()
        try:
            run_id = int(self.json(*args, timeout=300.0)["run-id"])
        except FederationError as err:
            log.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log.log_path, "a", encoding="utf-8") as fh:
                fh.write(f"{err}\n")
            return AppRun(self, None, log, offset, started, str(err))
        log.argv = [exe("flwr"), "log", str(run_id), self.connection, "--stream"]
        return AppRun(self, run_id, log.start(self.cwd), offset, started)


def _json_object(text: str) -> dict | None:
    start = text.find("{")
    try:
        return json.loads(text[start:]) if start >= 0 else None
    except json.JSONDecodeError:
        return None


class AppRun:
    """A submitted run; ``wait()`` gives its :class:`RunResult`. ``proc`` is the ``flwr log
    --stream`` process writing the ServerApp's output to ``proc.log_path`` from
    ``log_offset`` on (a folder used again, as by a resumed run, appends to its log)."""

    def __init__(self, cli: FlwrCli, run_id: int | None, proc: Proc, log_offset: int,
                 started: float, error: str = "") -> None:
        self.cli, self.run_id, self.proc = cli, run_id, proc
        self.log_offset, self.started, self.error = log_offset, started, error

    def wait(self, timeout: float = 600.0) -> RunResult:
        """Wait for the run to finish (its log stream ends then); ``flwr stop`` it after
        ``timeout`` seconds from its submission."""
        timed_out = False
        if self.proc.popen is not None:
            try:
                self.proc.popen.wait(timeout=max(0.0, self.started + timeout - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
                self.proc.terminate(grace=2.0)
                self.cli("stop", str(self.run_id), self.cli.connection)
        status, details = "not-started", self.error or last_line(
            log_tail(self.proc.log_path, self.log_offset))
        if self.run_id is not None:
            try:
                status, details = self.cli.run_status(self.run_id)
            except FederationError as err:
                status, details = "unknown", str(err)
            if timed_out and not status.startswith("finished"):
                status = "timeout"
        return RunResult(run_id=self.run_id, status=status, details=details,
                         seconds=round(time.monotonic() - self.started, 2),
                         log_path=self.proc.log_path, timed_out=timed_out)
