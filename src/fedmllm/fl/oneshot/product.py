"""One-shot merges of LoRA uploads on the *products* ``dW_i = B_i A_i`` (the merging zoo).

Averaging ``A`` and ``B`` separately is not the average of the clients' updates:
``mean(B) mean(A) != mean(B A)``. The functions here merge the products instead.

Notation, per LoRA module (``A_i``: r x in, ``B_i``: out x r, client ``i`` of ``N``): the
client's adapter product is ``P_i = B_i A_i`` (out x in). The model applies ``s * P_i`` with the
LoRA scaling ``s = lora_alpha / r``; ``s`` is common to all clients and every rule below is
either linear or scale-invariant, so products are formed *without* ``s`` and the caller applies
it (keep ``s`` unchanged when the merged factors have another rank, i.e. set
``lora_alpha = s * new_rank``). Weights ``w_i = n_i / sum_j n_j`` (``weighted=True``) or ``1/N``.

Task vectors: with ``initial`` (the adapter every client started from, ``P_0 = B_0 A_0``),
``tau_i = P_i - P_0``; without it ``P_0 = 0`` (zero-``B`` LoRA init). The merged product is
``P_g = P_0 + lam * merge(tau_1..tau_N)``; for the linear rules with ``lam = 1`` and
``sum w_i = 1`` that is exactly ``sum_i w_i P_i`` whatever ``P_0`` is.

Rules (``method``):

- ``exact``: ``P_g = sum_i w_i P_i``. As factors it is kept at rank ``N r`` with no error::

      B_g = [w_1 B_1, ..., w_N B_N]  (out x N r),   A_g = [A_1; ...; A_N]  (N r x in)

  so that ``B_g A_g = sum_i w_i B_i A_i``; with ``rank`` it is re-factorized by truncated SVD
  (computed from the factors through two thin QRs, never forming ``P_g``).
- ``task_arithmetic``: ``merge = sum_i w_i tau_i``.
- ``magnitude_prune``: keep the ``density`` fraction of largest-magnitude entries of each
  ``tau_i``, then ``sum_i w_i tau_i``.
- ``ties`` (Yadav et al., 2023): magnitude-trim each ``tau_i`` to ``density``, elect the sign
  per entry (``majority_sign_method``: ``total`` = sign of the summed trimmed values,
  ``frequency`` = sign of the summed signs; both unweighted, as in the paper), then the
  weighted disjoint mean ``sum_{i agrees} w_i tau_i / sum_{i agrees} w_i`` (0 where nobody
  agrees): equal weights give the paper's plain mean of the agreeing entries, and a client's
  share never exceeds its weight's share among the agreeing clients.
- ``dare_linear`` (Yu et al., 2024): drop each entry of ``tau_i`` with probability
  ``1 - density`` and rescale the kept ones by ``1/density`` (unbiased), then
  ``sum_i w_i tau_i``.
- ``dare_ties``: DARE drop-and-rescale, then TIES sign election and the weighted disjoint mean.

The pruning and sign-election kernels are peft's (``peft.utils.merge_utils``, pure torch,
imported lazily); the disjoint mean is written here, because peft's ``disjoint_merge`` divides
by the *number* of agreeing clients, which with unequal weights scales a lone agreeing client's
entry by ``N w_i`` instead of keeping it. DARE draws from torch's RNG: pass ``seed`` for a
reproducible draw (one per module) that leaves the global RNG state untouched.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..aggregation import in_compute_dtype
from ..types import StateDict
from .keys import client_weights, lora_pairs
from .registry import get_merge, merge_names, register_merge


def factorize(delta: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """Balanced truncated-SVD factors of a matrix: the best rank-``rank`` approximation.

    With ``M = U S V^T`` (singular values in decreasing order)::

        A = diag(sqrt(S_r)) V_r^T    (rank x in),     B = U_r diag(sqrt(S_r))   (out x rank)

    so ``B A = U_r S_r V_r^T`` (Eckart-Young optimal in Frobenius and spectral norm). Computed in
    float32/float64; returned in ``delta``'s dtype.
    """
    if delta.dim() != 2:
        raise ValueError(f"factorize needs a matrix, got shape {tuple(delta.shape)}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= min(delta.shape):
        raise ValueError(f"rank must be an integer in [1, {min(delta.shape)}], got {rank!r}")
    u, s, vh = torch.linalg.svd(in_compute_dtype(delta), full_matrices=False)
    root = s[:rank].sqrt()
    a = root[:, None] * vh[:rank]
    b = u[:, :rank] * root[None, :]
    return a.to(delta.dtype), b.to(delta.dtype)


def refactorize(a: Tensor, b: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """:func:`factorize` of ``B A`` computed from the factors (``B``: out x R, ``A``: R x in).

    ``B = Q_b R_b`` and ``A^T = Q_a R_a`` (thin QR), so ``B A = Q_b (R_b R_a^T) Q_a^T``; the SVD
    of the small R x R core ``R_b R_a^T = U' S V'^T`` gives ``B A = (Q_b U') S (Q_a V')^T``.
    Cost O((out + in) R^2) instead of O(out * in * min(out, in)).
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
        raise ValueError(f"factors do not chain: A {tuple(a.shape)}, B {tuple(b.shape)}")
    inner = a.shape[0]
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= inner:
        raise ValueError(f"rank must be an integer in [1, {inner}], got {rank!r}")
    ac, bc = in_compute_dtype(a), in_compute_dtype(b)
    qb, rb = torch.linalg.qr(bc)
    qa, ra = torch.linalg.qr(ac.T)
    u, s, vh = torch.linalg.svd(rb @ ra.T, full_matrices=False)
    root = s[:rank].sqrt()
    a_new = root[:, None] * (vh[:rank] @ qa.T)
    b_new = (qb @ u[:, :rank]) * root[None, :]
    return a_new.to(a.dtype), b_new.to(b.dtype)


