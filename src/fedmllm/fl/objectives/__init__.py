"""Client objectives, one per module, and their registry.

A client objective changes what a client optimises: a penalty added to its task loss
(``prox``, ``adaptive_prox``, ``yoco``) or a correction of its gradients (``scaffold``).
An objective is a :class:`~fedmllm.fl.types.ClientObjective` subclass with a ``name`` and
keyword-only config parameters, registered with one line (:func:`register_objective`, as
peft's ``register_peft_method``). :func:`make_objective` builds one by its exact name
(:func:`objective_names`; :data:`OBJECTIVES` are the built-in ones);
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

_REGISTRY: dict[str, type[ClientObjective]] = {}


def register_objective(cls: type[ClientObjective]) -> type[ClientObjective]:
    """Make ``cls`` buildable by :func:`make_objective` as ``cls.name``; a name already taken
    is refused."""
    if cls.name in _REGISTRY:
        raise ValueError(f"client objective {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def objective_names() -> tuple[str, ...]:
    """Every client objective name accepted by :func:`make_objective` (exact,
    case-sensitive), in registration order."""
    return tuple(_REGISTRY)


register_objective(CrossEntropy)
register_objective(Prox)
register_objective(AdaptiveProx)
register_objective(ScaffoldObjective)
register_objective(YocoObjective)

OBJECTIVES: tuple[str, ...] = objective_names()
"""The built-in client objective names (:func:`objective_names` includes later ones)."""


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
    "objective_names",
    "objective_params",
    "register_objective",
]
