"""YOCO's regularisers: the sign-consistency penalty on ``lora_B`` and the sparsity (paper) or
orthogonality (released code) penalty on ``lora_A``."""

from __future__ import annotations

import torch
from torch import Tensor

from ..aggregation import in_compute_dtype


def sign_penalty(B: Tensor, B_sign: Tensor, gamma: float, eps: float = 1e-6) -> Tensor:
    """YOCO's sign-consistency regulariser on ``lora_B``::

        R_sign(B) = ||tanh(gamma B) - B_s||_2 / (||B_s||_2 + eps),   B_s = sign(B0)

    (2-norms of the flattened tensors = Frobenius norms; un-squared, as in the paper's
    Algorithm 1 and the released code). Gradient, with ``D = tanh(gamma B) - B_s``::

        dR/dB = gamma (1 - tanh^2(gamma B)) * D / (||D|| (||B_s|| + eps))

    (0 where ``D = 0``). bf16/fp16 inputs are computed in float32.
    """
    b = in_compute_dtype(B)
    target = B_sign.to(device=b.device, dtype=b.dtype)
    dist = torch.linalg.vector_norm(torch.tanh(gamma * b) - target)
    return dist / (torch.linalg.vector_norm(target) + eps)


def l1_penalty(A: Tensor, lam: float) -> Tensor:
    """The paper's noise-free sparse regulariser on ``lora_A``: ``R_sparse = lam * ||A||_1``
    (sum of absolute values; subgradient ``lam * sign(A)``)."""
    a = in_compute_dtype(A)
    return lam * a.abs().sum()


def orthogonal_penalty(A: Tensor, lam_o: float) -> Tensor:
    """The released code's regulariser on ``lora_A`` (r x in): ``lam_o * ||A A^T - I_r||_F^2``.

    The code writes ``||A^T A - I_in||_F^2``; both have the same gradient
    ``4 lam_o (A A^T - I) A`` and differ by the constant ``in - r``
    (``||A^T A - I_in||^2 = tr((AA^T)^2) - 2 tr(AA^T) + in``), so this r x r form is used.
    It pushes the rows of ``A`` to be orthonormal.
    """
    a = in_compute_dtype(A)
    gram = a @ a.T
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    return lam_o * (gram - eye).square().sum()
