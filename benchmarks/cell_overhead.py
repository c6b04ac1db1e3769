"""A bench cell's overhead: a process per cell (``fedmllm bench --isolate``) vs worker
processes that keep the loaded base from cell to cell (the default).

The same few tiny cells (FedAvg, FedProx, one-shot YOCO; two seeds) run both ways, one cell at
a time, in one invocation. A cell's overhead is its wall time in the sweep (``bench.json``'s
``seconds``: from handing the cell out to its end) minus the training and evaluation time its
run records (the sum of its ``metrics.jsonl`` rows' ``seconds``: a round's, or the one-shot
run's, training and evaluation): starting Python, importing torch and transformers, loading the
model, building the data, writing the outputs. The run's own ``setup_seconds`` (model loading and
data building inside the run) is shown beside it. Printed per cell, the medians, and
worker / process. Noisy on a shared machine: the load average is printed with it.

    python benchmarks/cell_overhead.py [--seeds 2] [--threads 1] [KEY=VALUE ...]

``KEY=VALUE`` reach every cell (``model.name=... train.device=cuda`` for a real VLM, where
the load is what the workers save).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRID = """
[bench]
seeds = {seeds}

[fixed]
"model.preset" = "tiny"
fl = {{ rounds = 2, local_steps = 2, num_clients = 3, clients_per_round = 2 }}
data = {{ train_size = 36, test_size = 12, min_per_client = 4 }}
"eval.views" = ["image_text"]

[axes]
"fl.algorithm" = ["fedavg", "fedprox", "yoco"]
"""


def sweep(grid: Path, out: Path, threads: int, overrides: list[str], isolate: bool) -> dict:
    """Run the grid into ``out``; per cell ``(wall, train + eval, setup)`` seconds."""
    args = [sys.executable, "-m", "fedmllm", "-q", "bench", str(grid), "--out", str(out),
            "--jobs", "1", "--threads", str(threads), *overrides]
    t0 = time.perf_counter()
    subprocess.run([*args, *(["--isolate"] if isolate else [])], check=True,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
    print(f"  {'process per cell' if isolate else 'workers'}: sweep "
          f"{time.perf_counter() - t0:.1f} s")
    cells = {}
    for cell, st in json.loads((out / "bench.json").read_text())["status"].items():
        run = out / "runs" / cell
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        work = sum(r.get("seconds", 0.0) for r in rows)
        setup = json.loads((run / "summary.json").read_text())["totals"]["setup_seconds"]
        cells[cell] = (st["seconds"], work, setup)
    return cells


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = ap.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
          f"{os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="fedmllm-cells-") as tmp:
        grid = Path(tmp) / "cells.toml"
        grid.write_text(GRID.format(seeds=list(range(args.seeds))))
        both = {name: sweep(grid, Path(tmp) / name, args.threads, args.overrides,
                            name == "isolate") for name in ("isolate", "worker")}
    print(f"{'cell':28} {'mode':>8} {'wall':>7} {'train+eval':>10} {'setup':>7} "
          f"{'overhead':>9}")
    medians = {}
    for name, cells in both.items():
        for cell, (wall, work, setup) in cells.items():
            print(f"{cell:28} {name:>8} {wall:7.1f} {work:10.2f} {setup:7.2f} "
                  f"{wall - work:9.2f}")
        medians[name] = statistics.median(wall - work for wall, work, _ in cells.values())
    print(f"median overhead per cell: process per cell {medians['isolate']:.2f} s, "
          f"worker {medians['worker']:.2f} s; worker / process "
          f"{medians['worker'] / medians['isolate']:.3f}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
