"""YOCO's server merge of ``lora_A``: principal-component-weighted aggregation
(:func:`pca_weighted_merge`).

Flatten client ``i``'s tensor to ``a_i`` (length ``d``) and stack ``A' = [a_1; ...; a_N]``
(N x d); client weights ``w_i >= 0``, ``sum w_i = 1`` (``weights`` normalised; ``None`` ->
``1/N``). Weighted mean ``mu = sum_i w_i a_i``; base ``b = mu`` (``center=True``) or ``0``.

PCA (weighted): ``diag(sqrt(w)) (A' - b) = U S V^T``; loadings ``P = V_k`` (d x k), the top
``k`` right singular vectors; coordinates ``Z_i = (a_i - b) P`` (1 x k), so component ``j``
has weighted second moment ``sum_i w_i z_ij^2 = S_j^2`` and the plain weighted mean of the
coordinates is ``zbar = sum_i w_i Z_i`` (``= 0`` when centred).

Merge: a coordinate ``c_j`` per component, then::

    A_g = mu + (c - zbar) P^T

i.e. inside the top-``k`` subspace the merged coordinates are ``c``; outside it (and the
centre) stays at the weighted mean. ``weighting`` picks ``c_j``:

- ``"mean"``: ``c_j = zbar_j``, so ``A_g = mu`` exactly, for every ``k`` and both
  ``center`` settings: the plain (weighted) average, for comparison.
- ``"energy"`` (default): ``c_j = sum_i pi_ij z_ij`` with
  ``pi_ij = w_i |z_ij|^p / sum_l w_l |z_lj|^p`` (``p = power``): each component is averaged
  with the clients weighted by the share of that component's energy they carry. ``p = 0``
  is the mean; ``p -> inf`` is ``"max"``. Averaging shrinks a direction carried by one
  client by its weight; this rule keeps it. Example (centred): only client ``i`` deviates
  from the others, by ``t`` along a unit direction ``v``. Then ``mu . v = w_i t`` and on that
  component ``z_i = (1 - w_i) t``, ``z_l = -w_i t`` (``l != i``), so for ``p = 2``::

      c = sum_l w_l z_l^3 / sum_l w_l z_l^2 = (1 - 2 w_i) t,   A_g . v = (1 - w_i) t

  versus ``w_i t`` for the mean (10 equal clients: 0.9 t instead of 0.1 t). Uncentred, a
  component carried by client ``i`` alone (``z_lj = 0`` for ``l != i``) gets
  ``c_j = z_ij``: full magnitude. Components where clients disagree symmetrically still
  cancel (``c_j = 0``), as with the mean.
- ``"max"``: ``c_j = z_{i*j}``, ``i* = argmax_{i : w_i > 0} |z_ij|`` (first index on
  ties): the most extreme client's coordinate per component.

``k``: ``None`` -> every component with ``S_j > 0`` (at most ``N - 1`` centred, ``N``
uncentred, and ``d``); an integer -> ``min(k, that number)``; a float in (0, 1) -> the
fewest components whose explained variance ``sum_{j<=k} S_j^2 / sum_j S_j^2`` reaches it.
Components beyond ``k`` are merged by the mean. Computed in float64; returned with the
first tensor's shape, dtype and device. The sign of each loading is arbitrary and does not
matter (``c_j p_j`` is invariant); with tied singular values the basis inside the tied
subspace, and hence the ``energy``/``max`` result, depends on the SVD routine.

The paper (Eq. 5) stacks, projects, averages ``Z`` with weights it does not state, and maps
back with ``P^T``; this is one definition that does what it says the step is for.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

PCA_WEIGHTINGS: tuple[str, ...] = ("energy", "max", "mean")
"""Per-component coordinate rules of :func:`pca_weighted_merge`."""


def _normalized(weights: Sequence[float] | Tensor | None, n: int) -> Tensor:
    if weights is None:
        return torch.full((n,), 1.0 / n, dtype=torch.float64)
    w = torch.as_tensor(weights, dtype=torch.float64).flatten().cpu()
    if w.numel() != n:
        raise ValueError(f"{w.numel()} weights for {n} tensors")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or not float(w.sum()) > 0:
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {w.tolist()}")
    return w / w.sum()


def pca_weighted_merge(
    As: Sequence[Tensor],
    weights: Sequence[float] | Tensor | None = None,
    k: float | None = None,
    center: bool = True,
    weighting: str = "energy",
    power: float = 2.0,
) -> Tensor:
    """Principal-component-weighted aggregation of the clients' ``lora_A`` (YOCO's A merge):
    ``A_g = mu + (c - zbar) P^T`` with the coordinates ``c`` of ``weighting`` (``energy``,
    ``max`` or ``mean``; ``power`` is ``energy``'s ``p``) in the top-``k`` weighted principal
    components, centred on the weighted mean (``center``) or not; ``weights`` are the
    clients' (``None``: equal). The definitions, the choice of ``k`` and an example are in the
    module docstring.
    """
    As = list(As)
    shape, dtype, device = _check_merge_inputs(As, weighting)
    power = float(power)
    if not power >= 0 or math.isinf(power):
        raise ValueError(f"power must be a finite number >= 0, got {power!r}")
    w = _normalized(weights, len(As))
    with torch.no_grad():
        X = torch.stack([a.detach().to("cpu", torch.float64).reshape(-1) for a in As])
        mu = w @ X
        Xc = X - mu if center else X
        _, S, Vh = torch.linalg.svd(w.sqrt()[:, None] * Xc, full_matrices=False)
        tol = float(S[0]) * max(X.shape) * torch.finfo(torch.float64).eps
        n_comp = int((S > tol).sum()) if float(S[0]) > 0 else 0
        kk = _resolve_k(k, S, n_comp)
        if kk == 0 or weighting == "mean":
            merged = mu
        else:
            P = Vh[:kk].T  # d x k
            Z = Xc @ P  # N x k
            zbar = w @ Z
            merged = mu + (_coordinates(Z, w, zbar, weighting, power) - zbar) @ P.T
    return merged.reshape(shape).to(device=device, dtype=dtype)


def _check_merge_inputs(As: list[Tensor], weighting: str) -> tuple:
    """The first tensor's shape, dtype and device, once every tensor has that shape and the
    weighting is known."""
    if not As:
        raise ValueError("pca_weighted_merge needs at least one tensor")
    shape, dtype, device = As[0].shape, As[0].dtype, As[0].device
    for i, a in enumerate(As):
        if a.shape != shape:
            raise ValueError(f"tensor {i} has shape {tuple(a.shape)}, tensor 0 {tuple(shape)}")
    if weighting not in PCA_WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; choices: {', '.join(PCA_WEIGHTINGS)}")
    return shape, dtype, device


def _coordinates(Z: Tensor, w: Tensor, zbar: Tensor, weighting: str, power: float) -> Tensor:
    """The merged coordinate ``c_j`` of every component: ``max`` takes the most extreme
    client's, ``energy`` the ``w_i |z_ij|^p``-weighted mean (``zbar_j`` where all are 0)."""
    if weighting == "max":
        score = Z.abs().masked_fill((w == 0)[:, None], -1.0)  # weight-0 clients out
        idx = score.argmax(dim=0)
        return Z.gather(0, idx[None, :])[0]
    mass = w[:, None] * Z.abs().pow(power)
    total = mass.sum(dim=0)
    return torch.where(total > 0, (mass * Z).sum(dim=0) / total.clamp_min(1e-300), zbar)


def _resolve_k(k: float | None, S: Tensor, n_comp: int) -> int:
    """``k`` as a number of components: ``None`` = all, int = count, float = variance share."""
    if k is None:
        return n_comp
    if isinstance(k, numbers.Integral) and not isinstance(k, bool):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k!r}")
        return min(int(k), n_comp)
    k = float(k)
    if not 0.0 < k < 1.0:
        raise ValueError(f"a float k is an explained-variance fraction in (0, 1), got {k!r}")
    if n_comp == 0:
        return 0
    var = S[:n_comp].square()
    ratio = torch.cumsum(var, 0) / var.sum()
    return min(int((ratio < k - 1e-12).sum()) + 1, n_comp)
