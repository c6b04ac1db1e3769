"""Scaling in the number of clients: peak RSS and seconds per round at 10, 100 and 1,000 clients.

The synthetic ``binary`` task with the ``tiny`` model, ``--per-client`` training samples per
client (so the data grows with the federation: 20 x 1,000 = 20,000 samples), 4 clients sampled
per round, ``--rounds`` rounds of FedAvg with ``--steps`` local steps (no evaluation). Each
federation size runs in its own process (``--child N``), so its peak resident set size
(``ru_maxrss``) is its own, model loading and data building included. Seconds per round (wall
and this process's CPU time, which a busy shared machine disturbs less) are medians over the
rounds after the first; a round is what a run does per round: sampling, the clients' local
runs, aggregation, and the checkpoint.

Goals: 1,000 clients within 4 GB peak RSS, and a round time that does not grow with
the total number of clients (the last line prints ``s/round(1000) / s/round(10)``).

    python benchmarks/scale_clients.py [--clients 10 100 1000] [--per-client 20] [--rounds 6]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def rss_mb() -> float:
    """Current resident set size of this process in MB (from /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:  # pragma: no cover - not Linux
        return 0.0


def child(n: int, args: argparse.Namespace) -> dict:
    """One federation of ``n`` clients in this process: set-up, then ``args.rounds`` rounds
    (each: sampling, the 4 clients' local runs, aggregation, the checkpoint); its figures."""
    import torch

    from fedmllm.config import load_config
    from fedmllm.report.console import RoundProgress
    from fedmllm.runtime import build_driver

    torch.set_num_threads(args.threads)
    out = tempfile.mkdtemp(prefix="fedmllm-scale-")
    try:
        t0 = time.perf_counter()
        cfg = load_config(None, [
            "model.preset=tiny", "data.task=binary", f"fl.num_clients={n}",
            "fl.clients_per_round=4", f"data.train_size={n * args.per_client}",
            "data.test_size=40", f"data.min_per_client={min(2, args.per_client)}",
            "fl.rounds=1000", f"fl.local_steps={args.steps}", "eval.every=1000",
            "output.plot=false", "output.progress=false", f"output.dir={out}"])
        run = build_driver(cfg)
        setup = time.perf_counter() - t0
        rss_setup = rss_mb()
        quiet = RoundProgress(None, 0, False)
        wall, cpu = [], []
        for r in range(1, args.rounds + 1):
            w0, c0 = time.perf_counter(), time.process_time()
            run.run_round(r, quiet)
            run.done = r
            run.checkpoint(r)
            wall.append(time.perf_counter() - w0)
            cpu.append(time.process_time() - c0)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"clients": n, "samples": n * args.per_client, "setup_s": round(setup, 2),
            "rss_after_setup_mb": round(rss_setup, 1),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3,
            "s_per_round": statistics.median(wall[1:] or wall),
            "cpu_s_per_round": statistics.median(cpu[1:] or cpu),
            "rounds": [round(w, 3) for w in wall]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--per-client", type=int, default=20, help="training samples per client")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: steadier timings on a shared machine)")
    ap.add_argument("--steps", type=int, default=4, help="local steps per client and round")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args)))
        return
    rows = []
    for n in args.clients:
        cmd = [sys.executable, __file__, "--child", str(n), "--per-client", str(args.per_client),
               "--rounds", str(args.rounds), "--steps", str(args.steps),
               "--threads", str(args.threads)]
        done = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{n} clients: failed: {done.stderr.strip().splitlines()[-1:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{r['clients']:>5} clients ({r['samples']:>6} samples): peak RSS "
              f"{r['peak_rss_mb']:7.0f} MB (after set-up {r['rss_after_setup_mb']:.0f} MB), "
              f"set-up {r['setup_s']:6.1f} s, {r['s_per_round']:.3f} s/round "
              f"({r['cpu_s_per_round']:.3f} CPU s)", flush=True)
    print(f"tiny preset, 4 clients/round x {args.steps} steps, medians of rounds 2-"
          f"{args.rounds}, {args.threads} torch thread(s); goal: 1,000 clients within 4,000 MB")
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        print(f"s/round({last['clients']}) / s/round({first['clients']}) = "
              f"{last['s_per_round'] / first['s_per_round']:.2f} wall, "
              f"{last['cpu_s_per_round'] / first['cpu_s_per_round']:.2f} CPU "
              f"(goal: no growth, ~1.0); peak RSS {last['peak_rss_mb']:.0f} MB (goal <= 4000)")


if __name__ == "__main__":
    main()
