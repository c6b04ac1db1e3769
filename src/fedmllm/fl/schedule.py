"""Round-level learning-rate schedules (the client learning rate of each round)."""

from __future__ import annotations

import math
import numbers

SCHEDULES = ("cosine", "constant")


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
    ``lr_min`` in the last round ``R``. The rate never exceeds ``base_lr`` (the research code's
    half-round warm-up gave round 0 twice the base rate).
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
