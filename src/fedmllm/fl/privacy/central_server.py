"""Central DP with fixed clipping on the server."""

from __future__ import annotations

from .base import PrivateMean


class CentralServer(PrivateMean):
    """Server-side fixed clipping (DP-FedAvg, McMahan et al. 2018): the server clips every
    accepted update's delta to ``C`` over the whole adapter, averages with the fixed
    denominator ``m`` and adds ``N(0, (sigma C / m)^2)`` per coordinate (see
    :class:`~.base.PrivateMean`). The clients are trusted with nothing; the server sees the
    updates in the clear. Flower: ``DifferentialPrivacyServerSideFixedClipping``."""

    mechanism = "central_server"
