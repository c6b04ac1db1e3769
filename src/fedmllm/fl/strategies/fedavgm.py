"""FedAvgM: FedAvg with server momentum."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..aggregation import Layout
from ..checks import in_unit, positive
from ..types import StateDict
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

    reduce_plus_global = True

    def _step(self, layout: Layout, global_state: StateDict, summed: Tensor, round: int) -> Tensor:
        """``summed`` is ``x + D_w``; ``D_w = summed - x`` is formed chunk by chunk."""
        textbook = self.variant == "textbook"
        x = layout.read(global_state)
        # a fresh key: textbook v = 0 (so v = D after the step); fedmllm m = D
        v, is_delta = self._momentum_flat("momentum", layout, x, summed, textbook)
        for sl in layout.chunks():
            d, vv, xx = summed[sl], v[sl], x[sl]
            if not is_delta:
                d.sub_(xx)
            if textbook:
                vv.mul_(self.momentum).add_(d)
            else:  # beta m + (1 - beta) D
                vv.lerp_(d, 1.0 - self.momentum)
            torch.add(xx, vv, alpha=self.server_lr, out=d)
        return summed

    def config(self) -> dict[str, Any]:
        return {
            "server_lr": self.server_lr,
            "momentum": self.momentum,
            "variant": self.variant,
            **super().config(),
        }
