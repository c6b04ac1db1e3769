"""Central DP with adaptive clipping (Andrew et al. 2021)."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..checks import positive
from ..types import StateDict, Strategy
from .base import NoiseSource, PrivateMean

CLIP_KEY = "dp/clip_norm"
"""The current C in :meth:`CentralAdaptive.state_dict` (so a checkpoint resumes it)."""


def split_noise(noise_multiplier: float, num_sampled: int,
                clipped_count_stddev: float | None) -> tuple[float, float]:
    """``(sigma_b, sigma_D)``: the std of the noise on the unclipped count and the noise
    multiplier of the update, such that the pair is as private as one Gaussian mechanism with
    ``sigma`` (Andrew et al. 2021, Thm. 1): ``sigma_D = (sigma^-2 - (2 sigma_b)^-2)^(-1/2)``,
    ``sigma_b = m / 20`` unless given. ``sigma = 0``: ``(sigma_b or 0, 0)``. As Flower's
    ``compute_adaptive_noise_params``; ``sigma >= 2 sigma_b`` is refused (no split exists)."""
    if noise_multiplier <= 0:
        return (clipped_count_stddev or 0.0), 0.0
    std_b = num_sampled / 20 if clipped_count_stddev is None else clipped_count_stddev
    if noise_multiplier >= 2 * std_b:
        raise ValueError(f"noise_multiplier {noise_multiplier:g} needs clipped_count_stddev > "
                         f"{noise_multiplier / 2:g} (it is {std_b:g}; default m/20 with m = "
                         f"{num_sampled} sampled clients): raise it or lower the noise")
    return std_b, (noise_multiplier ** -2 - (2 * std_b) ** -2) ** -0.5


class CentralAdaptive(PrivateMean):
    """Server-side adaptive clipping (Andrew et al., "Differentially Private Learning with
    Adaptive Clipping", NeurIPS 2021, Alg. 1), per round with the current ``C``::

        s_i = min(1, C / ||d_i||),   b_i = 1[||d_i|| <= C]            (unclipped)
        D~  = (1/m) sum_i s_i d_i + N(0, (sigma_D C / m)^2 I)
        b~  = (sum_i b_i + N(0, sigma_b^2)) / m
        C  <- C exp(-clip_lr (b~ - target_quantile))

    with the noise split of :func:`split_noise` (the whole round is as private as one
    Gaussian mechanism with ``sigma``, which the accountant uses). The count noise is drawn
    first from the round's generator, then the update noise. ``C`` is strategy state
    (``state_dict()["dp/clip_norm"]``), so a resumed run goes on with the same ``C``.

    Flower 1.42's ``DifferentialPrivacyServerSideAdaptiveClipping`` counts the *clipped*
    updates (``norm_bit = scale < 1``) into the same geometric step, which moves ``C`` the
    wrong way (its legacy ``DPFedAvgAdaptive`` with ``dpfedavg_numpy_client`` counts the
    unclipped ones, as the paper); and it scales the update noise by the *new* ``C`` rather
    than the one the updates were clipped to. We follow the paper on both.
    """

    mechanism = "central_adaptive"

    def __init__(self, strategy: Strategy, *, noise_multiplier: float, clipping_norm: float,
                 num_sampled: int, noise: NoiseSource, target_quantile: float = 0.5,
                 clip_lr: float = 0.2, clipped_count_stddev: float | None = None) -> None:
        super().__init__(strategy, noise_multiplier=noise_multiplier,
                         clipping_norm=clipping_norm, num_sampled=num_sampled, noise=noise)
        if not 0.0 <= target_quantile <= 1.0:
            raise ValueError(f"target_quantile must lie in [0, 1], got {target_quantile!r}")
        if clipped_count_stddev is not None and not clipped_count_stddev >= 0:
            raise ValueError(f"clipped_count_stddev must be >= 0, got {clipped_count_stddev!r}")
        self.target_quantile = float(target_quantile)
        self.clip_lr = positive("clip_lr", clip_lr)
        self.initial_clip = self.clip_norm
        self.count_std, self.update_multiplier = split_noise(
            self.noise_multiplier, self.num_sampled, clipped_count_stddev)

    def _update_std(self) -> float:
        return self.update_multiplier * self.clip_norm / self.num_sampled

    def _after_clip(self, scales: list[float], generator: torch.Generator) -> None:
        unclipped = float(sum(1 for s in scales if s >= 1.0))
        if self.count_std > 0:
            draw = torch.randn((), generator=generator, dtype=torch.float64)
            unclipped += self.count_std * float(draw)
        fraction = unclipped / self.num_sampled
        self.clip_norm *= math.exp(-self.clip_lr * (fraction - self.target_quantile))

    def state_dict(self) -> StateDict:
        return {**self.inner.state_dict(),
                CLIP_KEY: torch.tensor(self.clip_norm, dtype=torch.float64)}

    def load_state_dict(self, state: StateDict) -> None:
        state = dict(state)
        clip = state.pop(CLIP_KEY, None)
        self.inner.load_state_dict(state)
        self.clip_norm = self.initial_clip if clip is None else float(clip)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "dp_target_quantile": self.target_quantile,
                "dp_clip_lr": self.clip_lr, "dp_clipped_count_stddev": self.count_std}
