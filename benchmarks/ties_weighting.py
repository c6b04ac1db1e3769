"""One-shot TIES with example-weighted agreement vs the count rule it replaced, same uploads.

For each setting of the YOCO results tables (targets `paper` or `lora`, Dirichlet alpha) and
each scenario, one one-shot run trains the 10 clients once (5 local epochs, 2000 training
samples, the tiny base, as `benchmarks/yoco_table.py` does) and merges them with TIES
(density 0.5). From the very same uploads the script also forms the merge of the rule used
before: peft's `disjoint_merge`, which divides the sum of the agreeing clients' weighted task
vectors by their *number* instead of their summed weight. Both merges are evaluated on the same
test set (accuracy per view, AUROC on image+text).

    python benchmarks/ties_weighting.py [--settings paper:0.5,lora:0.5,lora:5] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from yoco_table import SCENARIOS  # the tables' four scenarios (this script's own folder)


def count_rule_ties(driver, density: float):
    """TIES as peft's ``ties`` computes it with weights N w_i (division by the count)."""
    import torch
    from peft.utils import merge_utils

    from fedmllm.fl import factorize, lora_pairs

    ups = driver.updates
    n = torch.tensor([float(u.num_examples) for u in ups])
    w = n / n.sum()
    x0 = driver.initial_state
    out = dict(x0)
    for ka, kb in lora_pairs(x0).values():
        p0 = x0[kb].float() @ x0[ka].float()
        taus = [u.state[kb].float() @ u.state[ka].float() - p0 for u in ups]
        merged = p0 + merge_utils.ties(taus, w * len(ups), density, "total")
        a, b = factorize(merged, x0[ka].shape[0])
        out[ka], out[kb] = a.to(x0[ka]), b.to(x0[kb])
    return out


def cells(metrics: dict) -> str:
    pm = metrics["per_modality"]
    return (f"{pm['image_text']['accuracy']:.3f} | {pm['image_text'].get('auroc', 0):.3f} | "
            f"{pm['image_only']['accuracy']:.3f} | {pm['text_only']['accuracy']:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", default="paper:0.5,lora:0.5,lora:5")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--density", type=float, default=0.5)
    args = ap.parse_args()

    from fedmllm.config import load_config
    from fedmllm.runtime import build_driver

    print("| targets | alpha | scenario | rule | acc image+text | AUROC | acc image only | "
          "acc text only |\n|---|---|---|---|---|---|---|---|", flush=True)
    t0 = time.perf_counter()
    for setting in args.settings.split(","):
        targets, alpha = setting.split(":")
        for scen in args.scenarios.split(","):
            with tempfile.TemporaryDirectory() as out:
                cfg = load_config(None, [
                    "model.preset=tiny", "model.dtype=float32", f"train.device={args.device}",
                    "fl.num_clients=10", f"data.alpha={alpha}", "data.train_size=2000",
                    "data.test_size=200", *SCENARIOS[scen], "fl.algorithm=yoco",
                    f"fl.yoco.targets={targets}", "fl.yoco.local_epochs=5",
                    "fl.yoco.method=ties", f"fl.yoco.density={args.density}",
                    f"output.dir={out}", "output.progress=false", "output.plot=false"])
                driver = build_driver(cfg)
                weighted = driver.run().final["final"]
                counted = driver.session.evaluate(count_rule_ties(driver, args.density))
            for rule, m in (("weighted (now)", weighted), ("count (before)", counted)):
                print(f"| {targets} | {alpha} | {scen} | {rule} | {cells(m)} |", flush=True)
    print(f"\n{time.perf_counter() - t0:.0f} s, {os.cpu_count()} cores, device {args.device}")


if __name__ == "__main__":
    main()
