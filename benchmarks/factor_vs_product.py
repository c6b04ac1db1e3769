"""How far the factor-wise mean of LoRA uploads is from the mean of their products.

One-shot FedAvg merges A and B separately: B_g A_g = (sum_i w_i B_i)(sum_i w_i A_i), which is
not sum_i w_i B_i A_i. This runs one one-shot FedAvg (tiny base, LoRA on every q/k/v/o, 10
clients, Dirichlet 0.5, 5 local epochs; the setting of the `lora` tables in
docs/yoco_results_corpus_v3.md) and prints, over the adapted modules, the relative error
|B_g A_g - mean(B_i A_i)| / |mean(B_i A_i)| and the norm ratio |B_g A_g| / |mean(B_i A_i)|.

    python benchmarks/factor_vs_product.py [--alpha 0.5] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    import torch

    from fedmllm.config import load_config
    from fedmllm.fl import lora_pairs
    from fedmllm.runtime import build_driver

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(None, [
            "model.preset=tiny", "model.dtype=float32", f"train.device={args.device}",
            "fl.algorithm=yoco", "fl.yoco.method=fedavg", "fl.yoco.targets=lora",
            "fl.yoco.local_epochs=5", "data.train_size=2000", "data.test_size=200",
            f"data.alpha={args.alpha}", f"output.dir={out}", "output.progress=false",
            "output.plot=false"])
        sim = build_driver(cfg)
        final = sim.run().final["final"]
    n = torch.tensor([float(u.num_examples) for u in sim.updates], dtype=torch.float64)
    w = n / n.sum()
    errors, ratios = [], []
    for ka, kb in lora_pairs(sim.global_state).values():
        products = sum(wi * (u.state[kb].double() @ u.state[ka].double())
                       for wi, u in zip(w, sim.updates, strict=True))
        factors = sim.global_state[kb].double() @ sim.global_state[ka].double()
        errors.append(float((factors - products).norm() / products.norm()))
        ratios.append(float(factors.norm() / products.norm()))
    print(f"one-shot FedAvg: accuracy {final['accuracy']:.3f}, AUROC {final['auroc']:.3f}")
    print(f"{len(errors)} modules; relative error of the factor-wise mean: median "
          f"{statistics.median(errors):.3f} (min {min(errors):.3f}, max {max(errors):.3f}); "
          f"norm ratio: median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, "
          f"max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
