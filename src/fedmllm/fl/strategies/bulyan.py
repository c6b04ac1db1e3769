"""Bulyan: Multi-Krum's selection, then a trimmed mean around the coordinate-wise median."""

from __future__ import annotations

from torch import Tensor

from ..aggregation import Layout, _stacked_deltas
from ..types import ClientUpdate, StateDict
from .krum import Krum, delta_gram, select_krum


def closest_to_median_mean(d: Tensor, beta: int) -> Tensor:
    """Per coordinate, the mean of the ``beta`` values of ``d`` (clients on the last axis)
    closest to their median (the mean of the two middle values for an even count)."""
    n = d.shape[-1]
    ordered = d.sort(dim=-1).values
    median = (ordered[..., (n - 1) // 2] + ordered[..., n // 2]) / 2
    nearest = (d - median.unsqueeze(-1)).abs().topk(beta, dim=-1, largest=False).indices
    return d.gather(-1, nearest).mean(dim=-1)


class Bulyan(Krum):
    """Bulyan (El Mhamdi et al., "The Hidden Vulnerability of Distributed Learning in
    Byzantium", ICML 2018; Flower ``Bulyan``, with its default selection rule).

    With ``n`` clients and at most ``f`` Byzantine: Multi-Krum's scores (``f`` as given, over
    all ``n``) select ``theta = n - 2f`` clients ``M``; then per coordinate the ``beta = theta -
    2f`` (clipped) deltas of ``M`` closest to their coordinate-wise median are averaged::

        x <- x + mean_{beta nearest to m}(s_i d_i : i in M),    m = median_{i in M}(s_i d_i)

    Unweighted. As Flower, the selection scores once rather than re-running Krum on what is
    left (the paper's recursion). ``min_updates = 4f + 3`` (the paper's ``n >= 4f + 3``): a key
    fewer clients returned keeps its global value, as Flower skips such a round. Config keys:
    ``num_malicious`` (``f``, Flower's ``num_malicious_nodes``, default 0), ``clip_norm``.
    """

    name = "bulyan"

    def __init__(self, *, num_malicious: int = 0, clip_norm: float | None = None) -> None:
        super().__init__(num_malicious=num_malicious, clip_norm=clip_norm)
        self.min_updates = 4 * self.num_malicious + 3

    def _reduce(self, layout: Layout, global_state: StateDict, updates: list[ClientUpdate],
                scales: list[float]) -> Tensor:
        f = self.num_malicious
        theta = len(updates) - 2 * f
        chosen = select_krum(delta_gram(layout, global_state, updates, scales), f, theta)
        flat = layout.empty()
        for k, view in zip(layout.keys, layout.views(flat), strict=True):
            d = _stacked_deltas(global_state[k], [updates[i].state[k] for i in chosen],
                                [scales[i] for i in chosen])
            view.copy_(closest_to_median_mean(d, theta - 2 * f))
        return flat
