"""FedProx, server side: FedAvg's rule (the proximal term is a client objective)."""

from __future__ import annotations

from .fedavg import FedAvg


class FedProx(FedAvg):
    """FedProx (Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020),
    server side: identical to :class:`~fedmllm.fl.strategies.fedavg.FedAvg`, ``x <- x + D_w``.

    The proximal term ``(mu/2) ||theta - x||^2`` is the client objective ``prox`` (or
    FedMLLM's layer-restricted ``adaptive_prox``); with plain ``ce`` it would be FedAvg, so
    that pairing is refused. Flower: ``FedProx``. Config keys: ``clip_norm``.
    """

    name = "fedprox"
    default_objective = "prox"
    allowed_objectives = ("prox", "adaptive_prox")
