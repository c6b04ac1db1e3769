"""Sign-conflict diagnostics across clients (the YOCO paper's rho_bar and C) and the
communication cost of an upload (bytes and the paper's rounds x layers x modules unit)."""

from __future__ import annotations

import numbers
import statistics
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..layers import lm_layer_index
from ..oneshot.keys import lora_module, lora_role
from ..types import StateDict


def _sign_stack(tensors: Sequence[Tensor]) -> Tensor:
    tensors = list(tensors)
    if len(tensors) < 2:
        raise ValueError(f"sign conflicts need at least 2 clients, got {len(tensors)}")
    flat = [t.detach().reshape(-1).to("cpu") for t in tensors]
    m = flat[0].numel()
    if m == 0 or any(f.numel() != m for f in flat):
        raise ValueError("sign conflicts need non-empty tensors of equal size")
    return torch.stack([torch.sign(f.to(torch.float64)) for f in flat])  # N x M, in {-1, 0, 1}


def sign_conflict(tensors: Sequence[Tensor]) -> dict[str, float]:
    """The paper's sign-conflict rates among ``N`` clients' tensors over ``M`` coordinates.

    Per coordinate ``m``: ``k_m^+`` / ``k_m^-`` = clients with a positive / negative value
    (zeros have no sign and conflict with nothing). Then::

        rho_bar = 2 / (M N (N-1)) * sum_m k_m^+ k_m^-
        C       = 1 / (M N)       * sum_m min(k_m^+, k_m^-)          in [0, 0.5]

    ``rho_bar`` is the mean over the ``N(N-1)/2`` client pairs of the pairwise rate
    ``rho_ab = #{m : sign(x_am) sign(x_bm) = -1} / M`` (:func:`conflict_matrix`), since
    ``k^+ k^-`` counts the opposite-sign pairs at a coordinate. ``C`` is the mean minority
    fraction. Without zeros (``k^- = N - k^+``) both are exactly the paper's
    ``2/(MN(N-1)) sum k_m (N - k_m)`` and ``1/(MN) sum min(k_m, N - k_m)``.
    Returns ``{"rho_bar", "C", "num_params": M, "num_clients": N}``.
    """
    s = _sign_stack(tensors)
    n, m = s.shape
    pos = (s > 0).sum(0).to(torch.float64)
    neg = (s < 0).sum(0).to(torch.float64)
    rho = float((pos * neg).sum()) * 2.0 / (m * n * (n - 1))
    c = float(torch.minimum(pos, neg).sum()) / (m * n)
    return {"rho_bar": rho, "C": c, "num_params": m, "num_clients": n}


def conflict_matrix(tensors: Sequence[Tensor]) -> Tensor:
    """``N x N`` float64 matrix of pairwise sign-conflict rates ``rho_ab`` (zero diagonal)::

        rho_ab = #{m : sign(x_am) sign(x_bm) = -1} / M
    """
    s = _sign_stack(tensors)
    pos, neg = (s > 0).to(torch.float64), (s < 0).to(torch.float64)
    opp = pos @ neg.T
    return (opp + opp.T) / s.shape[1]


def conflict_report(
    states: Sequence[StateDict], initial: StateDict | None = None
) -> dict[str, dict[str, float]]:
    """:func:`sign_conflict` of all ``lora_A`` and of all ``lora_B`` coordinates across clients.

    Per role, each client's tensors under the keys every client uploaded are concatenated (in
    sorted key order) into one vector; ``M`` counts all of them. With ``initial`` the signs are
    those of the updates ``y_i - x0`` instead of the uploaded tensors (the paper measures the
    trained tensors themselves: the default). Returns ``{"lora_A": {...}, "lora_B": {...}}``
    (a role without keys is left out; ``{}`` for fewer than 2 clients).
    """
    states = list(states)
    if len(states) < 2:
        return {}
    common = sorted(set(states[0]).intersection(*map(set, states[1:])))
    report: dict[str, dict[str, float]] = {}
    for role in ("A", "B"):
        keys = [k for k in common if lora_role(k) == role]
        if not keys:
            continue
        vecs = []
        for st in states:
            parts = []
            for k in keys:
                t = st[k].detach().to(torch.float64)
                if initial is not None:
                    t = t - initial[k].detach().to(t)
                parts.append(t.reshape(-1).cpu())
            vecs.append(torch.cat(parts))
        report["lora_" + role] = sign_conflict(vecs)
    return report


