"""What the secure-aggregation runs' tests share: SecAgg+'s error bound for a round of a run
folder, and a round's mean update and global adapter read back from its checkpoints.

The bound (:func:`fedmllm.runtime.flower.secagg.error_bound`) per coordinate of the mean
update is ``N (2c + max|y_i - x|) / (Q W)``: ``N`` clients, ``W = sum_i n_i / max_i n_i``
(the weights the mod quantizes), ``c`` the clipping range, ``Q`` the quantization range;
the tests take ``max|y_i - x| <= c`` (a node warns when a coordinate is clipped)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from fedmllm.runtime.flower.secagg import error_bound

EPS32 = torch.finfo(torch.float32).eps


def examples(out: Path) -> dict[int, int]:
    """Each client's training samples, as the nodes reported them (``data_manifest.json``)."""
    manifest = json.loads((out / "data_manifest.json").read_text())
    return {int(c["client"]): int(c["samples"]) for c in manifest["clients"]}


def round_bound(out: Path, clients: list[int], c: float = 1.0, q_range: int = 2**22) -> float:
    """SecAgg+'s bound on a round's mean update over ``clients`` (see the module docstring)."""
    n = examples(out)
    top = max(n[k] for k in clients)
    return error_bound(len(clients), sum(n[k] / top for k in clients), c, q_range, c)


def checkpoint(out: Path, round_: int) -> dict[str, torch.Tensor]:
    return load_file(out / "checkpoint" / f"{round_:06d}" / "tensors.safetensors")


def group(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): t for k, t in tensors.items() if k.startswith(prefix)}


def round_one_mean(out: Path, algorithm: str, beta1: float = 0.9
                   ) -> tuple[dict[str, torch.Tensor], float]:
    """Round 1's mean update ``D`` as far as the checkpoint shows it, and the float32 rounding
    it carries: FedAvg's global ``x + D`` (the start ``x`` is the same in every run), textbook
    FedAdam's first moment ``m = (1 - beta1) D``, scaled back."""
    t = checkpoint(out, 1)
    if algorithm == "fedavg":
        state = group(t, "global/")
        return state, EPS32 * max(float(v.abs().max()) for v in state.values())
    m = {k: v / (1 - beta1) for k, v in group(t, "strategy/m/").items()}
    return m, EPS32 * max(float(v.abs().max()) for v in m.values())


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys() and a
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
