"""FedAvg: the example-weighted mean of the client states."""

from __future__ import annotations

from torch import Tensor

from ..aggregation import Layout, mean_delta
from ..types import ClientUpdate, StateDict
from .base import DeltaStrategy


class FedAvg(DeltaStrategy):
    """FedAvg (McMahan et al., "Communication-Efficient Learning of Deep Networks from
    Decentralized Data", AISTATS 2017)::

        x <- x + D_w = sum_i n_i s_i y_i / sum_i n_i + (1 - sum_i n_i s_i / sum_i n_i) x

    i.e. without clipping (``s_i = 1``) the example-weighted mean of the client states.
    Flower: ``FedAvg``. Config keys: ``clip_norm``.
    """

    name = "fedavg"

    def _reduce(
        self,
        layout: Layout,
        global_state: StateDict,
        updates: list[ClientUpdate],
        scales: list[float],
    ) -> Tensor:
        """``x + D_w`` directly: without clipping, ``sum_i n_i y_i / sum_i n_i`` (one pass over
        the client states, none over ``x``)."""
        states = [u.state for u in updates]
        return mean_delta(layout, global_state, states, self._weights(updates), scales,
                          plus_global=True)

    def _step(self, layout: Layout, global_state: StateDict, delta: Tensor, round: int) -> Tensor:
        return delta  # already x + D_w (see _reduce)
