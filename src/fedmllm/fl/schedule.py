"""Learning-rate schedules: the client learning rate of each round (:func:`round_lr`) and the
step size of each optimizer step inside one client's local run (:func:`local_lr`)."""

from __future__ import annotations

import math
import numbers

from .checks import is_integer

SCHEDULES = ("cosine", "constant")
"""Round-level schedules of :func:`round_lr`."""

LOCAL_SCHEDULES = ("constant", "cosine")
"""Schedules of the optimizer steps inside one local run (:func:`local_lr`)."""


def round_lr(
    round: int,
    total_rounds: int,
    base_lr: float,
    schedule: str = "cosine",
    warmup_rounds: int = 0,
    min_lr_ratio: float = 0.0,
) -> float:
    """Client learning rate for ``round`` (counting from 1 to ``total_rounds``).

    With ``W = warmup_rounds``, ``r0 = max(W, 1)`` and ``lr_min = base_lr * min_lr_ratio``::

        round <= W:  base_lr * round / W                  (linear warm-up, reaches base_lr at W)
        constant:    base_lr
        cosine:      lr_min + (base_lr - lr_min) * (1 + cos(pi * (round - r0) / (R - r0))) / 2

    so the cosine starts at ``base_lr`` (at round ``W``, or round 1 without warm-up) and ends at
    ``lr_min`` in the last round ``R``. The rate never exceeds ``base_lr`` (the FedMLLM research
    code's half-round warm-up gave round 0 twice the base rate).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown lr schedule {schedule!r}; choices: {', '.join(SCHEDULES)}")
    if not isinstance(total_rounds, numbers.Integral) or total_rounds < 1:
        raise ValueError(f"total_rounds must be an integer >= 1, got {total_rounds!r}")
    if not isinstance(round, numbers.Integral) or not 1 <= round <= total_rounds:
        raise ValueError(f"round must be an integer in [1, {total_rounds}], got {round!r}")
    if not isinstance(warmup_rounds, numbers.Integral) or not 0 <= warmup_rounds <= total_rounds:
        raise ValueError(
            f"warmup_rounds must be an integer in [0, {total_rounds}], got {warmup_rounds!r}"
        )
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must lie in [0, 1], got {min_lr_ratio!r}")
    if not base_lr >= 0:
        raise ValueError(f"base_lr must be >= 0, got {base_lr!r}")
    if round <= warmup_rounds:
        return base_lr * round / warmup_rounds
    if schedule == "constant":
        return base_lr
    start = max(warmup_rounds, 1)
    if total_rounds == start:
        return base_lr
    progress = (round - start) / (total_rounds - start)
    lr_min = base_lr * min_lr_ratio
    return lr_min + (base_lr - lr_min) * (1.0 + math.cos(math.pi * progress)) / 2.0


def local_lr(
    step: int,
    total_steps: int,
    base_lr: float,
    schedule: str = "constant",
    warmup_ratio: float = 0.0,
) -> float:
    """The step size of optimizer step ``step`` (0-based) of a client's local run of
    ``total_steps`` steps.

    With ``W = ceil(warmup_ratio * total_steps)`` and ``T = total_steps``::

        step < W:   base_lr * (step + 1) / W                          (linear warm-up)
        constant:   base_lr
        cosine:     base_lr * (1 + cos(pi * (step - W) / (T - W))) / 2

    so the warm-up reaches ``base_lr`` at its last step, the first step after it uses
    ``base_lr``, and no step uses 0. The FedMLLM (arXiv 2411.14717) and YOCO (NeurIPS 2025)
    research code run Hugging Face's cosine schedule with ``warmup_ratio = 0.01`` inside each
    local run; after the warm-up this is exactly that schedule, but HF's first warm-up step
    uses rate 0 (its step ``k`` has rate ``k / W``), which wastes that step: here step ``k`` of
    the warm-up gets HF's rate of step ``k + 1``.

    The sum of these rates over the run is the ``lr_sum`` a client objective's ``end`` takes.
    """
    if schedule not in LOCAL_SCHEDULES:
        raise ValueError(
            f"unknown local lr schedule {schedule!r}; choices: {', '.join(LOCAL_SCHEDULES)}"
        )
    if not is_integer(total_steps) or total_steps < 1:
        raise ValueError(f"total_steps must be an integer >= 1, got {total_steps!r}")
    if not is_integer(step) or not 0 <= step < total_steps:
        raise ValueError(f"step must be an integer in [0, {total_steps}), got {step!r}")
    base_lr = float(base_lr)
    if not (base_lr >= 0 and math.isfinite(base_lr)):
        raise ValueError(f"base_lr must be a finite number >= 0, got {base_lr!r}")
    warmup_ratio = float(warmup_ratio)
    if not 0.0 <= warmup_ratio <= 1.0:
        raise ValueError(f"warmup_ratio must lie in [0, 1], got {warmup_ratio!r}")
    step, total = int(step), int(total_steps)
    warm = math.ceil(warmup_ratio * total)
    if step < warm:
        return base_lr * (step + 1) / warm
    if schedule == "constant":
        return base_lr
    return base_lr * (1.0 + math.cos(math.pi * (step - warm) / (total - warm))) / 2.0