def module_seed(seed: int, index: int) -> int:
    """DARE's torch seed for the ``index``-th LoRA module, derived through
    ``numpy.random.SeedSequence([seed, index])`` (63 bits): every module draws its own mask,
    independent of the others, from any seed ``>= 0``."""
    word = np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint64)[0]
    return int(word >> np.uint64(1))


def _weighted_disjoint_mean(stack: Tensor, agree: Tensor, weights: Tensor) -> Tensor:
    """``sum_{i agrees} w_i tau_i / sum_{i agrees} w_i`` per entry (0 where nobody agrees);
    ``stack``: N x ..., ``agree``: boolean mask of the same shape, ``weights``: N."""
    w = weights.view(-1, *([1] * (stack.dim() - 1))) * agree.to(stack.dtype)
    den = w.sum(0)
    num = (w * stack).sum(0)
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), 0.0)


def _merge_utils():
    from peft.utils import merge_utils  # lazy: keeps ``import fedmllm.fl`` light

    return merge_utils


@register_merge("product", "task_arithmetic")
def _task_arithmetic(taus: list[Tensor], weights: Tensor, density: float, sign: str) -> Tensor:
    """``sum_i w_i tau_i``."""
    return _merge_utils().task_arithmetic(taus, weights)


@register_merge("product", "magnitude_prune")
def _magnitude_prune(taus: list[Tensor], weights: Tensor, density: float, sign: str) -> Tensor:
    """``sum_i w_i tau_i`` of the ``density`` largest-magnitude entries of each ``tau_i``."""
    return _merge_utils().magnitude_prune(taus, weights, density)


@register_merge("product", "ties")
def _ties(taus: list[Tensor], weights: Tensor, density: float, sign: str) -> Tensor:
    """Magnitude trim, sign election, weighted disjoint mean (TIES)."""
    pruned = [_merge_utils().prune(t, density, method="magnitude") for t in taus]
    return _elect_and_mean(pruned, weights, sign)


@register_merge("product", "dare_linear")
def _dare_linear(taus: list[Tensor], weights: Tensor, density: float, sign: str) -> Tensor:
    """Random drop and ``1/density`` rescale, then ``sum_i w_i tau_i`` (DARE)."""
    return _merge_utils().dare_linear(taus, weights, density)


@register_merge("product", "dare_ties")
def _dare_ties(taus: list[Tensor], weights: Tensor, density: float, sign: str) -> Tensor:
    """DARE drop and rescale, then TIES sign election and weighted disjoint mean."""
    pruned = [_merge_utils().prune(t, density, method="random", rescale=True) for t in taus]
    return _elect_and_mean(pruned, weights, sign)


def _elect_and_mean(pruned: list[Tensor], weights: Tensor, sign: str) -> Tensor:
    """peft's sign election (``sign``: ``total`` or ``frequency``), then our weighted disjoint
    mean (peft's ``disjoint_merge`` divides by the *count* of agreeing clients)."""
    stack = torch.stack(pruned)
    agree = _merge_utils().calculate_majority_sign_mask(stack, method=sign)
    return _weighted_disjoint_mean(stack, agree, weights)


def product_methods() -> tuple[str, ...]:
    """Every ``method`` accepted by :func:`merge_lora_products`: ``exact``, then the
    registry's ``product`` merges (:mod:`.registry`)."""
    return ("exact", *merge_names("product"))


