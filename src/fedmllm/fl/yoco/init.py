"""YOCO's shared initial LoRA factors: SVD (PiSSA-style) and the released code's variant."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..aggregation import compute_dtype, in_compute_dtype
from ..oneshot.product import factorize


def svd_init(W: Tensor, r: int, *, scaling: float = 1.0) -> tuple[Tensor, Tensor]:
    """YOCO's shared initial LoRA factors: the top-``r`` SVD of the frozen weight.

    With ``W = U S V^T`` (out x in, singular values decreasing) and LoRA scaling
    ``s = lora_alpha / r``::

        A0 = diag(sqrt(S_r / s)) V_r^T      (r x in)
        B0 = U_r diag(sqrt(S_r / s))        (out x r)

    so that ``s * B0 A0 = U_r S_r V_r^T`` (the best rank-``r`` approximation of ``W``). With
    ``s = 1`` (the paper's ``lora_alpha = r = 8``): ``A0 = diag(sqrt(S_r)) V_r^T``,
    ``B0 = U_r diag(sqrt(S_r))``.

    peft's ``LoraConfig(init_lora_weights="pissa")`` performs exactly this factorization (same
    ``torch.linalg.svd``, same ``S_r / s``) and also replaces the base weight by the residual
    ``W - s B0 A0`` (:func:`svd_residual`), so the wrapped model starts equal to the pre-trained
    one; the model path uses peft, this function serves tests and :func:`code_init`.
    Computed in float32 (float64 stays float64); returned in ``W``'s dtype.
    """
    scaling = float(scaling)
    if not scaling > 0:
        raise ValueError(f"scaling must be > 0, got {scaling!r}")
    a, b = factorize(in_compute_dtype(W), r)
    if scaling != 1.0:
        root = 1.0 / math.sqrt(scaling)
        a, b = a * root, b * root
    return a.to(W.dtype), b.to(W.dtype)


def svd_residual(W: Tensor, A0: Tensor, B0: Tensor, *, scaling: float = 1.0) -> Tensor:
    """The PiSSA residual base weight ``W_res = W - s B0 A0`` (so ``W_res + s B0 A0 = W``)."""
    res = in_compute_dtype(W) - float(scaling) * (in_compute_dtype(B0) @ in_compute_dtype(A0))
    return res.to(W.dtype)


def code_init(
    W: Tensor, r: int, *, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """The released code's initialization (``init = "code"``): ``B0`` from the SVD, ``A0`` random.

    ``B0 = U_r diag(sqrt(S_r))`` (as :func:`svd_init` with ``s = 1``); ``A0`` is peft's default
    LoRA-A init, ``kaiming_uniform_(a=sqrt(5))`` on an r x in tensor, i.e.
    ``A0 ~ U(-1/sqrt(in), 1/sqrt(in))``. The base weight is *not* reduced (no residual), so the
    initial model is perturbed by ``s B0 A0``; this is the code's behaviour, kept for comparison.
    """
    _, b = svd_init(W, r)
    a = torch.empty(r, W.shape[1], dtype=compute_dtype(W.dtype), device=W.device)
    torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
    return a.to(W.dtype), b
