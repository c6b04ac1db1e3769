"""Wall-clock time and accuracy of `fedmllm run` with no arguments (what `make demo` runs).

The built-in base model (the default preset) is built and cached first, as `make demo` does
before its run; then the default experiment is timed in a subprocess. Prints the run's seconds,
their ratio to the 120 s budget, and the final test accuracy with image+text, image only and
text only (Bayes ceilings 1.0 / 0.8 / 0.8 on the synthetic binary task). Unless
``--no-local``, it then runs the same experiment with ``fl.algorithm=local`` (every client
trains alone on its own data, in every round: ``fl.local_clients = all``, 10/4 of FedAvg's
client steps) and prints its accuracy, mean +- std over the 10 clients' own models: the
comparison that shows what federating buys.

    python benchmarks/demo_time.py [--no-local]
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

BUDGET_S = 120.0
VIEWS = ("image_text", "image_only", "text_only")


def _run(args: list[str], env: dict) -> tuple[float, dict]:
    """Run ``fedmllm run ARGS`` in a fresh folder; return its seconds and summary.json."""
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fedmllm.cli", "run", *args, f"output.dir={out}"],
                       check=True, env=env, capture_output=True)
        seconds = time.perf_counter() - t0
        return seconds, json.loads((Path(out) / "summary.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-local", action="store_true", help="skip the local-only comparison")
    args = ap.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fedmllm.cli", "model", "build"],
                   check=True, env=env, capture_output=True)
    build = time.perf_counter() - t0
    print(f"model build (cached after the first time): {build:.1f} s")

    seconds, summary = _run([], env)
    pm = summary["final"]["per_modality"]
    print(f"demo run (fedavg): {seconds:.1f} s   ratio to the {BUDGET_S:.0f} s budget = "
          f"{seconds / BUDGET_S:.3f}   (training {summary['totals']['train_seconds']:.1f} s)")
    print("  final accuracy  "
          + "   ".join(f"{v} {pm[v]['accuracy']:.4f}" for v in VIEWS if v in pm))
    if args.no_local:
        return
    seconds, summary = _run(["fl.algorithm=local"], env)
    clients = summary["final"]["per_client"]
    print(f"local-only run: {seconds:.1f} s; accuracy of the {len(clients)} clients' own models "
          "(mean +- std, min..max):")
    for v in VIEWS:
        accs = [c["per_modality"][v]["accuracy"] for c in clients.values()
                if v in c["per_modality"]]
        if accs:
            print(f"  {v:<10} {statistics.mean(accs):.4f} +- {statistics.pstdev(accs):.4f}"
                  f"  ({min(accs):.4f}..{max(accs):.4f})")


if __name__ == "__main__":
    main()
