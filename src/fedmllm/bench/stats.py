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
largest value instead, ``0.250 (0.200–0.300)``; the tests below keep reading the t interval
(:attr:`Interval.lo`, :attr:`Interval.hi`).

The tests of a paired comparison (:func:`paired`), each two-sided on the differences d:

- the **paired t test** (Student 1908; ``scipy.stats.ttest_rel``): ``t = mean(d) / (s_d /
  sqrt(n))`` on n - 1 degrees of freedom; ``p < 0.05`` exactly when the 95 % interval of the
  mean difference excludes 0;
- the **sign test**: exact binomial on the wins against the losses, ties dropped
  (``scipy.stats.binomtest(wins, wins + losses, 0.5)``);
- the **paired permutation test** (Fisher 1935): under "no difference" every d_s is as likely
  to carry either sign, so ``p = P(|sum e_s d_s| >= |sum d_s|)`` over the 2^n sign vectors e,
  enumerated exactly up to n = :data:`EXACT_UP_TO`, else drawn (a seeded Monte Carlo of
  :data:`RESAMPLES` vectors, ``p = (hits + 1) / (RESAMPLES + 1)``).

Which one decides (:attr:`Paired.test`): the t test, unless the comparison is *two-valued*
(:func:`two_valued`: every side's values fall into at most two groups, one side into two,
values at most :data:`GAP` apart being one group: a cell that either learns the task or
does not, 0.8 or 1.0 per seed), where the t test's normal model does not hold and the
permutation test decides. Several comparisons read as one statement (a claim over settings)
are corrected by Holm's step-down procedure (:func:`holm`; Holm 1979).
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass

import numpy as np

__all__ = ["ALPHA", "GAP", "MIN_SEEDS", "UNIT", "Interval", "Paired", "groups", "holm",
           "mean_ci", "paired", "permutation_p", "sign_p", "t_p", "two_valued"]

ALPHA = 0.05
"""The tests' level: 95 % intervals, ``p < 0.05``."""

GAP = 0.05
"""Values at most this far apart are one group (:func:`groups`): 5 points of accuracy."""

EXACT_UP_TO = 16
"""The permutation test enumerates every sign vector up to this many differences."""

RESAMPLES = 1 << 16
"""Sign vectors the permutation test draws above :data:`EXACT_UP_TO` differences."""

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


def _t_quantile(q: float, df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(q, df))


def mean_ci(values, bounds: tuple[float, float] = _ANY, level: float = 1 - ALPHA) -> Interval:
    """Mean and t interval at ``level`` (95 %) of ``values`` (``None`` and NaN are left out),
    shown within ``bounds`` (the metric's range, e.g. :data:`UNIT`)."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not xs:
        return Interval(math.nan, math.nan, 0, math.nan, bounds=bounds)
    if len(xs) == 1:
        return Interval(xs[0], math.nan, 1, math.nan, xs[0], xs[0], bounds)
    sd = statistics.stdev(xs)
    half = _t_quantile(1 - (1 - level) / 2, len(xs) - 1) * sd / math.sqrt(len(xs))
    return Interval(statistics.fmean(xs), half, len(xs), sd, min(xs), max(xs), bounds)


def t_p(d) -> float:
    """Two-sided p of the paired t test on the differences ``d`` (``scipy.stats.ttest_rel`` of
    the two sides): ``2 P(T_{n-1} > |mean| / (s / sqrt(n)))``; 0 where every difference is the
    same non-zero value, 1 where all are 0, NaN below two differences."""
    d = [float(x) for x in d]
    if len(d) < 2:
        return math.nan
    mean, sd = statistics.fmean(d), statistics.stdev(d)
    if sd == 0:
        return 1.0 if mean == 0 else 0.0
    from scipy.stats import t

    return float(2 * t.sf(abs(mean) / (sd / math.sqrt(len(d))), len(d) - 1))


def sign_p(wins: int, losses: int) -> float:
    """Two-sided exact sign test (ties dropped): ``min(1, 2 P(X <= min(wins, losses)))`` for
    X ~ Binomial(wins + losses, 1/2), ``scipy.stats.binomtest(wins, wins + losses)``'s p; 1
    without a win or a loss."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def permutation_p(d, seed: int = 0) -> float:
    """Two-sided paired permutation (sign-flip) test of the differences ``d``: the share of
    sign vectors e with ``|sum e_s d_s| >= |sum d_s|`` (a relative 1e-9 tolerance), all 2^n of
    them up to n = :data:`EXACT_UP_TO`, else :data:`RESAMPLES` drawn from a generator seeded
    with ``seed`` and ``(hits + 1) / (RESAMPLES + 1)``. NaN without a difference."""
    x = np.asarray([float(v) for v in d], dtype=np.float64)
    if x.size == 0:
        return math.nan
    observed = abs(x.sum())
    if x.size <= EXACT_UP_TO:
        codes = np.arange(1 << x.size)[:, None] >> np.arange(x.size)
        signs = 1 - 2 * (codes & 1)
    else:
        signs = np.random.default_rng(seed).choice((-1, 1), size=(RESAMPLES, x.size))
    hits = int((np.abs(signs @ x) >= observed * (1 - 1e-9)).sum())
    if x.size <= EXACT_UP_TO:
        return hits / len(signs)
    return (hits + 1) / (RESAMPLES + 1)


