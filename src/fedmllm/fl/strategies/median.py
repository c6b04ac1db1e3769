"""Coordinate-wise median of the client deltas (a robust rule)."""

from __future__ import annotations

from torch import Tensor

from ..aggregation import median_delta
from .base import CoordinateWise


class Median(CoordinateWise):
    """Coordinate-wise median (Yin et al., "Byzantine-Robust Distributed Learning: Towards
    Optimal Statistical Rates", ICML 2018)::

        x <- x + median_i(s_i d_i)      (per coordinate, over the clients that sent the key)

    Unweighted; for an even number of clients the two middle values are averaged.
    ``min_updates = 3``: a key fewer than 3 clients returned keeps its global value (the median
    of two values is their mean).
    Flower: ``FedMedian``. Config keys: ``clip_norm``.
    """

    name = "median"
    min_updates = 3  # the median of two values is their mean

    def _reduce_key(self, global_t: Tensor, tensors: list[Tensor], scales: list[float]) -> Tensor:
        return median_delta(global_t, tensors, scales)