PRODUCT_METHODS: tuple[str, ...] = product_methods()
"""The built-in methods of :func:`product_methods`."""


def _peft_merge(
    method: str,
    taus: list[Tensor],
    weights: list[float],
    density: float,
    majority_sign_method: str,
    seed: int | None,
) -> Tensor:
    """The registered ``product`` merge ``method`` of the task vectors, with torch's RNG
    seeded by ``seed`` (when given) and restored afterwards."""
    dtype, device = taus[0].dtype, taus[0].device
    linear = torch.tensor(weights, dtype=dtype, device=device)
    devices = [device.index or 0] if device.type == "cuda" else []
    with warnings.catch_warnings(), torch.random.fork_rng(devices=devices,
                                                          enabled=seed is not None):
        # peft warns that density >= 1 prunes nothing: that is what was asked for
        warnings.filterwarnings("ignore", message=r"The density .* no pruning")
        if seed is not None:
            torch.manual_seed(seed)
        return get_merge("product", method)(taus, linear, density, majority_sign_method)


def merge_lora_products(
    states: Sequence[StateDict],
    num_examples: Sequence[int],
    *,
    method: str = "exact",
    weighted: bool = True,
    rank: int | str | None = None,
    output: str = "factors",
    initial: StateDict | None = None,
    density: float = 1.0,
    majority_sign_method: str = "total",
    lam: float = 1.0,
    seed: int | None = None,
) -> StateDict:
    """Merge the clients' LoRA products ``P_i = B_i A_i`` per module (see the module docstring).

    Args:
        states: one uploaded adapter state per client (same LoRA modules and shapes).
        num_examples: ``n_i`` per client (weights ``w_i``; ignored when ``weighted=False``).
        method: one of :func:`product_methods`.
        weighted: ``w_i = n_i / sum n`` (True) or ``1/N``.
        rank: rank of the returned factors. ``None``: ``exact`` keeps ``N r`` (lossless), the
            other methods return the clients' ``r``; ``"client"``: the clients' ``r`` for
            every method; an integer: that rank. Lower ranks come from truncated SVD
            (:func:`factorize`, or :func:`refactorize` for ``exact``).
        output: ``"factors"`` -> the same ``lora_A``/``lora_B`` keys (new rank possible);
            ``"delta"`` -> one dense ``P_g`` per module under the module name (``rank`` unused).
        initial: the adapter the clients started from; task vectors are ``P_i - B_0 A_0``
            (not needed by ``exact``, whose weighted mean does not depend on it).
        density: kept fraction in (0, 1] for ``magnitude_prune``/``ties``/``dare_*``.
        majority_sign_method: ``"total"`` or ``"frequency"`` (TIES sign election).
        lam: task-arithmetic scale ``lam`` in ``P_g = P_0 + lam * merge(tau)`` (not for
            ``exact``).
        seed: DARE's random draw (``None`` = use the current global RNG).

    Non-LoRA keys (``modules_to_save`` copies) are merged by the ``w_i``-weighted mean.
    Returns a new state; tensors keep the clients' dtype.
    """
    density = _check_product_args(method, output, majority_sign_method, density, lam, rank)
    states = list(states)
    if len(states) != len(num_examples):
        raise ValueError(f"{len(states)} states but {len(num_examples)} example counts")
    w = client_weights(num_examples, weighted)
    pairs = lora_pairs(states[0])
    for i, st in enumerate(states[1:], start=1):
        if set(st) != set(states[0]):
            raise ValueError(f"client {i}: its keys differ from client 0's")
    lora_keys = {k for ab in pairs.values() for k in ab}
    with torch.no_grad():
        out = _mean_other_keys(states, w, lora_keys)
        for index, (module, (ka, kb)) in enumerate(pairs.items()):
            # DARE: one draw per module (the same seed everywhere would repeat the mask)
            out.update(_merge_module(
                module, ka, kb, states, w, method=method, rank=rank, output=output,
                initial=initial, density=density, majority_sign_method=majority_sign_method,
                lam=lam, seed=None if seed is None else module_seed(seed, index)))
    return out


