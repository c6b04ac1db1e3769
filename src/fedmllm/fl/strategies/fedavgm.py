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

    def _step(self, layout: Layout, global_state: StateDict, delta: Tensor, round: int) -> Tensor:
        textbook = self.variant == "textbook"

        def init(i: int, view: Tensor) -> None:  # textbook: 0 (so v = D); fedmllm: m = D
            if textbook:
                view.zero_()
            else:
                start = layout.offsets[i]
                view.copy_(delta[start : start + layout.numels[i]].view(view.shape))

        v = self._slot_flat("momentum", layout, init)
        if textbook:
            v.mul_(self.momentum).add_(delta)
        else:  # beta m + (1 - beta) D
            v.lerp_(delta, 1.0 - self.momentum)
        return torch.add(layout.read(global_state), v, alpha=self.server_lr, out=delta)

    def config(self) -> dict[str, Any]:
        return {
            "server_lr": self.server_lr,
            "momentum": self.momentum,
            "variant": self.variant,
            **super().config(),
        }