def groups(values, gap: float = GAP) -> int:
    """How many groups the values fall into: sorted, a new group starts wherever the next
    value is more than ``gap`` above the previous one."""
    xs = sorted(float(v) for v in values)
    return (len(xs) > 0) + sum(b - a > gap for a, b in itertools.pairwise(xs))


def two_valued(a, b, gap: float = GAP) -> bool:
    """Whether a comparison of the values ``a`` and ``b`` is two-valued: each side in at most
    two groups (:func:`groups`), at least one side in two (both sides in one group each is a
    steady difference, for which the t test is right)."""
    ga, gb = groups(a, gap), groups(b, gap)
    return max(ga, gb) == 2


def holm(ps) -> list[tuple[float, float]]:
    """Holm's step-down correction (Holm 1979) of the p-values ``ps`` (NaN left out of the m
    tests and given back as NaN): with p_(1) <= ... <= p_(m), the i-th smallest gets the
    adjusted ``max_{j <= i} min(1, (m - j + 1) p_(j))`` and the level ``alpha_i = ALPHA / (m -
    i + 1)`` it is tested at; a comparison is rejected when its adjusted p is below
    :data:`ALPHA`. Returns ``(adjusted p, alpha_i)`` per p, in the given order."""
    ps = [float(p) for p in ps]
    order = sorted((i for i, p in enumerate(ps) if not math.isnan(p)), key=lambda i: ps[i])
    out = [(math.nan, math.nan)] * len(ps)
    running, m = 0.0, len(order)
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        out[i] = (running, ALPHA / (m - rank))
    return out


@dataclass(frozen=True)
class Paired:
    """A paired comparison: the mean difference with its 95 % t interval, the wins, ties and
    losses, the three tests' p (see the module docstring) and which one decides."""

    diff: Interval
    wins: int
    ties: int
    losses: int
    t_p: float = math.nan
    sign_p: float = math.nan
    permutation_p: float = math.nan
    two_valued: bool = False
    values: tuple[float, ...] = ()
    """The differences, seed by seed (for an interval at another level: :meth:`at`)."""

    @property
    def test(self) -> str:
        """The test that decides: ``"permutation"`` for a two-valued comparison, else ``"t"``."""
        return "permutation" if self.two_valued else "t"

    @property
    def p(self) -> float:
        return self.permutation_p if self.two_valued else self.t_p

    def at(self, level: float) -> Interval:
        """The mean difference's t interval at ``level`` (e.g. a Holm level)."""
        return mean_ci(self.values, self.diff.bounds, level)

    def tests(self) -> str:
        """The p-values a table shows: the t test's; the permutation and the sign test's
        beside it when the comparison is two-valued (the permutation test then decides)."""
        if math.isnan(self.t_p):
            return "-"
        if not self.two_valued:
            return f"t {_p(self.t_p)}"
        return (f"permutation {_p(self.permutation_p)}; sign {_p(self.sign_p)}; "
                f"t {_p(self.t_p)}")

    def word(self, p: float | None = None) -> str:
        """'better' / 'worse' where ``p`` (default: :attr:`p`, uncorrected) is below
        :data:`ALPHA`, by the sign of the mean difference; 'too few seeds' under two."""
        p = self.p if p is None else p
        if self.diff.n < 2 or math.isnan(p):
            return "too few seeds"
        if p < ALPHA and self.diff.mean != 0:
            return "better" if self.diff.mean > 0 else "worse"
        return "no clear difference"

    @property
    def verdict(self) -> str:
        """:meth:`word` of the uncorrected p of the deciding test."""
        return self.word()


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def paired(a: dict, b: dict, tol: float = 1e-12, bounds: tuple[float, float] = _ANY) -> Paired:
    """``a`` against ``b`` over the keys (seeds) both have; values in ``bounds`` make
    differences in ``[lo - hi, hi - lo]`` (``[-1, 1]`` for :data:`UNIT`). Differences within
    ``tol`` of 0 are ties."""
    keys = [k for k in sorted(set(a) & set(b)) if a[k] is not None and b[k] is not None]
    d = [a[k] - b[k] for k in keys]
    wins, losses = sum(x > tol for x in d), sum(x < -tol for x in d)
    return Paired(mean_ci(d, (bounds[0] - bounds[1], bounds[1] - bounds[0])), wins,
                  len(d) - wins - losses, losses, t_p(d), sign_p(wins, losses),
                  permutation_p(d), two_valued([a[k] for k in keys], [b[k] for k in keys]),
                  tuple(d))
