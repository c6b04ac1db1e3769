"""Evaluation throughput: option-probability scoring vs greedy generation, samples per second.

Both modes read the same multiple-choice test samples (synthetic ``binary`` task, the image+text
view) with the same model, batch size and prompt encoding (no encode cache, so prompt
tokenization and image processing are timed in both). Scoring is one forward pass per batch;
generation decodes greedily with left padding until every sequence of the batch has emitted the
end-of-turn token (or ``--max-new-tokens``). The two modes are timed alternately in one process
after a warm-up pass of each; the figures are medians over ``--repeats``.

    python benchmarks/eval_throughput.py [--preset tiny|small] [--n 128] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from fedmllm.data.synth import make_synth
from fedmllm.eval.evaluate import predict, view
from fedmllm.model.loading import load_vlm
from fedmllm.model.tiny import ensure_tiny


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny", choices=["tiny", "small"])
    ap.add_argument("--n", type=int, default=128, help="test samples")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    model, processor = load_vlm(ensure_tiny(args.preset, True, quiet=True))
    samples = view(make_synth("binary", 0, args.n, 0)[1], "image_text")
    modes = {
        "score": lambda: predict(model, processor, samples, batch_size=args.batch_size),
        "generate": lambda: predict(model, processor, samples, batch_size=args.batch_size,
                                    mode="generate", max_new_tokens=args.max_new_tokens),
    }
    times: dict[str, list[float]] = {m: [] for m in modes}
    last: dict[str, dict] = {}
    for m, fn in modes.items():  # warm-up
        last[m] = fn()
    for _ in range(args.repeats):
        for m, fn in modes.items():
            t0 = time.perf_counter()
            fn()
            times[m].append(time.perf_counter() - t0)

    rate = {m: args.n / statistics.median(t) for m, t in times.items()}
    gen = last["generate"]
    invalid = sum(p is None for p in gen["parsed"])
    agree = sum(p == int(s) for p, s in zip(gen["parsed"], last["score"]["probs"].argmax(-1)))
    print(f"preset={args.preset} n={args.n} view=image_text batch={args.batch_size} "
          f"max_new_tokens={args.max_new_tokens} threads={torch.get_num_threads()} "
          f"repeats={args.repeats} (median)")
    for m in modes:
        print(f"{m:<9} {rate[m]:8.1f} samples/s   ({statistics.median(times[m]):.3f} s)")
    print(f"ratio scoring/generation: {rate['score'] / rate['generate']:.2f}x")
    print(f"generation: {invalid}/{args.n} invalid, {agree}/{args.n} agree with scoring")


if __name__ == "__main__":
    main()
