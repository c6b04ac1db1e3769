"""Means with confidence intervals over seeds, and paired comparisons.

With n seeds and values x_1..x_n the interval is Student's t interval

    mean ± t_{0.975, n-1} · s / sqrt(n),     s the sample standard deviation,

which for n = 3 is mean ± 2.48 s: wide, as it should be with three draws. A paired comparison
of A and B takes the differences d_s = A_s - B_s over the seeds both have (the same seed gives
the same data, partition and test set) and the same interval on the mean of d; it is narrower
than comparing the two intervals whenever the seeds move A and B together.

What a report shows (:meth:`Interval.shown`, :meth:`Interval.text`) is bounded by the metric's
range: accuracy, macro-F1 and AUROC lie in [0, 1] (their paired differences in [-1, 1]), so the
shown interval is clipped to it. With fewer than :data:`MIN_SEEDS` seeds the t interval says
little (two seeds: t = 12.7, ``0.250 ± 3.177``), so the shown bounds are the smallest and the
largest value instead, ``0.250 (0.200–0.300)``. The verdicts (:attr:`Paired.verdict`) and the
claims keep reading the t interval (:attr:`Interval.lo`, :attr:`Interval.hi`).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

__all__ = ["MIN_SEEDS", "UNIT", "Interval", "mean_ci", "paired"]

MIN_SEEDS = 3
"""Fewer seeds than this show the min–max over the seeds instead of a t interval."""

UNIT = (0.0, 1.0)
"""The range of every metric a grid reports (accuracy, macro-F1, AUROC, hard AUC)."""

_ANY = (-math.inf, math.inf)


@dataclass(frozen=True)
class Interval:
    mean: float
    half: float
    """Half-width of the 95 % interval (``nan`` with one value)."""
    n: int
    sd: float
    least: float = math.nan
    most: float = math.nan
    """The smallest and the largest value."""
    bounds: tuple[float, float] = _ANY
    """The range the values can take (the metric's): what is shown is clipped to it."""

    @property
    def lo(self) -> float:
        return self.mean - self.half

    @property
    def hi(self) -> float:
        return self.mean + self.half

    @property
    def spread(self) -> bool:
        """Whether it is shown as the min–max over the values (2 <= n < MIN_SEEDS)."""
        return 2 <= self.n < MIN_SEEDS

    def shown(self) -> tuple[float, float]:
        """The bounds a table or an error bar shows: the min and max with fewer than
        :data:`MIN_SEEDS` values, else the t interval clipped to :attr:`bounds`; the mean
        twice where there is no interval (one value)."""
        if self.spread:
            return self.least, self.most
        if self.n < 2 or math.isnan(self.half):
            return self.mean, self.mean
        return max(self.lo, self.bounds[0]), min(self.hi, self.bounds[1])

    def text(self, digits: int = 3) -> str:
        """``mean ± half`` (a t interval inside the range), ``mean [lo, hi]`` (a t interval
        clipped to the range), ``mean (min–max)`` (fewer than :data:`MIN_SEEDS` values; ``min to
        max`` where min < 0, ``mean (every seed)`` where they are equal)."""
        if self.n == 0:
            return "-"
        f = f"{{:.{digits}f}}".format
        lo, hi = self.shown()
        if self.spread:
            if lo == hi:
                return f"{f(self.mean)} (every seed)"
            return f"{f(self.mean)} ({f(lo)}{' to ' if lo < 0 else '–'}{f(hi)})"
        if self.n == 1 or math.isnan(self.half):
            return f(self.mean)
        if (lo, hi) == (self.lo, self.hi):
            return f"{f(self.mean)} ± {f(self.half)}"
        return f"{f(self.mean)} [{f(lo)}, {f(hi)}]"


def _t975(df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def mean_ci(values, bounds: tuple[float, float] = _ANY) -> Interval:
    """Mean and 95 % t interval of ``values`` (``None`` and NaN are left out), shown within
    ``bounds`` (the metric's range, e.g. :data:`UNIT`)."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not xs:
        return Interval(math.nan, math.nan, 0, math.nan, bounds=bounds)
    if len(xs) == 1:
        return Interval(xs[0], math.nan, 1, math.nan, xs[0], xs[0], bounds)
    sd = statistics.stdev(xs)
    return Interval(statistics.fmean(xs), _t975(len(xs) - 1) * sd / math.sqrt(len(xs)),
                    len(xs), sd, min(xs), max(xs), bounds)


@dataclass(frozen=True)
class Paired:
    diff: Interval
    wins: int
    ties: int
    losses: int

    @property
    def verdict(self) -> str:
        d = self.diff
        if d.n < 2:
            return "too few seeds"
        if d.lo > 0:
            return "better"
        if d.hi < 0:
            return "worse"
        return "no clear difference"


def paired(a: dict, b: dict, tol: float = 1e-12, bounds: tuple[float, float] = _ANY) -> Paired:
    """``a`` against ``b`` over the keys (seeds) both have; values in ``bounds`` make
    differences in ``[lo - hi, hi - lo]`` (``[-1, 1]`` for :data:`UNIT`)."""
    keys = sorted(set(a) & set(b))
    d = [a[k] - b[k] for k in keys if a[k] is not None and b[k] is not None]
    return Paired(mean_ci(d, (bounds[0] - bounds[1], bounds[1] - bounds[0])),
                  sum(x > tol for x in d), sum(abs(x) <= tol for x in d),
                  sum(x < -tol for x in d))
