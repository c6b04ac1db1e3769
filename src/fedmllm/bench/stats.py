"""Means with confidence intervals over seeds, and paired comparisons.

With n seeds and values x_1..x_n the interval is Student's t interval

    mean ± t_{0.975, n-1} · s / sqrt(n),     s the sample standard deviation,

which for n = 3 is mean ± 2.48 s: wide, as it should be with three draws. A paired comparison
of A and B takes the differences d_s = A_s - B_s over the seeds both have (the same seed gives
the same data, partition and test set) and the same interval on the mean of d; it is narrower
than comparing the two intervals whenever the seeds move A and B together.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

__all__ = ["Interval", "mean_ci", "paired"]


@dataclass(frozen=True)
class Interval:
    mean: float
    half: float
    """Half-width of the 95 % interval (``nan`` with one value)."""
    n: int
    sd: float

    @property
    def lo(self) -> float:
        return self.mean - self.half

    @property
    def hi(self) -> float:
        return self.mean + self.half

    def text(self, digits: int = 3) -> str:
        if self.n == 0:
            return "-"
        if self.n == 1 or math.isnan(self.half):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.half:.{digits}f}"


def _t975(df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def mean_ci(values) -> Interval:
    """Mean and 95 % t interval of ``values`` (``None`` and NaN are left out)."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not xs:
        return Interval(math.nan, math.nan, 0, math.nan)
    if len(xs) == 1:
        return Interval(xs[0], math.nan, 1, math.nan)
    sd = statistics.stdev(xs)
    return Interval(statistics.fmean(xs), _t975(len(xs) - 1) * sd / math.sqrt(len(xs)),
                    len(xs), sd)


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


def paired(a: dict, b: dict, tol: float = 1e-12) -> Paired:
    """``a`` against ``b`` over the keys (seeds) both have."""
    keys = sorted(set(a) & set(b))
    d = [a[k] - b[k] for k in keys if a[k] is not None and b[k] is not None]
    return Paired(mean_ci(d), sum(x > tol for x in d), sum(abs(x) <= tol for x in d),
                  sum(x < -tol for x in d))
