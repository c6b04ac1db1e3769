"""Running a grid: every cell a ``fedmllm run`` with its own run folder, in worker processes
that keep the loaded base model from one cell to the next.

The sweep folder ``OUT`` holds::

    bench.json            the grid (cells, their keys) and every cell's status, error, seconds
    grid.toml             a copy of the grid file
    configs/<cell>.yaml   each cell's full configuration (what its run runs)
    runs/<cell>/          each cell's run folder (config.yaml, metrics.jsonl, summary.json ...)
    logs/<cell>.log       each cell's console output (logs/workers.log: the workers' own)
    results.csv, report.md, report.html, figures/   (:mod:`fedmllm.bench.report`)

Cells run ``jobs`` at a time (a ``concurrent.futures`` pool of ``jobs`` threads), each limited
to ``threads`` CPU threads (``OMP_NUM_THREADS``; default: the cores divided by the jobs) so
that parallel cells do not oversubscribe the machine. Each pool thread hands its cells to a
worker process (:mod:`fedmllm.bench.worker`), which runs them one after another as ``fedmllm
run`` would, loading the base model only when a cell needs another one than the last: the
results are bit for bit those of a cell run alone. ``isolate`` runs every cell as a ``fedmllm
run`` process of its own instead (the reference, and the fallback). A cell that fails is
recorded with its one-line error and the sweep goes on; a cell that kills its worker is
recorded failed and the next cell gets a new worker. Ctrl-C stops the running cells the way
Ctrl-C stops a run (each is told once and leaves a resumable checkpoint), keeps every finished
cell, and says how to continue; ``--resume`` skips finished cells and continues unfinished ones
from their checkpoints (``fedmllm run --resume``). Every cell's seeds are its own, so a cell
gives the same numbers whichever cells run beside it or before it.
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
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import yaml

from ..config import Config, ConfigError, flatten
from ..errors import OutputError
from ..files import atomic_write_json, atomic_write_text
from ..report.console import RoundProgress
from .grid import Cell, Grid
from .worker import Worker

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
    if out.is_dir() and any(p.name != "tune" for p in out.iterdir()):  # tune/: tune.py's
        raise OutputError(f"{out}: not empty and not a bench folder; choose another --out")
    if resume and not (out / "tune").is_dir():
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
    that configuration still (:func:`_same_config`). Otherwise the sweep's numbers would mix
    two grids."""
    defaults = flatten(yaml.safe_load(Config().to_yaml()))
    for cell in grid.cells:
        saved = out / "configs" / f"{cell.id}.yaml"
        if not saved.is_file():
            continue
        _place(out, grid, cell)
        if not _same_config(saved.read_text(), cell.config, defaults):
            raise OutputError(f"{out}: cell {cell.id} ran with another configuration than the "
                              f"grid now gives it ({saved}); a resumed sweep may only add "
                              "cells: choose another --out")


def _same_config(saved_text: str, config: Config, defaults: dict) -> bool:
    """Whether a cell's saved configuration (YAML) is ``config``: every key equal, except
    that a key the saved one lacks may stand at its default (a key added to fedmllm since
    the cell ran, which changes nothing it ran)."""
    from ..engine.checkpoint import only_new_defaults

    try:
        saved = yaml.safe_load(saved_text) or {}
    except yaml.YAMLError:
        return False
    return only_new_defaults(saved, yaml.safe_load(config.to_yaml()), defaults)


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


def _headline(folder: Path, grid: Grid) -> str:
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return ""
    from .results import view_metrics

    value = view_metrics(summary.get("final", {}), grid.view).get(grid.metric)
    return f" {grid.view} {grid.metric} {value:.3f}" if isinstance(value, float) else ""


