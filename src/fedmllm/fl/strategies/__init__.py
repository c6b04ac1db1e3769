"""Server aggregation strategies, one per module, and their registry.

:func:`make_strategy` builds a strategy by its exact name (:data:`ALGORITHMS`);
:func:`strategy_params` lists the config keys one accepts. Every strategy works on plain
``dict[str, Tensor]`` adapter states (see :mod:`fedmllm.fl.types`); the shared machinery
(delta strategies, optimizer slots, the notation) is in :mod:`.base`.
"""

from __future__ import annotations

from typing import Any

from ..checks import build_checked, keyword_params, lookup
from ..types import Strategy
from .base import VARIANTS
from .bulyan import Bulyan
from .centralized import Centralized
from .fedadagrad import FedAdagrad
from .fedadam import FedAdam
from .fedavg import FedAvg
from .fedavgm import FedAvgM
from .fedprox import FedProx
from .fedyogi import FedYogi
from .krum import Krum
from .local import Local, ZeroShot
from .median import Median
from .multikrum import MultiKrum
from .scaffold import Scaffold
from .trimmed_mean import TrimmedMean

_STRATEGIES: tuple[type[Strategy], ...] = (
    FedAvg,
    FedAvgM,
    FedAdagrad,
    FedAdam,
    FedYogi,
    FedProx,
    Scaffold,
    Local,
    ZeroShot,
    Centralized,
    Median,
    TrimmedMean,
    Krum,
    MultiKrum,
    Bulyan,
)
_REGISTRY: dict[str, type[Strategy]] = {cls.name: cls for cls in _STRATEGIES}

ALGORITHMS: tuple[str, ...] = tuple(_REGISTRY)
"""Every strategy name accepted by :func:`make_strategy` (exact, case-sensitive)."""


def strategy_params(name: str) -> tuple[str, ...]:
    """The config keys accepted by strategy ``name`` (for filtering a shared config table)."""
    return tuple(keyword_params(lookup(_REGISTRY, "strategy", name)))


def make_strategy(name: str, **params: Any) -> Strategy:
    """Build the strategy called exactly ``name`` (see :data:`ALGORITHMS`).

    Raises ``ValueError`` naming the problem for an unknown name (with the closest known name
    as a suggestion), an unknown or missing parameter, or an out-of-range value.
    """
    return build_checked(lookup(_REGISTRY, "strategy", name), "strategy", name, params)


__all__ = ["ALGORITHMS", "VARIANTS", "make_strategy", "strategy_params"]
__all__ += [cls.__name__ for cls in _STRATEGIES]  # every strategy class, as registered
