"""Poisoning attacks by malicious clients: what the robust rules of :mod:`.strategies` face.

A malicious client trains as an honest one does, from the global adapter ``x`` to ``y = x +
d``, and then sends, instead of ``y`` (kinds of ``fl.attack.kind``)::

    sign_flip    y' = x - k d           k = flip_factor   (Li et al., "RSA: Byzantine-Robust
                                        Stochastic Aggregation Methods for Distributed
                                        Learning from Heterogeneous Datasets", AAAI 2019: the
                                        sign-flipping attack, -4 x the honest message; Fang
                                        et al., USENIX Security 2020, reverse the update too)
    scale        y' = x + k d           k = scale_factor  (Bagdasaryan et al., "How To Backdoor
                                        Federated Learning", AISTATS 2020: model replacement
                                        boosts an update by n / eta)
    noise        y' = x + e,  e ~ N(0, s^2 I)   s = noise_std  (the Gaussian attack of Fang et
                                        al. 2020's comparison, after Blanchard et al., NeurIPS
                                        2017, s = 200: the update is *replaced* by noise; the
                                        honest delta is dropped)
    label_flip   trains on its own samples relabelled l -> K - 1 - l   (Tolpegin et al., "Data
                                        Poisoning Attacks Against Federated Learning Systems",
                                        ESORICS 2020; :func:`fedmllm.data.flip.flip_labels`),
                                        then sends its update unchanged

The malicious set is drawn once from the generator the caller derives from the run's seed
(:func:`fedmllm.engine.factory.build_attack`: ``(seed, "attack", "clients")``), so the
simulation and every node of a Flower federation agree on it without talking; the noise of
client ``c`` in round ``r`` comes from the generator it derives from ``(seed, "attack", r,
c)``, so it does not depend on which clients ran before. Each attack works per key on the
keys the update holds; non-floating tensors and SCAFFOLD's extras are sent as trained.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from .aggregation import pack_state
from .checks import is_integer
from .types import ClientUpdate, StateDict

__all__ = ["ATTACKS", "ATTACK_PARAMS", "Attack", "gaussian_update", "make_attack",
           "malicious_clients", "num_malicious", "scale_update", "sign_flip"]

#: The attack of each ``fl.attack.kind`` and the parameter keys it reads.
ATTACK_PARAMS: dict[str, tuple[str, ...]] = {
    "none": (), "sign_flip": ("flip_factor",), "scale": ("scale_factor",),
    "noise": ("noise_std",), "label_flip": (),
}
ATTACKS = tuple(ATTACK_PARAMS)


def _floats(start: StateDict, trained: StateDict):
    """``(key, x, y)`` for the floating-point keys of ``trained`` (the others are kept)."""
    for k, y in trained.items():
        if torch.is_floating_point(y):
            yield k, start[k].to(device=y.device, dtype=y.dtype), y


def sign_flip(start: StateDict, trained: StateDict, factor: float) -> StateDict:
    """``y' = x - k d`` with ``d = y - x``: the update reversed and scaled by ``k``."""
    out = dict(trained)
    for k, x, y in _floats(start, trained):
        out[k] = x - factor * (y - x)
    return out


def scale_update(start: StateDict, trained: StateDict, factor: float) -> StateDict:
    """``y' = x + k d`` with ``d = y - x``: the update boosted by ``k`` (model replacement)."""
    out = dict(trained)
    for k, x, y in _floats(start, trained):
        out[k] = x + factor * (y - x)
    return out


def gaussian_update(start: StateDict, trained: StateDict, std: float,
                    generator: torch.Generator) -> StateDict:
    """``y' = x + e`` with ``e ~ N(0, std^2 I)`` (drawn in float32 on the CPU from
    ``generator``, key by key in ``trained``'s order, so every device draws the same)."""
    out = dict(trained)
    for k, x, y in _floats(start, trained):
        e = torch.randn(y.shape, generator=generator, dtype=torch.float32)
        out[k] = x + std * e.to(device=y.device, dtype=y.dtype)
    return out


def num_malicious(fraction: float, num_clients: int) -> int:
    """``round(fraction * num_clients)``, halves rounded up (0.25 of 10 clients: 3)."""
    return math.floor(fraction * num_clients + 0.5)


