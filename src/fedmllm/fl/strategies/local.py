"""The non-federated baselines: local-only training and zero-shot evaluation."""

from __future__ import annotations

from ..checks import check_round
from ..types import ClientUpdate, StateDict, Strategy


class Local(Strategy):
    """Local-only training (no federation): ``aggregate`` returns the global state unchanged.

    ``personalized = True``: the driver keeps each client's own adapter across rounds and
    evaluates it per client; the "global" state stays at its initial value. The baseline of
    the FedMLLM benchmark (arXiv 2411.14717). No config keys.
    """

    name = "local"
    aggregates = False
    personalized = True

    def aggregate(
        self, global_state: StateDict, updates: list[ClientUpdate], round: int
    ) -> StateDict:
        check_round(round)
        return dict(global_state)


class ZeroShot(Local):
    """Zero-shot baseline of the FedMLLM benchmark (arXiv 2411.14717): no client trains
    (``trains_clients = False``), the initial model is evaluated; only the plain task loss
    ``ce`` is allowed. ``aggregate`` returns the global state unchanged. No config keys."""

    name = "zeroshot"
    trains_clients = False
    allowed_objectives = ("ce",)
    personalized = False
