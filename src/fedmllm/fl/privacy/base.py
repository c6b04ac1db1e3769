"""What the central DP wrappers share: the fixed-denominator mean of the clipped deltas, the
Gaussian noise on it, and the wrapper that hands the private mean to the inner rule's step.

Notation (one round): ``x`` the global adapter, ``m`` the clients *sampled* this round, ``S``
the accepted updates among them, ``d_i = y_i - x`` (over the whole adapter, every floating key),
``s_i = min(1, C / ||d_i||)`` the clip factor, ``sigma`` the noise multiplier.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ..aggregation import (
    Layout,
    check_updates,
    compute_dtype,
    contributor_groups,
    delta_norm,
    weighted_sum,
)
from ..checks import check_round, positive, positive_int
from ..strategies.base import DeltaStrategy
from ..types import ClientUpdate, Extras, StateDict, Strategy

MEAN_RULES: tuple[str, ...] = ("fedavg", "fedprox", "fedavgm", "fedadagrad", "fedadam", "fedyogi")
"""The rules whose server step reads only the mean delta: the ones a central mechanism wraps
(``sigma C / m`` calibrates the noise of a mean, not of a median or a selection)."""

NoiseSource = Callable[[int], torch.Generator]
"""``round -> generator`` the noise of that round is drawn from (the engine derives it from the
run's seed, so a run and a resumed run draw the same noise)."""


def fixed_mean_delta(global_state: StateDict, updates: list[ClientUpdate], scales: list[float],
                     m: int) -> StateDict:
    """``D = (1/m) sum_{i in S} s_i d_i`` over every floating key of ``global_state``, in the
    compute dtype: equal weights and the fixed denominator ``m`` of McMahan et al. 2018, so a
    dropped, rejected or silent client contributes 0 (a key a client did not return is a zero
    delta for it) and one client moves ``D`` by at most ``C / m`` whoever else replied."""
    if len(updates) > m:
        raise ValueError(f"{len(updates)} updates, but only {m} clients are sampled per round")
    out: StateDict = {}
    for keys, holders in contributor_groups(global_state, [u.state for u in updates]):
        layout = Layout(keys, global_state)
        coefs = [scales[i] / m for i in holders]
        acc = weighted_sum(layout, [updates[i].state for i in holders], coefs)
        acc.sub_(layout.read(global_state), alpha=math.fsum(coefs))
        out.update(zip(layout.keys, layout.views(acc), strict=True))
    for k, g in global_state.items():  # keys nobody returned: D = 0 (noise comes next)
        if g.is_floating_point() and k not in out:
            out[k] = torch.zeros(g.shape, dtype=compute_dtype(g.dtype), device=g.device)
    return {k: out[k] for k in global_state if k in out}


def clip_factors(global_state: StateDict, updates: list[ClientUpdate],
                 clip: float) -> list[float]:
    """``s_i = min(1, C / ||d_i||)``, the norm over the floating keys client ``i`` returned,
    accumulated in float64 (as :func:`~fedmllm.fl.aggregation.clip_scales`, which goes key by
    key: many small kernels on a large adapter), here one kernel per client and key group (an
    upload laid out in one buffer is read as one span). Not a float32 norm: that one was not
    bit-reproducible across processes, and a resumed run must clip exactly as before."""
    squares = [0.0] * len(updates)
    for keys, holders in contributor_groups(global_state, [u.state for u in updates]):
        layout = Layout(keys, global_state)
        x = layout.read(global_state)
        for i in holders:
            d = torch.sub(layout.read(updates[i].state), x)
            squares[i] += float(torch.linalg.vector_norm(d, dtype=torch.float64)) ** 2
    norms = [math.sqrt(sq) for sq in squares]
    for u, norm in zip(updates, norms, strict=True):
        if not math.isfinite(norm):
            raise ValueError(f"client {u.client_id}: non-finite update; run filter_updates() "
                             "first")
    return [1.0 if norm <= clip else clip / norm for norm in norms]


def add_gaussian_noise(state: StateDict, std: float, generator: torch.Generator) -> None:
    """``state += N(0, std^2)`` on every coordinate of its floating tensors, in place. The draw
    is one ``randn`` per dtype over the keys in sorted order, on the CPU: the same numbers
    whatever the dict's order (a state read back from a checkpoint) and on any device."""
    if std == 0.0:
        return
    ordered = {k: state[k] for k in sorted(state)}
    for keys, _ in contributor_groups(ordered, [ordered]):
        layout = Layout(keys, ordered)
        noise = torch.randn(layout.total, generator=generator, dtype=layout.dtype)
        noise = noise.to(layout.device).mul_(std)
        torch._foreach_add_([state[k] for k in layout.keys], layout.views(noise))


def clip_update(state: StateDict, global_state: StateDict, clip: float) -> tuple[StateDict, bool]:
    """``(x + s d, clipped)`` with ``s = min(1, C / ||d||)`` over the whole update (floating
    keys jointly; others unchanged); ``state`` itself when ``s = 1`` (bit for bit), else new
    tensors in ``state``'s dtypes. Flower: ``compute_clip_model_update`` (FlatClip)."""
    norm = delta_norm(state, global_state)
    if not math.isfinite(norm):
        raise ValueError("non-finite update: nothing to clip")
    if norm <= clip:
        return state, False
    scale = clip / norm
    out = dict(state)
    for k, t in state.items():
        if t.is_floating_point():
            g = global_state[k].to(device=t.device, dtype=compute_dtype(t.dtype))
            out[k] = torch.add(g, t.to(g.dtype) - g, alpha=scale).to(t.dtype)
    return out, True


class PrivateMean(Strategy):
    """A mean-based rule (:data:`MEAN_RULES`) made central-DP; subclasses set the clipping.

    Per round ``t`` (DP-FedAvg, McMahan et al., "Learning Differentially Private Recurrent
    Language Models", ICLR 2018; Geyer et al., "Differentially Private Federated Learning: A
    Client Level Perspective", 2017)::

        D~ = (1/m) sum_{i in S} s_i d_i + N(0, (sigma C / m)^2 I)
        x  <- step(x, D~)            (the inner rule's step: FedAvg x + D~, FedAdam's moments...)

    The noise is added to the mean delta *before* the inner step, so a server optimiser only
    post-processes the private mean. Flower adds it to the inner rule's *output* instead
    (``DifferentialPrivacyServerSideFixedClipping``...): the same for FedAvg/FedProx, not for
    FedAvgM or the adaptive optimisers, whose momentum would otherwise see noise-free means.
    Flower's inner FedAvg weights by example counts and divides by the replies; with equal
    counts and every sampled client replying, the two are the same estimator.
    """

    def __init__(self, strategy: Strategy, *, noise_multiplier: float, clipping_norm: float,
                 num_sampled: int, noise: NoiseSource) -> None:
        if not isinstance(strategy, DeltaStrategy) or strategy.name not in MEAN_RULES:
            raise ValueError(f"central DP wraps a mean-based rule ({', '.join(MEAN_RULES)}); "
                             f"got {getattr(strategy, 'name', strategy)!r}")
        if not noise_multiplier >= 0 or not math.isfinite(noise_multiplier):
            raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier!r}")
        self.inner = strategy
        self.noise_multiplier = float(noise_multiplier)
        self.clip_norm = positive("clipping_norm", clipping_norm)
        self.num_sampled = positive_int("num_sampled", num_sampled)
        self.noise = noise
        self.name = strategy.name
        self.default_objective = strategy.default_objective
        self.allowed_objectives = strategy.allowed_objectives
        self.min_updates = strategy.min_updates

    # ------------------------------------------------------------------ subclass hooks
    def _scales(self, global_state: StateDict, updates: list[ClientUpdate]) -> list[float]:
        """The clip factors ``s_i`` (default: clip on the server to the current C)."""
        return clip_factors(global_state, updates, self.clip_norm)

    def _update_std(self) -> float:
        """The std of the noise on each coordinate of the mean delta: ``sigma C / m``."""
        return self.noise_multiplier * self.clip_norm / self.num_sampled

    def _after_clip(self, scales: list[float], generator: torch.Generator) -> None:
        """Hook run after clipping, before the update noise (adaptive clipping's C step)."""

    # ------------------------------------------------------------------ the round
    def aggregate(self, global_state: StateDict, updates: list[ClientUpdate],
                  round: int) -> StateDict:
        check_round(round)
        updates = list(updates)
        check_updates(global_state, updates)
        generator = self.noise(round)
        with torch.no_grad():
            scales = self._scales(global_state, updates)
            delta = fixed_mean_delta(global_state, updates, scales, self.num_sampled)
            std = self._update_std()
            self._after_clip(scales, generator)
            add_gaussian_noise(delta, std, generator)
        return self.inner.step_mean(global_state, delta, round)

    @property
    def accept_norm(self) -> float | None:
        """The largest ``||d_i||`` the server accepts (``None``: any; it clips)."""
        return None

    def server_extras(self, global_state: StateDict | None = None) -> Extras:
        return self.inner.server_extras(global_state)

    def state_dict(self) -> StateDict:
        return self.inner.state_dict()

    def load_state_dict(self, state: StateDict) -> None:
        self.inner.load_state_dict(state)

    def config(self) -> dict[str, Any]:
        return {**self.inner.config(), "dp_noise_multiplier": self.noise_multiplier,
                "dp_clipping_norm": self.clip_norm, "dp_num_sampled": self.num_sampled}