def malicious_clients(num_clients: int, rng: np.random.Generator, *,
                      fraction: float | None = None,
                      clients: Sequence[int] | None = None) -> tuple[int, ...]:
    """The malicious clients, sorted: ``clients`` as given (checked), or
    :func:`num_malicious` of them drawn without replacement by ``rng``. A ``ValueError`` names
    the problem (at least one client stays honest)."""
    if (fraction is None) == (clients is None):
        raise ValueError("give the malicious clients as fraction or as clients (one of them)")
    if clients is not None:
        bad = [c for c in clients if not is_integer(c) or not 0 <= c < num_clients]
        if bad:
            raise ValueError(f"clients: {bad[0]!r} is not one of the {num_clients} clients' ids "
                             f"0..{num_clients - 1}")
        chosen = sorted({int(c) for c in clients})
        if len(chosen) != len(clients):
            raise ValueError(f"clients: {list(clients)} names a client twice")
    else:
        m = num_malicious(fraction, num_clients)
        chosen = sorted(rng.choice(num_clients, m, replace=False).tolist())
    if len(chosen) >= num_clients:
        raise ValueError(f"{len(chosen)} malicious of {num_clients} clients leaves no honest "
                         "client")
    return tuple(chosen)


@dataclass(frozen=True)
class Attack:
    """The attack of one run: its kind, its malicious clients and its parameters."""

    kind: str = "none"
    malicious: tuple[int, ...] = ()
    params: dict[str, float] = field(default_factory=dict)
    noise: Callable[[int, int], torch.Generator] | None = field(default=None, compare=False)
    """``noise``: the generator of client ``c``'s noise in round ``r``: ``noise(r, c)``."""

    def is_malicious(self, client: int) -> bool:
        return self.kind != "none" and client in self.malicious

    def flips_labels(self, client: int) -> bool:
        """Whether client ``client`` trains on flipped labels (``label_flip``)."""
        return self.kind == "label_flip" and client in self.malicious

    def apply(self, update: ClientUpdate, start: StateDict, round_: int) -> ClientUpdate:
        """What client ``update.client_id`` sends in round ``round_`` after training from
        ``start``: ``update`` itself for an honest client (and for ``label_flip``), else a copy
        with the attacked state (the server is not told; ``summary.json`` records the set)."""
        kind, c = self.kind, update.client_id
        if kind in ("none", "label_flip") or c not in self.malicious:
            return update
        if kind == "sign_flip":
            state = sign_flip(start, update.state, self.params["flip_factor"])
        elif kind == "scale":
            state = scale_update(start, update.state, self.params["scale_factor"])
        else:
            state = gaussian_update(start, update.state, self.params["noise_std"],
                                    self.noise(round_, c))
        return replace(update, state=pack_state(state))  # laid out as an upload is

    def record(self) -> dict[str, Any]:
        """For ``summary.json``: ``{"kind", "malicious": [ids], <params>}``."""
        return {"kind": self.kind, "malicious": list(self.malicious), **self.params}


def make_attack(kind: str, num_clients: int, rng: np.random.Generator, *,
                fraction: float | None = None, clients: Sequence[int] | None = None,
                noise: Callable[[int, int], torch.Generator] | None = None,
                **params: float) -> Attack:
    """The :class:`Attack` of ``kind`` on ``num_clients`` clients (:func:`malicious_clients`
    draws with ``rng``; ``noise(round, client)`` gives the ``noise`` attack's generators);
    ``params`` holds the keys :data:`ATTACK_PARAMS` names for ``kind`` (others are ignored).
    ``kind = "none"``: no attack (``fraction``/``clients`` ignored)."""
    if kind not in ATTACK_PARAMS:
        raise ValueError(f"unknown attack {kind!r}; choices: {', '.join(ATTACKS)}")
    if kind == "none":
        return Attack()
    if kind == "noise" and noise is None:
        raise ValueError("the noise attack needs its generators (noise)")
    chosen = malicious_clients(num_clients, rng, fraction=fraction, clients=clients)
    own = {p: float(params[p]) for p in ATTACK_PARAMS[kind]}
    return Attack(kind, chosen, own, noise)
