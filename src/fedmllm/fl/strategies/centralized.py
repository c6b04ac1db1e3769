"""Centralized training: the upper bound beside local-only and zero-shot."""

from __future__ import annotations

from ..checks import check_round
from ..types import ClientUpdate, StateDict, Strategy


class Centralized(Strategy):
    """All clients' training data pooled and trained as one client (``pooled = True``).

    Not a federated algorithm: the reference a federation is measured against (the upper bound
    of the FedMLLM benchmark's comparisons, arXiv 2411.14717). Per round the driver trains the
    single pooled client for as many optimizer steps as the round's sampled clients would take
    together (``clients_per_round x local_steps``), with the same learning-rate schedules, and
    evaluates the result exactly as it evaluates a global model; nothing is communicated.
    ``aggregate`` returns that client's state. Only the plain task loss ``ce`` is allowed. No
    config keys.
    """

    name = "centralized"
    aggregates = False
    pooled = True
    allowed_objectives = ("ce",)

    def aggregate(
        self, global_state: StateDict, updates: list[ClientUpdate], round: int
    ) -> StateDict:
        check_round(round)
        if len(updates) != 1:
            raise ValueError(f"centralized training takes the pooled client's update only, "
                             f"got {len(updates)}")
        return dict(updates[0].state)
