"""FedYogi: the adaptive server optimiser with Yogi's sign-controlled second moment."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from .fedopt import FedOpt


class FedYogi(FedOpt):
    """FedYogi (Reddi et al., "Adaptive Federated Optimization", ICLR 2021)::

        v <- v - (1 - beta2) q^2 sign(v - q^2)     (q = D_w textbook, q = m fedmllm)
        x <- x + eta * m / (sqrt(v) + tau)

    ``m`` as in :class:`~fedmllm.fl.strategies.fedopt.FedOpt`. No bias correction in either
    variant (as in Flower ``FedYogi`` and the FedMLLM research code).

    Config keys: ``eta`` (textbook 1e-2, fedmllm 1e-3), ``tau`` (1e-3), ``beta1`` (0.9),
    ``beta2`` (0.99), ``variant``, ``clip_norm``.
    """

    name = "fedyogi"
    _DEFAULTS: ClassVar[dict[str, dict[str, float]]] = {
        "textbook": {"eta": 1e-2, "tau": 1e-3, "beta1": 0.9, "beta2": 0.99},
        "fedmllm": {"eta": 1e-3, "tau": 1e-3, "beta1": 0.9, "beta2": 0.99},
    }

    _SCRATCH: ClassVar[int] = 2

    def _second_moment(self, v: Tensor, q: Tensor, scratch: list[Tensor]) -> None:
        sq = torch.mul(q, q, out=scratch[0])
        sign = torch.sub(v, sq, out=scratch[1]).sign_()
        v.addcmul_(sq, sign, value=-(1.0 - self.beta2))
