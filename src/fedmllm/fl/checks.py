"""Shared argument checks of the federated core: every registry and every constructor in
:mod:`fedmllm.fl` words its ``ValueError`` through these helpers."""

from __future__ import annotations

import difflib
import inspect
import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any


def is_integer(value: Any) -> bool:
    """``True`` for Python and numpy integers, ``False`` for ``bool`` and everything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_round(round: Any) -> None:
    """Rounds count from 1."""
    if not is_integer(round) or round < 1:
        raise ValueError(f"round must be an integer >= 1 (rounds count from 1), got {round!r}")


def positive(name: str, value: Any) -> float:
    """``value`` as a float in ``(0, inf)``."""
    value = float(value)
    if not value > 0 or math.isinf(value):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def optional_positive(name: str, value: Any) -> float | None:
    """``None``, or :func:`positive`."""
    return None if value is None else positive(name, value)


def in_unit(name: str, value: Any) -> float:
    """``value`` as a float in ``[0, 1)`` (momentum-like coefficients)."""
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must lie in [0, 1), got {value!r}")
    return value


def positive_int(name: str, value: Any) -> int:
    """``value`` as an ``int >= 1`` (numpy integers accepted, ``bool`` refused)."""
    if not is_integer(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def one_of(kind: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``, else a ``ValueError`` naming them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(unknown(kind, value, choices))
    return value


def unknown(kind: str, name: Any, choices: Iterable[str]) -> str:
    """The message for a name that is not one of ``choices``, with a suggestion::

        unknown strategy 'fedadm'; did you mean 'fedadam'? choices: fedavg, ...
    """
    choices = list(choices)
    hint = suggestion(name, choices)
    return f"unknown {kind} {name!r}{hint + ' ' if hint else '; '}choices: {', '.join(choices)}"


def suggestion(name: Any, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices`` (``difflib``), or ``""``."""
    if not isinstance(name, str):
        return ""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def lookup(registry: dict[str, Any], kind: str, name: Any) -> Any:
    """``registry[name]`` (exact, case-sensitive), else a ``ValueError`` (:func:`unknown`)."""
    found = registry.get(name) if isinstance(name, str) else None
    if found is None:
        raise ValueError(unknown(kind, name, registry))
    return found


def keyword_params(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword-only parameters of ``cls.__init__`` (the config keys it accepts)."""
    sig = inspect.signature(cls.__init__)
    return {n: p for n, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def build_checked(cls: type, kind: str, name: str, params: dict[str, Any]) -> Any:
    """``cls(**params)`` after checking every parameter is known and every required one given.

    ``kind`` and ``name`` (e.g. ``"strategy"``, ``"fedadam"``) only word the ``ValueError``.
    """
    accepted = keyword_params(cls)
    for key in params:
        if key not in accepted:
            choices = ", ".join(accepted) or "(none)"
            raise ValueError(f"unknown parameter {key!r} for {kind} {name!r}"
                             f"{suggestion(key, accepted)}; accepted: {choices}")
    for key, p in accepted.items():
        if p.default is inspect.Parameter.empty and key not in params:
            raise ValueError(f"{kind} {name!r} needs parameter {key!r}")
    return cls(**params)


def split_state_key(full: str, slots: Sequence[str], owner: str) -> tuple[str, str]:
    """``"<slot>/<name>"`` -> ``(slot, name)``; ``ValueError`` for a slot not in ``slots``."""
    slot, sep, key = full.partition("/")
    if not sep or slot not in slots:
        raise ValueError(
            f"{owner}: unexpected state key {full!r}; expected '<slot>/<name>' with slot in "
            f"{', '.join(slots)}"
        )
    return slot, key
