"""Running a grid: every cell a ``fedmllm run`` in its own process and its own run folder.

The sweep folder ``OUT`` holds::

    bench.json            the grid (cells, their keys) and every cell's status, error, seconds
    grid.toml             a copy of the grid file
    configs/<cell>.yaml   each cell's full configuration (what its process runs)
    runs/<cell>/          each cell's run folder (config.yaml, metrics.jsonl, summary.json ...)
    logs/<cell>.log       each cell's console output
    results.csv, report.md, report.html, figures/   (:mod:`fedmllm.bench.report`)

Cells run in ``jobs`` parallel processes, each limited to ``threads`` CPU threads
(``OMP_NUM_THREADS``; default: the cores divided by the jobs) so that parallel cells do not
oversubscribe the machine. A cell that fails is recorded with its one-line error and the sweep
goes on. Ctrl-C stops the running cells the way Ctrl-C stops a run (each is told once and
leaves a resumable checkpoint), keeps every finished cell, and says how to continue;
``--resume`` skips finished cells and continues unfinished ones from their checkpoints
(``fedmllm run --resume``). Every cell's seeds are its own, so a cell gives the same numbers
whichever cells run beside it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..config import ConfigError
from ..errors import OutputError
from ..files import atomic_write_json, atomic_write_text
from .grid import Cell, Grid

__all__ = ["BenchInterrupted", "run_bench"]

STATE = "bench.json"


class BenchInterrupted(Exception):
    """Ctrl-C during a sweep: finished cells are kept; ``--resume`` continues."""


def _cell_folder(out: Path, cell: Cell) -> Path:
    return out / "runs" / cell.id


def _error_line(log: Path) -> str:
    """The cell's one-line error: the last ``fedmllm: error:`` line of its log, else the last
    line."""
    try:
        lines = [x.strip() for x in log.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return "no log"
    for prefix in ("fedmllm: error:", "fedmllm:"):
        for line in reversed(lines):
            if line.startswith(prefix):
                return line
    return lines[-1] if lines else "exited without output"


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt




def _open_folder(out: Path, grid: Grid, resume: bool) -> dict:
    """Check ``out`` and return the saved cell statuses (empty for a new sweep)."""
    state_file = out / STATE
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder (--out)")
    if state_file.is_file():
        try:
            saved = json.loads(state_file.read_text())
        except ValueError:
            raise OutputError(f"{state_file}: unreadable; choose another --out") from None
        if not resume:
            raise OutputError(f"{out}: holds a sweep; continue it with --resume, or choose "
                              "another --out")
        if saved.get("digest") != grid.digest:
            _check_extension(out, grid)
        return saved.get("status", {})
    if out.is_dir() and any(out.iterdir()):
        raise OutputError(f"{out}: not empty and not a bench folder; choose another --out")
    if resume:
        raise OutputError(f"{out}: no sweep to resume ({STATE} missing)")
    return {}


def _place(out: Path, grid: Grid, cell) -> None:
    """Set what a cell's configuration takes from the sweep folder: its run folder and, with
    ``share_uploads``, the shared store of one-shot uploads."""
    cell.config.output.dir = str(_cell_folder(out, cell))
    if grid.share_uploads and cell.config.fl.algorithm in ("yoco", "oneshot"):
        cell.config.fl.yoco.upload_cache = str(out / "uploads")


def _check_extension(out: Path, grid: Grid) -> None:
    """A resumed sweep whose grid changed is accepted when it only adds cells (more seeds,
    methods or settings): every cell that already has a configuration in ``out`` must have
    exactly that configuration still. Otherwise the sweep's numbers would mix two grids."""
    for cell in grid.cells:
        saved = out / "configs" / f"{cell.id}.yaml"
        if not saved.is_file():
            continue
        _place(out, grid, cell)
        if saved.read_text() != cell.config.to_yaml():
            raise OutputError(f"{out}: cell {cell.id} ran with another configuration than the "
                              f"grid now gives it ({saved}); a resumed sweep may only add "
                              "cells: choose another --out")


def _build_presets(grid: Grid, console) -> None:
    """Build each built-in base model the cells need, once, before the cells start (parallel
    cells would otherwise all build it)."""
    needed = sorted({(c.config.model.preset, c.config.model.pretrain) for c in grid.cells
                     if not c.config.model.name})
    if not needed:
        return
    from ..model.tiny import ensure_tiny

    for preset, pretrain in needed:
        ensure_tiny(preset, pretrain, quiet=console is None)


