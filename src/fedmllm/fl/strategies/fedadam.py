"""FedAdam: the adaptive server optimiser with Adam's second moment and bias correction."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from .fedopt import FedOpt


class FedAdam(FedOpt):
    """FedAdam (Reddi et al., "Adaptive Federated Optimization", ICLR 2021)::

        m <- beta1 m + (1 - beta1) q_m,   v <- beta2 v + (1 - beta2) q^2
        x <- x + eta_t * m / (sqrt(v) + tau)

    with ``q_m = q = D_w`` (textbook) or ``q_m = D_u``, ``q = m`` (fedmllm; see
    :class:`~fedmllm.fl.strategies.fedopt.FedOpt`). Textbook uses Flower 1.42's bias-corrected
    step size, with Flower's exponent ``t + 1`` (``t`` = server round, so round 1 already uses
    ``t + 1 = 2``)::

        eta_t = eta * sqrt(1 - beta2^(t+1)) / (1 - beta1^(t+1))

    fedmllm uses ``eta`` unchanged (no bias correction).

    Config keys: ``eta`` (textbook 0.1, fedmllm 1e-3), ``tau`` (1e-3), ``beta1`` (0.9),
    ``beta2`` (0.99), ``variant``, ``clip_norm``.
    """

    name = "fedadam"
    _DEFAULTS: ClassVar[dict[str, dict[str, float]]] = {
        "textbook": {"eta": 1e-1, "tau": 1e-3, "beta1": 0.9, "beta2": 0.99},
        "fedmllm": {"eta": 1e-3, "tau": 1e-3, "beta1": 0.9, "beta2": 0.99},
    }

    def _second_moment(self, vs: list[Tensor], qs: list[Tensor]) -> None:
        torch._foreach_mul_(vs, self.beta2)
        torch._foreach_addcmul_(vs, qs, qs, value=1.0 - self.beta2)

    def _server_lr(self, round: int) -> float:
        if self.variant == "fedmllm":
            return self.eta
        t = round + 1.0
        return self.eta * math.sqrt(1.0 - self.beta2**t) / (1.0 - self.beta1**t)
