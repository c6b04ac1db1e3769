"""Krum: keep the client update closest to its nearest neighbours (a robust rule)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..aggregation import Layout, mean_delta
from ..checks import is_integer
from ..types import ClientUpdate, StateDict
from .base import DeltaStrategy


def non_negative_int(name: str, value: Any) -> int:
    """``value`` as an ``int >= 0`` (numpy integers accepted, ``bool`` refused)."""
    if not is_integer(value) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def delta_gram(layout: Layout, global_state: StateDict, updates: list[ClientUpdate],
               scales: list[float]) -> Tensor:
    """``G_ij = <s_i d_i, s_j d_j>`` over all of ``layout``'s keys (the whole flattened update),
    in float64, one key at a time (memory O(clients x largest tensor))."""
    n, f64 = len(updates), torch.float64
    gram = torch.zeros(n, n, dtype=f64, device=layout.device)
    column = torch.tensor(scales, dtype=f64, device=layout.device).unsqueeze(1)
    for k in layout.keys:
        g = global_state[k]
        rows = torch.stack([u.state[k].to(device=g.device, dtype=f64).flatten()
                            for u in updates])
        rows.sub_(g.to(f64).flatten())
        if any(s != 1.0 for s in scales):
            rows.mul_(column)
        gram.addmm_(rows, rows.T)
    return gram


def krum_scores(gram: Tensor, num_malicious: int) -> Tensor:
    """Krum's score of every client from the Gram matrix of the deltas::

        score_i = sum of the k smallest ||d_i - d_j||^2 over j != i,   k = max(1, n - f - 2)

    (``||d_i - d_j||^2 = G_ii + G_jj - 2 G_ij``; as Flower's ``select_multikrum``)."""
    n = gram.shape[0]
    sq = gram.diagonal()
    dist = sq[:, None] + sq[None, :] - 2.0 * gram
    dist.fill_diagonal_(math.inf)
    k = min(max(1, n - num_malicious - 2), n - 1)
    return dist.sort(dim=1).values[:, :k].sum(dim=1)


def select_krum(gram: Tensor, num_malicious: int, num_to_select: int) -> list[int]:
    """The indices of the ``num_to_select`` lowest :func:`krum_scores` (all of them when fewer
    replied), best first; ties go to the lower index (a stable sort)."""
    scores = krum_scores(gram, num_malicious)
    return scores.sort(stable=True).indices[:num_to_select].tolist()


class Krum(DeltaStrategy):
    """Krum (Blanchard et al., "Machine Learning with Adversaries: Byzantine Tolerant Gradient
    Descent", NeurIPS 2017; Flower ``Krum``).

    With ``n`` clients of which at most ``f`` are Byzantine, each client's score is the sum of
    the squared L2 distances from its (clipped) delta, flattened over the whole update, to the
    ``n - f - 2`` nearest others' (at least 1); the client with the lowest score wins::

        i* = argmin_i sum_{j in N_i} ||s_i d_i - s_j d_j||^2,     x <- x + s_i* d_i*

    Distances between deltas equal those between the returned parameters (Flower's), as every
    client started from ``x``. Ties go to the lower client index. ``min_updates = 2f + 3`` (the
    paper's ``n > 2f + 2``): a key fewer clients returned keeps its global value (below that the
    neighbourhoods include attackers and the choice guarantees nothing), where Flower would
    still pick one. Heterogeneous clients: the rule runs once per group of keys the same clients
    returned. Config keys: ``num_malicious`` (``f``, Flower's ``num_malicious_nodes``, default
    0), ``clip_norm``.
    """

    name = "krum"
    weighted = False  # one update is kept: its example count does not matter
    num_to_select = 1

    def __init__(self, *, num_malicious: int = 0, clip_norm: float | None = None) -> None:
        super().__init__(clip_norm=clip_norm)
        self.num_malicious = non_negative_int("num_malicious", num_malicious)
        self.min_updates = 2 * self.num_malicious + 3

    def _reduce(self, layout: Layout, global_state: StateDict, updates: list[ClientUpdate],
                scales: list[float]) -> Tensor:
        gram = delta_gram(layout, global_state, updates, scales)
        chosen = select_krum(gram, self.num_malicious, self.num_to_select)
        members = [updates[i] for i in chosen]
        return mean_delta(layout, global_state, [u.state for u in members],
                          self._weights(members), [scales[i] for i in chosen])

    def config(self) -> dict[str, Any]:
        return {"num_malicious": self.num_malicious, **super().config()}
