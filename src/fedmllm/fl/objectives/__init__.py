"""Client objectives, one per module, and their registry.

A client objective changes what a client optimises: a penalty added to its task loss
(``prox``, ``adaptive_prox``, ``yoco``) or a correction of its gradients (``scaffold``).
:func:`make_objective` builds one by its exact name (:data:`OBJECTIVES`);
:func:`objective_params` lists the config keys one accepts.
"""

from __future__ import annotations

from typing import Any

from ..checks import build_checked, keyword_params, lookup
from ..types import ClientObjective
from ..yoco.objective import YocoObjective
from .ce import CrossEntropy
from .prox import AdaptiveProx, Prox
from .scaffold import ScaffoldObjective

_REGISTRY: dict[str, type[ClientObjective]] = {
    cls.name: cls for cls in (CrossEntropy, Prox, AdaptiveProx, ScaffoldObjective, YocoObjective)
}

OBJECTIVES: tuple[str, ...] = tuple(_REGISTRY)
"""Every client objective name accepted by :func:`make_objective` (exact, case-sensitive)."""


def objective_params(name: str) -> tuple[str, ...]:
    """The config keys accepted by client objective ``name``."""
    return tuple(keyword_params(lookup(_REGISTRY, "client objective", name)))


def make_objective(name: str, **params: Any) -> ClientObjective:
    """Build the client objective called exactly ``name`` (see :data:`OBJECTIVES`).

    Raises ``ValueError`` for an unknown name (with the closest known name as a suggestion),
    an unknown or missing parameter, or a bad value.
    """
    cls = lookup(_REGISTRY, "client objective", name)
    return build_checked(cls, "client objective", name, params)


__all__ = [
    "OBJECTIVES",
    "AdaptiveProx",
    "CrossEntropy",
    "Prox",
    "ScaffoldObjective",
    "YocoObjective",
    "make_objective",
    "objective_params",
]
