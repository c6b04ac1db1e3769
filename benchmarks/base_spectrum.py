"""How much shared structure the built-in bases give a rank-r SVD start, and their zero-shot.

For each preset: the median over the targeted weights of ``s_1/s_r``, ``s_r/s_(r+1)`` and the
top-``r`` share of ``||W||^2`` (:func:`fedmllm.fl.spectral_gap`), for the YOCO study's targets
(``q_proj``/``v_proj`` of every language-model layer) and the paper's (the last layer's
``q_proj``); and the zero-shot accuracy and AUROC on synth binary (image+text, 1,000 test
samples, seed 0). The figures quoted in docs/yoco.md and in docs/yoco_results.md's notes.

    python benchmarks/base_spectrum.py [--presets tiny tiny-structured] [--r 8]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fedmllm.config import load_config
from fedmllm.fl import spectral_gap
from fedmllm.model.loading import load_vlm
from fedmllm.model.tiny import ensure_tiny
from fedmllm.runtime import run_experiment

TARGETS = {"q/v, every layer": lambda name, last: "q_proj" in name or "v_proj" in name,
           "paper (last q_proj)": lambda name, last: "q_proj" in name and f"layers.{last}." in name}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "tiny-structured"])
    ap.add_argument("--r", type=int, default=8)
    args = ap.parse_args()
    for preset in args.presets:
        model, _ = load_vlm(str(ensure_tiny(preset, True, quiet=True)))
        weights = {n: p.detach() for n, p in model.named_parameters()
                   if "language_model" in n and n.endswith("proj.weight")}
        last = max(int(n.split("layers.")[1].split(".")[0]) for n in weights)
        for label, keep in TARGETS.items():
            med = spectral_gap({n: w for n, w in weights.items() if keep(n, last)},
                               args.r)["median"]
            print(f"{preset:16s} {label:20s} s_1/s_r {med['s1_sr']:.2f}  "
                  f"s_r/s_(r+1) {med['gap']:.3f}  top-{args.r} energy {med['energy']:.3f}")
        with tempfile.TemporaryDirectory() as out:
            run_experiment(load_config(None, [
                f"model.preset={preset}", "fl.algorithm=zeroshot", "data.test_size=1000",
                "eval.views=[image_text]", f"output.dir={out}/run", "output.progress=false",
                "output.plot=false"]))
            final = json.loads((Path(out) / "run" / "summary.json").read_text())["final"]
        print(f"{preset:16s} zero-shot accuracy {final['accuracy']:.3f}  "
              f"AUROC {final['auroc']:.3f}")


if __name__ == "__main__":
    main()