def run_bench(grid: Grid, out: str | Path, jobs: int = 1, resume: bool = False,
              threads: int | None = None, console=None, isolate: bool = False) -> dict:
    """Run every cell of ``grid`` under ``out`` (see the module docstring; ``isolate``: a
    process per cell); return the cell statuses. Raises :class:`BenchInterrupted` on Ctrl-C
    once the running cells have stopped."""
    out = Path(out)
    if jobs < 1:
        raise ConfigError(f"--jobs: must be at least 1, got {jobs}")
    if grid.tune is not None:  # the tuning phase first; the report cells run with its choice
        from .tune import run_tuning

        grid = run_tuning(grid, out, run_bench, jobs, resume, threads, console)
    status = _open_folder(out, grid, resume)
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    for sub in ("configs", "runs", "logs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    if grid.path.resolve() != (out / "grid.toml").resolve():
        shutil.copyfile(grid.path, out / "grid.toml")
    todo = [cell for cell in grid.cells if not _mark(out, cell, status)]
    sweep = _Sweep(out, grid, status, jobs, threads, isolate)
    sweep.save()
    _build_presets(grid, console)
    # the cells run in sessions of their own (a terminal's Ctrl-C reaches only this process,
    # which tells each cell once); SIGTERM stops the sweep the same way as Ctrl-C
    previous = signal.getsignal(signal.SIGTERM)
    main = threading.current_thread() is threading.main_thread()
    if main:
        signal.signal(signal.SIGTERM, _raise_interrupt)
    with RoundProgress(console, len(grid.cells), True, len(grid.cells) - len(todo),
                       what="cells", eta=True) as progress:
        progress.print(f"fedmllm bench: {len(grid.cells)} cells ({len(todo)} to run) in "
                       f"{out}, {jobs} at a time, {threads} threads each"
                       f"{', a process each' if isolate else ''}")
        sweep.progress, progress.running = progress, 0
        try:
            sweep.run(todo)
        except KeyboardInterrupt:
            sweep.stop()
            raise BenchInterrupted(str(out)) from None
        finally:
            sweep.close()
            if main:
                signal.signal(signal.SIGTERM, previous)
    return status


def _mark(out: Path, cell: Cell, status: dict) -> bool:
    """Record ``cell`` as done (its summary exists) or pending; whether it is done."""
    done = (_cell_folder(out, cell) / "summary.json").is_file()
    status[cell.id] = {**status.get(cell.id, {}), "status": "done" if done else "pending"}
    return done


class _Process:
    """A cell's ``fedmllm run`` in a process of its own (``isolate``); the same calls as a
    :class:`~fedmllm.bench.worker.Worker` running a cell."""

    def __init__(self, args: list[str], log: Path, env: dict):
        self.log = open(log, "a")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "fedmllm", *args], stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.returncode: int | None = None
        self.dead = True  # used once

    def wait(self) -> int:
        self.returncode = self.proc.wait()
        self.log.close()
        return self.returncode

    def join(self, timeout: float) -> bool:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def interrupt(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # the run checkpoints and stops

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()


class _Sweep:
    """The cells of one sweep in a pool of ``jobs`` threads, each of which hands a cell to a
    worker (or starts its process) and waits for it; cells start in the grid's order and are
    recorded as they end. ``bench.json`` is rewritten at every change of a cell's status."""

    def __init__(self, out: Path, grid: Grid, status: dict, jobs: int, threads: int,
                 isolate: bool = False):
        self.out, self.grid, self.status, self.jobs, self.threads, self.isolate = \
            out, grid, status, jobs, threads, isolate
        # FEDMLLM_BENCH_CELL: the cell's process takes SIGINT as Ctrl-C even where the sweep
        # was started with SIGINT ignored (a background job of a non-interactive shell, see
        # cli.main)
        self.env = {**os.environ, "OMP_NUM_THREADS": str(threads),
                    "MKL_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false",
                    "FEDMLLM_BENCH_CELL": "1"}
        self.running: dict[str, tuple[Worker | _Process, float]] = {}
        self.idle: list[Worker] = []
        self.workers: list[Worker] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.progress: RoundProgress | None = None

    def save(self) -> None:
        atomic_write_json(self.out / STATE, {**self.grid.to_json(), "jobs": self.jobs,
                                             "threads": self.threads, "status": self.status})

    def run(self, todo: list[Cell]) -> None:
        pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="bench-cell")
        try:
            for future in as_completed([pool.submit(self._cell, c) for c in todo]):
                ended = future.result()
                if ended is not None:
                    self._finished(*ended)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _cell(self, cell: Cell) -> tuple[str, int] | None:
        """A pool thread: run ``cell`` and wait for it; its id and exit status (``None``: not
        started, the sweep is stopping). The worker is free for another cell again."""
        with self.lock:
            if self.stopping.is_set():
                return None
            runner = self._start(cell)
            self.running[cell.id] = (runner, time.monotonic())
            self.status[cell.id] = {"status": "running",
                                    "command": cell.command(self.grid.base)}
            self.progress.running = len(self.running)
            self.save()
        loads = getattr(runner, "loads", 0)
        rc = runner.wait()
        if not runner.dead:
            with self.lock:
                if runner.loads == loads:  # the worker's base served this cell again
                    self.status[cell.id]["base"] = "reused"
                self.idle.append(runner)
        return cell.id, rc

    def _start(self, cell: Cell) -> Worker | _Process:
        """The cell's ``fedmllm run``, resumed from its checkpoint when it started before,
        else from its configuration file: on an idle worker (a new one if none is, or if the
        idle one has died), or with ``isolate`` in a process of its own."""
        folder = _cell_folder(self.out, cell)
        config_file = self.out / "configs" / f"{cell.id}.yaml"
        _place(self.out, self.grid, cell)
        atomic_write_text(config_file, cell.config.to_yaml())
        if (folder / "config.yaml").is_file():  # started before: continue it
            args = ["run", "--resume", str(folder)]
        else:
            if folder.exists():  # made but never started: nothing of value
                shutil.rmtree(folder)
            args = ["run", "--config", str(config_file)]
        log = self.out / "logs" / f"{cell.id}.log"
        if self.isolate:
            return _Process(args, log, self.env)
        while True:
            worker = self.idle.pop() if self.idle else None
            if worker is None:
                worker = Worker(self.env, self.out / "logs" / "workers.log")
                self.workers.append(worker)
            if worker.start(cell.id, args, log, self.threads):
                return worker

    def close(self) -> None:
        """End every worker (each finishes its cell first: after :meth:`stop`, none runs)."""
        for worker in self.workers:
            worker.close()
        self.workers, self.idle = [], []

    def _finished(self, cid: str, rc: int) -> None:
        """Record an ended cell as done (exit 0 and a summary) or failed, with its seconds."""
        with self.lock:
            _, t0 = self.running.pop(cid)
            self.progress.running = len(self.running)
            seconds = round(time.monotonic() - t0, 1)
            folder = self.out / "runs" / cid
            if rc == 0 and (folder / "summary.json").is_file():
                self.status[cid].update(status="done", seconds=seconds)
                text = (f"{cid} done in {seconds:.0f} s{_headline(folder, self.grid)} "
                        f"(ETA {self.progress.eta()})")
            else:
                err = (f"killed by {signal.Signals(-rc).name}" if rc < 0 else
                       _error_line(self.out / "logs" / f"{cid}.log"))
                self.status[cid].update(status="failed", seconds=seconds, error=err,
                                        returncode=rc)
                text = f"{cid} FAILED: {err}"
            self.progress.client_done()
            self.progress.print(f"[{self.progress.done}/{self.progress.total}] {text}")
            self.save()

    def stop(self) -> None:
        """Ctrl-C: no more cells start; each running one is told once (it checkpoints and
        stops), given up to 60 s in all, then killed; all are recorded as interrupted."""
        with self.lock:
            self.stopping.set()
            self.progress.stop_heartbeat()
            self.progress.print(f"stopping: telling the {len(self.running)} running cell(s) "
                                "to checkpoint and stop (up to 60 s)")
            for runner, _ in self.running.values():
                runner.interrupt()
            deadline = time.monotonic() + 60
            for cid, (runner, _) in self.running.items():
                if not runner.join(max(0.1, deadline - time.monotonic())):
                    runner.kill()
                    runner.join(10)
                self.status[cid]["status"] = "interrupted"
            self.save()
