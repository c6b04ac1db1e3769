"""Wall-clock time of `fedmllm run` with no arguments (what `make demo` runs), after install.

The built-in base model is built (and cached) first, as `make demo` does during installation;
then the default experiment is timed in a subprocess. Prints the seconds, the ratio to the
120 s budget, and the demo's final accuracy.

    python benchmarks/demo_time.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_S = 120.0


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # --help only
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fedmllm.cli", "model", "build", "--preset", "small"],
                   check=True, env=env, capture_output=True)
    build = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fedmllm.cli", "run", f"output.dir={out}"],
                       check=True, env=env, capture_output=True)
        seconds = time.perf_counter() - t0
        summary = json.loads((Path(out) / "summary.json").read_text())
    acc = summary["final"]["accuracy"]
    print(f"model build (cached after the first time): {build:.1f} s")
    print(f"demo run: {seconds:.1f} s   ratio to the {BUDGET_S:.0f} s budget = "
          f"{seconds / BUDGET_S:.3f}   final accuracy {acc:.4f}")


if __name__ == "__main__":
    main()
