"""Multi-Krum: average the m client updates Krum scores best (a robust rule)."""

from __future__ import annotations

from typing import Any

from ..checks import positive_int
from .krum import Krum


class MultiKrum(Krum):
    """Multi-Krum (Blanchard et al., "Machine Learning with Adversaries: Byzantine Tolerant
    Gradient Descent", NeurIPS 2017; Flower ``MultiKrum``).

    Krum's scores (see :class:`~fedmllm.fl.strategies.krum.Krum`), computed once; the ``m``
    lowest-scoring clients ``M`` are averaged, weighted by their example counts as Flower does::

        x <- x + sum_{i in M} n_i s_i d_i / sum_{i in M} n_i

    ``m = 1`` is Krum; a round in which fewer than ``m`` clients replied averages them all.
    ``min_updates = 2f + 3``, as Krum. ``plan_run`` also refuses ``m > clients_per_round - f``
    (more would take in an attacker whenever ``f`` attack). Config keys: ``num_malicious``
    (``f``, Flower's ``num_malicious_nodes``, default 0), ``num_to_select`` (``m``, Flower's
    ``num_nodes_to_select``, default 1), ``clip_norm``.
    """

    name = "multikrum"
    weighted = True

    def __init__(self, *, num_malicious: int = 0, num_to_select: int = 1,
                 clip_norm: float | None = None) -> None:
        super().__init__(num_malicious=num_malicious, clip_norm=clip_norm)
        self.num_to_select = positive_int("num_to_select", num_to_select)

    def config(self) -> dict[str, Any]:
        return {"num_to_select": self.num_to_select, **super().config()}