def _merge_module(module: str, ka: str, kb: str, states: list[StateDict], w: list[float], *,
                  method: str, rank: int | str | None, output: str, initial: StateDict | None,
                  density: float, majority_sign_method: str, lam: float,
                  seed: int | None) -> StateDict:
    """One LoRA module's merged entries: its ``lora_A``/``lora_B`` keys (``ka``, ``kb``) or,
    for ``output="delta"``, the dense product under the module name."""
    a_list = [st[ka] for st in states]
    b_list = [st[kb] for st in states]
    for i, (a, b) in enumerate(zip(a_list, b_list, strict=True)):
        if a.shape != a_list[0].shape or b.shape != b_list[0].shape:
            raise ValueError(f"client {i}: {module!r} has other LoRA shapes than client 0")
    target = a_list[0].shape[0] if rank in (None, "client") else int(rank)
    a_dtype, b_dtype = a_list[0].dtype, b_list[0].dtype
    if method == "exact" and output == "factors":
        a_new, b_new = _exact_factors(a_list, b_list, w, None if rank is None else target)
        return {ka: a_new.to(a_dtype), kb: b_new.to(b_dtype)}
    base = None
    if method != "exact" and initial is not None:
        if ka not in initial or kb not in initial:
            raise ValueError(f"initial state lacks {ka!r} / {kb!r}")
        base = in_compute_dtype(initial[kb]) @ in_compute_dtype(initial[ka])
    merged = _merged_product(method, a_list, b_list, w, base, density, majority_sign_method,
                             lam, seed)
    if output == "delta":
        return {module: merged.to(a_dtype)}
    a_new, b_new = factorize(merged, target)
    return {ka: a_new.to(a_dtype), kb: b_new.to(b_dtype)}


def _check_product_args(method: str, output: str, majority_sign_method: str, density: float,
                        lam: float, rank: int | str | None) -> float:
    """The arguments of :func:`merge_lora_products` that do not depend on the states;
    returns ``density`` as a float."""
    if method not in product_methods():
        raise ValueError(
            f"unknown product merge {method!r}; choices: {', '.join(product_methods())}"
        )
    if output not in ("factors", "delta"):
        raise ValueError(f"output must be 'factors' or 'delta', got {output!r}")
    if majority_sign_method not in ("total", "frequency"):
        raise ValueError(
            f"majority_sign_method must be 'total' or 'frequency', got {majority_sign_method!r}"
        )
    density = float(density)
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must lie in (0, 1], got {density!r}")
    if method == "exact" and lam != 1.0:
        raise ValueError("lam applies to task vectors; use method='task_arithmetic' to scale")
    if rank not in (None, "client") and (
        isinstance(rank, bool) or not isinstance(rank, int) or rank < 1
    ):
        raise ValueError(f"rank must be a positive integer, 'client' or None, got {rank!r}")
    return density


def _mean_other_keys(states: list[StateDict], w: list[float], lora_keys: set[str]) -> StateDict:
    """The non-LoRA keys: the ``w_i``-weighted mean (non-floating tensors: client 0's)."""
    out: StateDict = {}
    for key in states[0]:
        if key in lora_keys:
            continue
        ref = states[0][key]
        if not ref.is_floating_point():
            out[key] = ref
            continue
        acc = sum(wi * in_compute_dtype(st[key]) for wi, st in zip(w, states, strict=True))
        out[key] = acc.to(ref.dtype)
    return out


def _exact_factors(a_list: list[Tensor], b_list: list[Tensor], w: list[float],
                   rank: int | None) -> tuple[Tensor, Tensor]:
    """``A_g = [A_1; ...; A_N]``, ``B_g = [w_1 B_1, ..., w_N B_N]`` (rank ``N r``, lossless),
    or their :func:`refactorize` to ``rank``."""
    a_cat = torch.cat([in_compute_dtype(a) for a in a_list], dim=0)
    b_cat = torch.cat([wi * in_compute_dtype(b) for wi, b in zip(w, b_list, strict=True)], 1)
    if rank is not None:
        a_cat, b_cat = refactorize(a_cat, b_cat, rank)
    return a_cat, b_cat


def _merged_product(method: str, a_list: list[Tensor], b_list: list[Tensor], w: list[float],
                    base: Tensor | None, density: float, majority_sign_method: str,
                    lam: float, seed: int | None) -> Tensor:
    """One module's merged product ``P_g``: ``sum_i w_i P_i`` (``exact``), else
    ``P_0 + lam * merge(tau)`` with ``tau_i = P_i - P_0`` (``P_0 = base``, or 0)."""
    prods = [in_compute_dtype(b) @ in_compute_dtype(a)
             for a, b in zip(a_list, b_list, strict=True)]
    if method == "exact":
        return sum(wi * p for wi, p in zip(w, prods, strict=True))
    taus = prods if base is None else [p - base for p in prods]
    merged = _peft_merge(method, taus, w, density, majority_sign_method, seed)
    if lam != 1.0:
        merged = merged * lam
    if base is not None:
        merged = base + merged
    return merged
