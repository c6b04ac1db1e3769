"""Key-wise reduction kernels shared by the server strategies.

Mean-type reductions stream over the clients, one fused ``torch._foreach`` kernel per client
over all its keys, into one accumulator per key: beyond the inputs that already exist the memory
is O(adapter) (O(clients x tensor) for the coordinate-wise median / trimmed mean, one key at a
time). No per-client copy of a state is ever made (except bf16/fp16 upcasts).

Notation: ``g`` global tensor, ``t_i`` client ``i``'s tensor, ``d_i = t_i - g`` its delta,
``s_i`` its clip scale (1 without clipping), ``a_i`` its aggregation weight.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .types import ClientUpdate, StateDict


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other floating dtype is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def delta_norm(state: StateDict, global_state: StateDict) -> float:
    """``||state - global||_2`` over the floating keys of ``state`` (all keys jointly)."""
    total: Tensor | None = None
    for key, t in state.items():
        g = global_state[key]
        if not g.is_floating_point():
            continue
        cd = compute_dtype(g.dtype)
        d = torch.sub(t.to(device=g.device, dtype=cd), g.to(cd))
        sq = torch.linalg.vector_norm(d, dtype=torch.float64).square()
        total = sq if total is None else total + sq
    return 0.0 if total is None else float(total.sqrt())


def check_updates(global_state: StateDict, updates: Sequence[ClientUpdate]) -> None:
    """Raise ``ValueError`` for updates that cannot be aggregated at all.

    Catches unknown keys, shape mismatches (which would otherwise broadcast silently) and
    negative example counts. Finer checks (dtype, NaN, norm) live in
    :func:`fedmllm.fl.validation.validate_update`; run :func:`filter_updates` first.
    """
    for u in updates:
        if u.num_examples < 0:
            raise ValueError(f"client {u.client_id}: num_examples {u.num_examples} < 0")
        for key, t in u.state.items():
            g = global_state.get(key)
            if g is None:
                raise ValueError(
                    f"client {u.client_id}: unexpected key {key!r} (not in the global state); "
                    "run filter_updates() before aggregating"
                )
            if t.shape != g.shape:
                raise ValueError(
                    f"client {u.client_id}: {key!r} has shape {tuple(t.shape)}, "
                    f"expected {tuple(g.shape)}"
                )


def clip_scales(
    global_state: StateDict, updates: Sequence[ClientUpdate], clip_norm: float | None
) -> list[float]:
    """Per-client factors ``s_i = min(1, C / ||d_i||)`` (all 1.0 when ``clip_norm`` is None)."""
    if clip_norm is None:
        return [1.0] * len(updates)
    scales = []
    for u in updates:
        norm = delta_norm(u.state, global_state)
        if not math.isfinite(norm):
            raise ValueError(
                f"client {u.client_id}: non-finite update; run filter_updates() first"
            )
        scales.append(1.0 if norm <= clip_norm else clip_norm / norm)
    return scales


def cast_like(t: Tensor, like: Tensor) -> Tensor:
    """``t`` on ``like``'s device in ``like``'s dtype (no copy when it already matches)."""
    return t.to(device=like.device, dtype=like.dtype)


def in_compute_dtype(t: Tensor) -> Tensor:
    """``t`` in its compute dtype (no copy for float32/float64)."""
    return t.to(compute_dtype(t.dtype))


def weighted_sums(
    keys: Sequence[str],
    sources: Sequence[StateDict],
    alphas: Sequence[float],
    global_state: StateDict,
) -> dict[str, Tensor]:
    """``acc_k = sum_{i : k in sources_i} alphas_i * sources_i[k]`` in the compute dtype.

    Streams client by client with one fused ``torch._foreach`` kernel per client over all of
    its keys (the per-tensor Python overhead of 224 small LoRA tensors otherwise dominates).
    Every key in ``keys`` must occur in at least one source.
    """
    acc: dict[str, Tensor] = {}
    for src, a in zip(sources, alphas, strict=True):
        present = [k for k in keys if k in src]
        fresh = [k for k in present if k not in acc]
        seen = [k for k in present if k in acc]
        if fresh:
            tensors = [cast_like(src[k], in_compute_dtype(global_state[k])) for k in fresh]
            acc.update(zip(fresh, torch._foreach_mul(tensors, a), strict=True))
        if seen:
            torch._foreach_add_(
                [acc[k] for k in seen], [src[k].to(acc[k].device) for k in seen], alpha=a
            )
    return acc


def mean_deltas(
    global_state: StateDict,
    updates: Sequence[ClientUpdate],
    keys: Sequence[str],
    weights: Sequence[float],
    scales: Sequence[float],
    plus_global: bool = False,
) -> dict[str, Tensor]:
    """Per key ``D_k = sum_{i in S_k} w_i s_i (t_ik - g_k) / sum_{i in S_k} w_i``.

    ``S_k`` = the updates holding key ``k`` (weights renormalised among them). Computed as
    ``(sum_i w_i s_i t_ik) / W_k - (A_k / W_k) g_k`` with ``W_k = sum w_i``, ``A_k = sum w_i s_i``
    (``A_k = W_k`` without clipping), which needs one pass over each client state.
    With ``plus_global`` the result is ``g_k + D_k`` instead (the FedAvg state), which without
    clipping is just the weighted mean of the client tensors (no pass over ``g``).
    """
    wsum = dict.fromkeys(keys, 0.0)
    asum = dict.fromkeys(keys, 0.0)
    for u, w, s in zip(updates, weights, scales, strict=True):
        for k in keys:
            if k in u.state:
                wsum[k] += w
                asum[k] += w * s
    for k in keys:
        if wsum[k] <= 0:
            raise ValueError(f"{k!r}: the clients that returned it report 0 examples in total")
    alphas = [w * s for w, s in zip(weights, scales, strict=True)]
    totals = set(wsum.values())
    if len(totals) == 1:  # every key has the same contributors' total: normalise up front
        (total,) = totals
        alphas = [a / total for a in alphas]
    acc = weighted_sums(keys, [u.state for u in updates], alphas, global_state)
    if len(totals) > 1:
        torch._foreach_mul_([acc[k] for k in keys], [1.0 / wsum[k] for k in keys])
    groups: dict[float, list[str]] = {}
    for k in keys:
        ratio = asum[k] / wsum[k]
        groups.setdefault(1.0 - ratio if plus_global else -ratio, []).append(k)
    for coef, ks in groups.items():
        if coef != 0.0:
            torch._foreach_add_(
                [acc[k] for k in ks], [cast_like(global_state[k], acc[k]) for k in ks], alpha=coef
            )
    return acc


def _stacked_deltas(g: Tensor, tensors: Sequence[Tensor], scales: Sequence[float]) -> Tensor:
    """``[s_i * (t_i - g)]`` stacked on a new *last* axis (contiguous per coordinate)."""
    gc = in_compute_dtype(g)
    stacked = torch.stack([cast_like(t, gc) for t in tensors], dim=-1)
    stacked.sub_(gc.unsqueeze(-1))
    if any(s != 1.0 for s in scales):
        stacked.mul_(torch.tensor(scales, dtype=gc.dtype, device=gc.device))
    return stacked


def median_delta(g: Tensor, tensors: Sequence[Tensor], scales: Sequence[float]) -> Tensor:
    """Coordinate-wise median of the (clipped) deltas; mean of the two middle values for even n."""
    d = _stacked_deltas(g, tensors, scales)
    n = d.shape[-1]
    if n % 2 == 1:
        return d.median(dim=-1).values
    low = d.topk(n // 2 + 1, dim=-1, largest=False, sorted=True).values
    return (low[..., -2] + low[..., -1]) / 2


def trimmed_mean_delta(
    g: Tensor, tensors: Sequence[Tensor], scales: Sequence[float], beta: float
) -> Tensor:
    """Coordinate-wise mean after dropping the ``floor(beta * n)`` lowest and highest deltas."""
    d = _stacked_deltas(g, tensors, scales)
    n = d.shape[-1]
    cut = int(beta * n)
    if cut == 0:
        return d.mean(dim=-1)
    return d.sort(dim=-1).values[..., cut : n - cut].mean(dim=-1)
