"""Local DP: every client clips and noises its own update before upload."""

from __future__ import annotations

import torch

from ..aggregation import compute_dtype
from ..types import StateDict
from .base import add_gaussian_noise, clip_update


def local_privatize(state: StateDict, global_state: StateDict, *, clipping_norm: float,
                    noise_multiplier: float, generator: torch.Generator) -> StateDict:
    """The upload of a client under local DP (the Gaussian mechanism on each client's own
    update, as Flower's ``LocalDpMod`` places it; calibrated by a noise multiplier as in
    central DP, Geyer et al. 2017, rather than by a per-round epsilon)::

        y' = x + s d + N(0, (sigma C)^2 I),     s = min(1, C / ||d||)

    over every floating key the client returns (noise drawn in its compute dtype on the CPU
    from ``generator``, then cast to the key's dtype). Any multi-round rule may aggregate the
    uploads: the server learns nothing more than each noisy upload. The input is not changed.
    """
    clipped, _ = clip_update(state, global_state, clipping_norm)
    std = noise_multiplier * clipping_norm
    if std == 0.0:
        return clipped
    noisy = {k: t.to(compute_dtype(t.dtype), copy=True) for k, t in clipped.items()
             if t.is_floating_point()}
    add_gaussian_noise(noisy, std, generator)
    return {k: noisy[k].to(t.dtype) if k in noisy else t for k, t in clipped.items()}
