"""Synthetic data: how long the benchmark's samples take to make, for the whole federation and
for one site.

Figures (median of --repeat runs, after one warm-up that fills the digits cache):

* ``make_synth("binary", 2000, 400)``: the generator alone, 2,000 training and 400 test samples
  with their images (goal < 1 s: the data must never be what a run waits for);
* the default configuration's data as the simulation builds it (every client and the test
  set, ``build_federated_data``) against what one Flower node builds (its own partition only,
  ``build_client_data``), and their ratio: a node renders only its own images.

    python benchmarks/synth_data.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time


def median_seconds(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    from fedmllm.config import Config
    from fedmllm.data import build_client_data, build_federated_data
    from fedmllm.data.synth import make_synth

    make_synth("binary", 10, 0, 0)  # the digits cache
    gen = median_seconds(lambda: make_synth("binary", 2000, 400, seed=0), args.repeat)
    cfg = Config()
    n, seed = cfg.fl.num_clients, cfg.seed
    whole = median_seconds(lambda: build_federated_data(cfg.data, n, seed), args.repeat)
    one = median_seconds(lambda: build_client_data(cfg.data, n, seed, 0), args.repeat)
    print(f"make_synth binary 2000 + 400: {gen:.3f} s   (goal < 1 s)")
    print(f"default configuration ({n} clients): the whole federation {whole:.3f} s, "
          f"one node's partition {one:.3f} s; ratio {one / whole:.3f}")


if __name__ == "__main__":
    main()
