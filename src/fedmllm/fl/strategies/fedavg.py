"""FedAvg: the example-weighted mean of the client states."""

from __future__ import annotations

from torch import Tensor

from ..aggregation import Layout
from ..types import StateDict
from .base import DeltaStrategy


class FedAvg(DeltaStrategy):
    """FedAvg (McMahan et al., "Communication-Efficient Learning of Deep Networks from
    Decentralized Data", AISTATS 2017)::

        x <- x + D_w = sum_i n_i s_i y_i / sum_i n_i + (1 - sum_i n_i s_i / sum_i n_i) x

    i.e. without clipping (``s_i = 1``) the example-weighted mean of the client states.
    Flower: ``FedAvg``. Config keys: ``clip_norm``.
    """

    name = "fedavg"
    reduce_plus_global = True  # x + D_w: without clipping sum_i n_i y_i / sum_i n_i, one pass

    def _step(self, layout: Layout, global_state: StateDict, delta: Tensor, round: int) -> Tensor:
        return delta  # already x + D_w (see _reduce)