def upload_units(state: StateDict, *, rounds: int = 1) -> dict[str, Any]:
    """Communication cost of one upload (one client, one round) of ``state``, times ``rounds``.

    - ``bytes`` = ``rounds * sum_k numel_k * element_size_k`` (as stored, every key), split into
      ``lora_bytes`` and ``other_bytes`` (``modules_to_save`` copies and the like);
      ``lora_params`` = LoRA elements per upload.
    - The paper's unit "rounds x layers x LoRA modules": ``lora_modules`` = distinct modules
      (the key with ``.lora_A...``/``.lora_B...`` stripped), ``layers`` = distinct
      language-model layers among them (:func:`fedmllm.fl.lm_layer_index`; a module outside the
      language model counts by its parent path), ``module_types`` = distinct module names
      (``q_proj``, ...); ``units = rounds * lora_modules`` and ``unit = "R x L x T"`` as text.
      YOCO uploads one module once: ``units = 1``, ``"1x1x1"``; 25 rounds of q/k/v/o LoRA on
      28 layers: ``"25x28x4"`` = 2800 units.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, numbers.Integral) or rounds < 0:
        raise ValueError(f"rounds must be an integer >= 0, got {rounds!r}")
    lora_bytes = other_bytes = lora_params = 0
    modules: set[str] = set()
    layers: set[Any] = set()
    types: set[str] = set()
    for key, t in state.items():
        size = t.numel() * t.element_size()
        module = lora_module(key)
        if module is None:
            other_bytes += size
            continue
        lora_bytes += size
        lora_params += t.numel()
        modules.add(module)
        parent, _, leaf = module.rpartition(".")
        types.add(leaf)
        layer = lm_layer_index(key)
        layers.add(("lm", layer) if layer is not None else ("path", parent))
    r = int(rounds)
    return {
        "bytes": r * (lora_bytes + other_bytes),
        "lora_bytes": r * lora_bytes,
        "other_bytes": r * other_bytes,
        "lora_params": lora_params,
        "lora_modules": len(modules),
        "layers": len(layers),
        "module_types": len(types),
        "rounds": r,
        "units": r * len(modules),
        "unit": f"{r}x{len(layers)}x{len(types)}",
    }


def spectral_gap(weights: dict[str, Tensor], r: int) -> dict[str, Any]:
    """How much shared structure a rank-``r`` SVD initialisation finds in the targeted weights.

    YOCO's premise is a principal subspace worth sharing: the top-``r`` singular directions of
    each pre-trained weight ``W`` should stand out of the rest. Per module (singular values
    ``s_1 >= s_2 >= ...``): ``s1_sr = s_1 / s_r`` (spread inside the shared subspace),
    ``gap = s_r / s_{r+1}`` (how clearly rank ``r`` separates it from the rest; 1 = no gap) and
    ``energy = sum_{i<=r} s_i^2 / sum_i s_i^2`` (the share of ``||W||_F^2`` it holds; a random
    square matrix of size ``n`` gives about ``r / n`` plus its spread). ``modules`` lists them
    per weight name; ``median`` summarises each over the modules.
    """
    if r < 1:
        raise ValueError(f"r must be >= 1, got {r}")
    per: dict[str, dict[str, float]] = {}
    for name, w in weights.items():
        s = torch.linalg.svdvals(w.detach().to("cpu", torch.float64))
        if s.numel() <= r or float(s[r - 1]) == 0.0:
            continue
        per[name] = {"s1_sr": float(s[0] / s[r - 1]), "gap": float(s[r - 1] / s[r]),
                     "energy": float(s[:r].square().sum() / s.square().sum())}
    median = {key: statistics.median(m[key] for m in per.values())
              for key in ("s1_sr", "gap", "energy")} if per else {}
    return {"r": r, "median": median, "modules": per}