class _Progress:
    """A bar over cells with an ETA in a terminal; elsewhere a line per finished cell and a
    line at least every ``heartbeat`` seconds."""

    def __init__(self, console, total: int, done: int, heartbeat: float = 10.0):
        self.console, self.total, self.done = console, total, done
        self.start_done = done
        self.running = 0
        self.t0 = time.monotonic()
        self.heartbeat = heartbeat
        self._bar = None
        self._stop = threading.Event()
        self._last = self.t0

    def __enter__(self):
        if self.console is None:
            return self
        if self.console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress("cells", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 "ETA", TimeRemainingColumn(), console=self.console,
                                 transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task("cells", total=self.total, completed=self.done)
        else:
            threading.Thread(target=self._beat, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def eta(self) -> str:
        finished = self.done - self.start_done
        if not finished:
            return "?"
        left = (time.monotonic() - self.t0) / finished * (self.total - self.done)
        return f"{left / 60:.0f} min" if left >= 90 else f"{left:.0f} s"

    def stopping(self) -> None:
        """Ctrl-C: the heartbeat stops; the running cells are being told to stop."""
        self._stop.set()
        self.line(f"stopping: telling the {self.running} running cell(s) to checkpoint and "
                  "stop (up to 60 s)")

    def _beat(self) -> None:
        while not self._stop.wait(1.0):
            now = time.monotonic()
            if now - self._last >= self.heartbeat:
                self.line(f"... {self.done}/{self.total} cells, {self.running} running, "
                          f"{now - self.t0:.0f} s, ETA {self.eta()}")

    def line(self, text: str) -> None:
        if self.console is not None:
            self._last = time.monotonic()
            self.console.print(text, markup=False, soft_wrap=True)

    def cell_done(self, text: str) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.advance(self._task)
        self.line(f"[{self.done}/{self.total}] {text}")


def _headline(folder: Path, grid: Grid) -> str:
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return ""
    from .results import view_metrics

    value = view_metrics(summary.get("final", {}), grid.view).get(grid.metric)
    return f" {grid.view} {grid.metric} {value:.3f}" if isinstance(value, float) else ""


def run_bench(grid: Grid, out: str | Path, jobs: int = 1, resume: bool = False,
              threads: int | None = None, console=None) -> dict:
    """Run every cell of ``grid`` under ``out`` (see the module docstring); return the cell
    statuses. Raises :class:`BenchInterrupted` on Ctrl-C once the running cells have stopped."""
    out = Path(out)
    if jobs < 1:
        raise ConfigError(f"--jobs: must be at least 1, got {jobs}")
    status = _open_folder(out, grid, resume)
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    for sub in ("configs", "runs", "logs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    if grid.path.resolve() != (out / "grid.toml").resolve():
        shutil.copyfile(grid.path, out / "grid.toml")

    def save() -> None:
        atomic_write_json(out / STATE, {**grid.to_json(), "jobs": jobs, "threads": threads,
                                        "status": status})

    todo: list[Cell] = []
    for cell in grid.cells:
        folder = _cell_folder(out, cell)
        if (folder / "summary.json").is_file():
            status[cell.id] = {**status.get(cell.id, {}), "status": "done"}
            continue
        status[cell.id] = {**status.get(cell.id, {}), "status": "pending"}
        todo.append(cell)
    save()
    _build_presets(grid, console)
    # FEDMLLM_BENCH_CELL: the cell's process takes SIGINT as Ctrl-C even where the sweep was
    # started with SIGINT ignored (a background job of a non-interactive shell), see cli.main
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false", "FEDMLLM_BENCH_CELL": "1"}
    running: dict[str, tuple[subprocess.Popen, float, object]] = {}
    interrupted = False
    # the cells run in sessions of their own (a terminal's Ctrl-C reaches only this process,
    # which tells each cell once); SIGTERM stops the sweep the same way as Ctrl-C
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)
    with _Progress(console, len(grid.cells), len(grid.cells) - len(todo)) as progress:
        if console is not None:
            progress.line(f"fedmllm bench: {len(grid.cells)} cells ({len(todo)} to run) in "
                          f"{out}, {jobs} at a time, {threads} threads each")
        queue = list(todo)
        try:
            while queue or running:
                while queue and len(running) < jobs:
                    cell = queue.pop(0)
                    folder = _cell_folder(out, cell)
                    config_file = out / "configs" / f"{cell.id}.yaml"
                    _place(out, grid, cell)
                    atomic_write_text(config_file, cell.config.to_yaml())
                    if (folder / "config.yaml").is_file():  # started before: continue it
                        args = ["run", "--resume", str(folder)]
                    else:
                        if folder.exists():  # made but never started: nothing of value
                            shutil.rmtree(folder)
                        args = ["run", "--config", str(config_file)]
                    log = open(out / "logs" / f"{cell.id}.log", "a")  # noqa: SIM115
                    proc = subprocess.Popen([sys.executable, "-m", "fedmllm", *args],
                                            stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
                    running[cell.id] = (proc, time.monotonic(), log)
                    status[cell.id] = {"status": "running", "command": cell.command(grid.base)}
                    progress.running = len(running)
                    save()
                for cid in list(running):
                    proc, t0, log = running[cid]
                    if proc.poll() is None:
                        continue
                    log.close()
                    del running[cid]
                    progress.running = len(running)
                    seconds = round(time.monotonic() - t0, 1)
                    folder = out / "runs" / cid
                    if proc.returncode == 0 and (folder / "summary.json").is_file():
                        status[cid].update(status="done", seconds=seconds)
                        progress.cell_done(f"{cid} done in {seconds:.0f} s"
                                           f"{_headline(folder, grid)} (ETA {progress.eta()})")
                    else:
                        rc = proc.returncode
                        err = (f"killed by {signal.Signals(-rc).name}" if rc < 0 else
                               _error_line(out / "logs" / f"{cid}.log"))
                        status[cid].update(status="failed", seconds=seconds, error=err,
                                           returncode=proc.returncode)
                        progress.cell_done(f"{cid} FAILED: {err}")
                    save()
                time.sleep(0.2)
        except KeyboardInterrupt:
            interrupted = True
            progress.stopping()
            for cid, (proc, _, _) in running.items():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)  # the run checkpoints and stops
            deadline = time.monotonic() + 60
            for cid, (proc, _, log) in running.items():
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                log.close()
                status[cid]["status"] = "interrupted"
            save()
        finally:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, previous)
    if interrupted:
        raise BenchInterrupted(str(out))
    return status
