"""Central DP with fixed clipping on the clients."""

from __future__ import annotations

from ..types import ClientUpdate, StateDict
from .base import PrivateMean

#: Relative slack of the server's norm check on a client-clipped update (float rounding of
#: ``x + s d`` in the adapter's dtype).
ACCEPT_SLACK = 1e-6


class CentralClient(PrivateMean):
    """Client-side fixed clipping: every client clips its own delta to ``C`` before upload
    (:func:`~.base.clip_update`, in ``train_round``); the server rejects an update whose delta
    norm exceeds ``C (1 + 1e-6)`` (:attr:`accept_norm`, through the update validation), does
    not clip again, averages with the fixed denominator ``m`` and adds ``N(0, (sigma C /
    m)^2)`` per coordinate (see :class:`~.base.PrivateMean`). The sensitivity is ``C (1 +
    1e-6)``, which the accountant rounds to ``C``. Flower:
    ``DifferentialPrivacyClientSideFixedClipping`` with ``fixedclipping_mod``."""

    mechanism = "central_client"

    def _scales(self, global_state: StateDict, updates: list[ClientUpdate]) -> list[float]:
        return [1.0] * len(updates)  # clipped by the clients, bounded by the validation

    @property
    def accept_norm(self) -> float | None:
        return self.clip_norm * (1.0 + ACCEPT_SLACK)
