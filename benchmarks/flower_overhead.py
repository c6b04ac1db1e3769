"""Flower overhead: a round of the demo configuration over `fedmllm flower local` / in-process.

The former demo's configuration (`small` preset, 12 local steps per client, both pinned) with
2 clients, both trained every round, runs twice from the same seed: in this process
(`fedmllm run`) and over a loopback Flower federation of 2 SuperNodes with TLS and SuperNode
authentication (warm ClientApps: each SuperNode keeps its model loaded). The figure is the
median over rounds 2..R of each round's training time (`train_seconds` in metrics.jsonl: from
sending the round to having aggregated it; round 1 also loads the SuperNodes' models and is
left out):

    ratio = Flower round / in-process round          (goal <= 1.15)

The Flower round also pays the stock SuperNode's polls: after its reply a flwr 1.42 SuperNode
asks for the next message at once, and when the server has not sent it yet sleeps 3 s before
asking again (and looks for its ClientApp's reply every 0.5 s); nothing public shortens them
(docs/flower-internals.md). So the difference per round (printed) is about constant, and the
ratio falls as a round's training grows (`--local-steps`).

The two runs end with the same adapter when each client trains on the same number of threads
(`--threads 1`: the in-process run then trains on one thread, as each of the 2 SuperNodes
does); by default the in-process run uses every core for the one client it trains at a time,
which sums in another order (printed: max abs difference).

    python benchmarks/flower_overhead.py [--rounds 5] [--preset small] [--local-steps 12]
        [--clientapp warm|subprocess] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")


def round_seconds(out: Path) -> list[float]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["train_seconds"] for r in rows[1:]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--preset", default="small", choices=["tiny", "small"])
    ap.add_argument("--clientapp", default="warm", choices=["warm", "subprocess"])
    ap.add_argument("--local-steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads of the in-process run (default: every core)")
    args = ap.parse_args()
    common = [f"model.preset={args.preset}", f"fl.local_steps={args.local_steps}",
              "fl.num_clients=2",
              "fl.clients_per_round=2",
              f"fl.rounds={args.rounds}", f"eval.every={args.rounds}", "output.plot=false",
              "output.progress=false"]
    root = Path(tempfile.mkdtemp(prefix="fedmllm-flower-bench-"))
    try:
        t0 = time.perf_counter()
        env = dict(os.environ)
        if args.threads:
            env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        subprocess.run([sys.executable, "-m", "fedmllm.cli", "run", *common,
                        f"output.dir={root / 'local'}"], check=True, capture_output=True,
                       env=env)
        t1 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fedmllm.cli", "flower", "local", "--supernodes",
                        "2", "--clientapp", args.clientapp, *common,
                        f"output.dir={root / 'flower'}"], check=True, capture_output=True)
        t2 = time.perf_counter()
        local, flower = round_seconds(root / "local"), round_seconds(root / "flower")
        from safetensors.torch import load_file

        a = load_file(root / "local" / "adapter" / "adapter_model.safetensors")
        b = load_file(root / "flower" / "adapter" / "adapter_model.safetensors")
        diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    lm, fm = statistics.median(local), statistics.median(flower)
    print(f"preset={args.preset} 2 clients x {args.local_steps} local steps, {args.rounds} "
          f"rounds, ClientApp {args.clientapp}, {os.cpu_count()} cores, in-process threads "
          f"{args.threads or 'default'}")
    print(f"round (median of rounds 2..{args.rounds}): in-process {lm:.2f} s, "
          f"Flower (2 SuperNodes, TLS) {fm:.2f} s; difference {fm - lm:+.2f} s")
    print(f"whole command: in-process {t1 - t0:.1f} s, Flower {t2 - t1:.1f} s (with start-up)")
    print(f"final adapters: max abs difference {diff:.2e}")
    print(f"ratio Flower / in-process = {fm / lm:.3f}   (goal <= 1.15)")


if __name__ == "__main__":
    main()
