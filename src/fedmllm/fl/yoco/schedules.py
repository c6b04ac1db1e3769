"""YOCO's schedules over a client's local steps: the soft-sign sharpness ``gamma(t)`` and the
decaying weight of the orthogonality penalty."""

from __future__ import annotations

import math
import numbers


def check_total(total: int) -> int:
    """The total step count ``T`` as an ``int >= 1``."""
    if isinstance(total, bool) or not isinstance(total, numbers.Integral) or total < 1:
        raise ValueError(f"total steps must be an integer >= 1, got {total!r}")
    return int(total)


def gamma_schedule(
    step: int, total: int, gamma_min: float = 1.0, gamma_max: float = 50.0
) -> float:
    """Cosine ramp of the soft-sign sharpness from ``gamma_min`` (step 0) to ``gamma_max``::

        gamma(t) = gamma_max - (gamma_max - gamma_min) * (1 + cos(pi * t / T)) / 2

    ``t = step`` clamped to ``[0, T]``, ``T = total``. Non-decreasing; ``gamma(0) = gamma_min``,
    ``gamma(T/2)`` is the midpoint, ``gamma(T) = gamma_max``. The released code uses this form
    with ``gamma_min = 1, gamma_max = 200``, ``t`` = optimizer steps done and ``T`` = the
    client's total optimizer steps.
    """
    total = check_total(total)
    t = min(max(float(step), 0.0), float(total))
    return gamma_max - (gamma_max - gamma_min) * (1.0 + math.cos(math.pi * t / total)) / 2.0


def orthogonal_lambda(
    step: int, total: int, lam_start: float = 0.1, lam_end: float = 0.01
) -> float:
    """The released code's decaying weight of the orthogonality penalty on ``A``::

        lam_o(t) = lam_start - (lam_start - lam_end) * (1 - cos(pi * t / T)) / 2

    which equals the code's ``0.1 - (gamma(t) - 1) / (200 - 1) * (0.1 - 0.01)``: in general
    ``lam_o = lam_start - (gamma(t) - gamma_min) / (gamma_max - gamma_min) * (lam_start -
    lam_end)`` for *any* ``gamma_min < gamma_max`` of :func:`gamma_schedule`, since both follow
    the same cosine progress. ``lam_o(0) = lam_start = 0.1``, ``lam_o(T) = lam_end = 0.01``.
    """
    total = check_total(total)
    t = min(max(float(step), 0.0), float(total))
    return lam_start - (lam_start - lam_end) * (1.0 - math.cos(math.pi * t / total)) / 2.0
