"""FedAvgM: FedAvg with server momentum."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..checks import in_unit, positive
from .base import DeltaStrategy, StatefulMixin, check_variant


class FedAvgM(StatefulMixin, DeltaStrategy):
    """FedAvg with server momentum (Hsu et al., "Measuring the Effects of Non-Identical Data
    Distribution for Federated Visual Classification", 2019).

    ``variant="textbook"`` (Hsu et al.; Flower ``FedAvgM``), heavy ball on the
    pseudo-gradient::

        v <- beta * v + D_w          (v = D_w in the first round a key is seen)
        x <- x + eta * v

    ``variant="fedmllm"`` (FedMLLM research code, an exponential moving average)::

        m <- beta * m + (1 - beta) * D_w    (m = D_w in the first round a key is seen)
        x <- x + eta * m                    (the research code has eta = 1)

    Config keys: ``server_lr`` (eta, default 1.0), ``momentum`` (beta, default 0.9),
    ``variant``, ``clip_norm``.
    """

    name = "fedavgm"

    def __init__(
        self,
        *,
        server_lr: float = 1.0,
        momentum: float = 0.9,
        variant: str = "textbook",
        clip_norm: float | None = None,
    ) -> None:
        super().__init__(clip_norm=clip_norm)
        self.server_lr = positive("server_lr", server_lr)
        self.momentum = in_unit("momentum", momentum)
        self.variant = check_variant(variant)
        self._slots = {"momentum": {}}

    def _step(
        self, keys: list[str], xs: list[Tensor], deltas: list[Tensor], round: int
    ) -> list[Tensor]:
        slot = self._slots["momentum"]
        seen = [i for i, k in enumerate(keys) if k in slot]
        if seen:
            bufs = [slot[keys[i]].to(deltas[i]) for i in seen]
            ds = [deltas[i] for i in seen]
            if self.variant == "textbook":
                torch._foreach_mul_(bufs, self.momentum)
                torch._foreach_add_(bufs, ds)
            else:  # beta m + (1 - beta) D
                torch._foreach_lerp_(bufs, ds, 1.0 - self.momentum)
            for i, b in zip(seen, bufs, strict=True):
                slot[keys[i]] = b
        for k, d in zip(keys, deltas, strict=True):
            slot.setdefault(k, d)  # first round a key is seen: v = m = D_w
        return torch._foreach_add(xs, [slot[k] for k in keys], alpha=self.server_lr)

    def config(self) -> dict[str, Any]:
        return {
            "server_lr": self.server_lr,
            "momentum": self.momentum,
            "variant": self.variant,
            **super().config(),
        }
