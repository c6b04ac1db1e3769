"""Checkpoint overhead: a demo round with its checkpoint / the same round without it.

Builds the former demo's multi-round run (``small`` preset, the default configuration with the
former 12 local steps, pinned so the figure stays comparable), then times, alternately in one
process, a round (4 clients x 12 local steps, aggregation, no evaluation)
and the checkpoint the run writes after it (global adapter, strategy state, client states,
metadata; fsynced and renamed into place). Prints the medians and

    ratio = (round + checkpoint) / round        (goal <= 1.02)

    python benchmarks/checkpoint_overhead.py [--preset small] [--repeats 5] [--algorithm fedadam]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small", choices=["tiny", "small"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--algorithm", default="fedavg",
                    help="fedadam/scaffold checkpoint optimizer or client state too")
    args = ap.parse_args()

    from fedmllm.config import load_config
    from fedmllm.report.console import RoundProgress
    from fedmllm.runtime import build_driver

    out = tempfile.mkdtemp(prefix="fedmllm-ckpt-")
    try:
        cfg = load_config(None, [f"model.preset={args.preset}", f"fl.algorithm={args.algorithm}",
                                 "fl.local_steps=12", f"output.dir={out}", "output.progress=false",
                                 "eval.every=1000", f"fl.rounds={args.repeats + 2}"])
        run = build_driver(cfg)
        quiet = RoundProgress(None, 0, False)
        rounds, ckpts = [], []
        for r in range(1, args.repeats + 2):
            t0 = time.perf_counter()
            run.run_round(r, quiet)
            t1 = time.perf_counter()
            run.done = r
            run.checkpoint(r)
            t2 = time.perf_counter()
            if r > 1:  # round 1 warms up
                rounds.append(t1 - t0)
                ckpts.append(t2 - t1)
        size = sum(f.stat().st_size for f in (run.session.out / "checkpoint").rglob("*")
                   if f.is_file())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    r, c = statistics.median(rounds), statistics.median(ckpts)
    print(f"preset={args.preset} algorithm={args.algorithm} clients/round="
          f"{cfg.fl.clients_per_round} local_steps={cfg.fl.local_steps} checkpoint "
          f"{size / 1e6:.2f} MB")
    print(f"round without checkpoint: {r:.3f} s   checkpoint: {c * 1000:.1f} ms   "
          f"(medians of {len(rounds)})")
    print(f"ratio (round + checkpoint) / round = {(r + c) / r:.4f}   (goal <= 1.02)")


if __name__ == "__main__":
    main()
