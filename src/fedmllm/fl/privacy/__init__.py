"""Client-level differential privacy: wrappers around the mean-based rules, the clients' clip
and noise, and the accountant.

- :mod:`.base`: the fixed-denominator mean, the Gaussian noise, :func:`clip_update` and
  :class:`PrivateMean`, the wrapper a central mechanism is (the inner rule's step runs on the
  private mean delta, :meth:`~fedmllm.fl.strategies.base.DeltaStrategy.step_mean`).
- :mod:`.central_server`, :mod:`.central_client`, :mod:`.central_adaptive`: the central
  mechanisms (Flower: ``DifferentialPrivacyServerSideFixedClipping``,
  ``...ClientSideFixedClipping`` + ``fixedclipping_mod``,
  ``...ServerSideAdaptiveClipping``).
- :mod:`.local`: local DP, the client's own clip and noise (any multi-round rule).
- :mod:`.accountant`: epsilon at delta by dp-accounting's RDP accountant; the noise
  multiplier for a target epsilon.
"""

from __future__ import annotations

from typing import Any

from ..types import Strategy
from .accountant import SAMPLINGS, Accountant
from .base import MEAN_RULES, NoiseSource, PrivateMean, add_gaussian_noise, clip_update
from .central_adaptive import CentralAdaptive, split_noise
from .central_client import CentralClient
from .central_server import CentralServer
from .local import local_privatize

MECHANISMS: tuple[str, ...] = ("none", "central_server", "central_client", "central_adaptive",
                               "local")
"""``fl.privacy.mechanism`` values."""

CENTRAL: dict[str, type[PrivateMean]] = {
    cls.mechanism: cls for cls in (CentralServer, CentralClient, CentralAdaptive)}
"""The central mechanisms: server-side wrappers of a mean-based rule."""


def make_private(strategy: Strategy, mechanism: str, **params: Any) -> Strategy:
    """``strategy`` wrapped by the central mechanism ``mechanism`` (its keyword ``params``:
    ``noise_multiplier``, ``clipping_norm``, ``num_sampled``, ``noise``, and for
    ``central_adaptive`` ``target_quantile``, ``clip_lr``, ``clipped_count_stddev``);
    ``strategy`` itself for ``none`` and ``local`` (nothing to do on the server)."""
    if mechanism in ("none", "local"):
        return strategy
    if mechanism not in CENTRAL:
        raise ValueError(f"unknown privacy mechanism {mechanism!r}; choices: "
                         f"{', '.join(MECHANISMS)}")
    return CENTRAL[mechanism](strategy, **params)


__all__ = ["CENTRAL", "MEAN_RULES", "MECHANISMS", "SAMPLINGS", "Accountant", "CentralAdaptive",
           "CentralClient", "CentralServer", "NoiseSource", "PrivateMean", "add_gaussian_noise",
           "clip_update", "local_privatize", "make_private", "split_noise"]
