"""Coordinate-wise trimmed mean of the client deltas (a robust rule)."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from ..aggregation import trimmed_mean_delta
from .base import CoordinateWise


def _fewest_trimmed(beta: float) -> int:
    """The smallest ``n`` with ``floor(beta * n) >= 1`` (the fewest clients that get trimmed)."""
    n = max(1, math.ceil(1.0 / beta))
    while int(beta * n) < 1:  # floating point: 1 / beta may round down
        n += 1
    while n > 1 and int(beta * (n - 1)) >= 1:
        n -= 1
    return n


class TrimmedMean(CoordinateWise):
    """Coordinate-wise trimmed mean (Yin et al., "Byzantine-Robust Distributed Learning:
    Towards Optimal Statistical Rates", ICML 2018; Flower ``FedTrimmedAvg``).

    Per coordinate, drop the ``k = floor(beta * |S|)`` smallest and ``k`` largest (clipped)
    deltas and average the rest::

        x <- x + mean(sorted(s_i d_i)[k : |S| - k])

    Unweighted. ``min_updates`` is the smallest ``n`` with ``floor(beta * n) >= 1`` (5 for
    ``beta = 0.2``): a key fewer clients returned keeps its global value, since nothing would be
    trimmed. Config keys: ``beta`` (fraction cut from each end, in (0, 0.5), default 0.2;
    ``beta = 0`` is refused: it is the plain mean), ``clip_norm``.
    """

    name = "trimmed_mean"

    def __init__(self, *, beta: float = 0.2, clip_norm: float | None = None) -> None:
        super().__init__(clip_norm=clip_norm)
        beta = float(beta)
        if not 0.0 < beta < 0.5:
            raise ValueError(
                f"beta must lie in (0, 0.5), got {beta!r} (beta = 0 trims nothing: the plain "
                "mean, use fedavg)"
            )
        self.beta = beta
        self.min_updates = _fewest_trimmed(beta)

    def _reduce_key(self, global_t: Tensor, tensors: list[Tensor], scales: list[float]) -> Tensor:
        return trimmed_mean_delta(global_t, tensors, scales, self.beta)

    def config(self) -> dict[str, Any]:
        return {"beta": self.beta, **super().config()}
