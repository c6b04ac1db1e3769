"""What the built-in model's pre-training costs and what it buys.

Cost: seconds of the deterministic pre-training (from the cached model's recipe.json, measured
when it was built on this machine). Value: test accuracy of the same LoRA-only fine-tuning
(same data, steps, seed) from the pre-trained base vs from the randomly initialised base.

    python benchmarks/pretrain_value.py [--preset tiny] [--rounds 1 --clients 1 --steps 300]
    python benchmarks/pretrain_value.py --preset small --rounds 12 --clients 10 --per-round 4 \
        --steps 12     # the demo's federated setting
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fedmllm.config import load_config
from fedmllm.model.tiny import ensure_tiny
from fedmllm.runtime import run_experiment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny", choices=["tiny", "small"])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--clients", type=int, default=1, help="1 = centralized fine-tuning")
    ap.add_argument("--per-round", type=int, default=None, help="clients per round (default all)")
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    results = {}
    for pretrain in (True, False):
        folder = ensure_tiny(args.preset, pretrain)
        stats = json.loads((folder / "recipe.json").read_text())["stats"]
        with tempfile.TemporaryDirectory() as out:
            cfg = load_config(None, [
                f"model.preset={args.preset}", f"model.pretrain={str(pretrain).lower()}",
                f"fl.rounds={args.rounds}", f"fl.num_clients={args.clients}",
                f"fl.clients_per_round={args.per_round or args.clients}",
                f"fl.local_steps={args.steps}",
                f"output.dir={out}", "output.progress=false", "output.plot=false"])
            final = run_experiment(cfg).final["final"]
        results[pretrain] = (final, stats)
    print(f"preset={args.preset}: LoRA fine-tuning on synth/binary, {args.rounds} round(s) x "
          f"{args.per_round or args.clients} of {args.clients} client(s) x {args.steps} steps")
    for pretrain, (final, stats) in results.items():
        pm = final["per_modality"]
        cost = stats["pretrain"]["seconds"] if stats["pretrain"] else 0.0
        print(f"  base={'pre-trained' if pretrain else 'random init':<12} "
              f"pretrain {cost:6.1f} s | test acc image+text {pm['image_text']['accuracy']:.4f}"
              f"  image-only {pm['image_only']['accuracy']:.4f}"
              f"  text-only {pm['text_only']['accuracy']:.4f}")
    a = results[True][0]["accuracy"]
    b = results[False][0]["accuracy"]
    print(f"accuracy ratio pre-trained / random-init = {a / b:.3f}")


if __name__ == "__main__":
    main()
