"""fedmllm.bench.stats: the paired tests (t, sign, permutation) against scipy, Holm's
correction on a hand example, the two-valued rule, and which test a comparison reads."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from fedmllm.bench import stats
from fedmllm.bench.stats import (
    ALPHA,
    UNIT,
    groups,
    holm,
    mean_ci,
    paired,
    permutation_p,
    sign_p,
    t_p,
    two_valued,
)


def test_paired_t_p_is_scipys_ttest_rel():
    rng = np.random.default_rng(3)
    for n in (2, 3, 5, 12):
        a, b = rng.random(n), rng.random(n)
        assert t_p(a - b) == pytest.approx(scipy.stats.ttest_rel(a, b).pvalue, rel=1e-9)
    assert t_p([0.3, 0.3, 0.3]) == 0.0  # no spread, not zero: as sure as it gets
    assert t_p([0.0, 0.0]) == 1.0 and math.isnan(t_p([0.2]))
    # p < 0.05 exactly when the 95 % interval excludes 0
    d = [0.1, 0.25, 0.05, 0.3]
    assert (t_p(d) < ALPHA) == (mean_ci(d).lo > 0)


@pytest.mark.parametrize("wins, losses", [(5, 0), (7, 2), (3, 3), (0, 1), (10, 1), (2, 9)])
def test_sign_p_is_scipys_binomtest(wins, losses):
    assert sign_p(wins, losses) == pytest.approx(
        scipy.stats.binomtest(wins, wins + losses, 0.5).pvalue, rel=1e-12)


def test_sign_p_by_hand():
    assert sign_p(5, 0) == 2 / 32  # five wins of five: the best five seeds can give
    assert sign_p(0, 0) == 1.0


def test_permutation_p_is_scipys_exact_sign_flip_test():
    rng = np.random.default_rng(5)
    for n in (2, 3, 6, 10):
        d = rng.normal(0.05, 0.1, n)
        ref = scipy.stats.permutation_test((d,), np.mean, permutation_type="samples",
                                           n_resamples=np.inf, alternative="two-sided")
        assert permutation_p(d) == pytest.approx(ref.pvalue, rel=1e-12)


def test_permutation_p_by_hand_and_two_valued_values():
    # 0.2 in all five seeds: only the all-plus and all-minus vectors reach |sum| = 1.0
    assert permutation_p([0.2] * 5) == 2 / 32
    # 0.2, 0.2, 0 (a tie): 4 of 8 sign vectors reach |sum| >= 0.4
    assert permutation_p([0.2, 0.2, 0.0]) == 4 / 8
    assert permutation_p([0.2, -0.2]) == 1.0 and math.isnan(permutation_p([]))


def test_permutation_p_draws_seeded_vectors_above_the_exact_limit():
    d = np.random.default_rng(7).normal(0.1, 0.2, stats.EXACT_UP_TO + 4)
    p = permutation_p(d)
    assert p == permutation_p(d) and p != permutation_p(d, seed=1)  # seeded, Monte Carlo
    ref = scipy.stats.permutation_test((d,), np.mean, permutation_type="samples",
                                       n_resamples=50_000, alternative="two-sided", rng=0)
    assert p == pytest.approx(ref.pvalue, abs=0.01)
    # no drawn vector (seed 0) is all one sign: (0 + 1) / (B + 1), never 0
    assert permutation_p([0.5] * 20) == 1 / (stats.RESAMPLES + 1)


def test_holm_by_hand():
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> the
    # running maximum 0.06); levels 0.05/4, 0.05/3, 0.05/2, 0.05/1
    out = holm([0.01, 0.04, 0.03, 0.005])
    assert [a for a, _ in out] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [lvl for _, lvl in out] == pytest.approx([0.05 / 3, 0.05, 0.05 / 2, 0.05 / 4])
    # 0.04 alone would pass; after 0.03 failed at 0.025 it fails too (step-down stops)
    assert all(a >= ALPHA for a, _ in out[1:3])
    # NaN is no test: left out of m and given back as NaN
    out = holm([0.02, math.nan, 0.6])
    assert out[0] == (pytest.approx(0.04), pytest.approx(0.025)) and math.isnan(out[1][0])
    assert out[2] == (pytest.approx(0.6), pytest.approx(0.05))
    assert holm([0.4, 0.4]) == [(0.8, 0.025), (0.8, 0.05)]  # ties keep their order
    assert holm([0.9, 0.8]) == [(1.0, 0.05), (1.0, 0.025)]  # capped at 1


def test_groups_and_two_valued():
    assert groups([0.8, 1.0, 0.79, 1.0, 0.81]) == 2  # learned the joint rule or not
    assert groups([0.6, 0.64, 0.68, 0.72]) == 1  # steps of 0.04: one chain
    assert groups([0.5, 0.7, 0.9]) == 3 and groups([]) == 0
    assert two_valued([0.8, 1.0, 1.0], [0.8, 0.8, 0.81])  # one side in two groups
    assert not two_valued([0.8, 0.8, 0.81], [0.6, 0.61, 0.6])  # a steady difference
    assert not two_valued([0.5, 0.7, 0.9], [0.8, 1.0, 0.8])  # three groups: continuous


def test_a_two_valued_comparison_is_decided_by_the_permutation_test():
    """Five seeds, 1.0 or 0.8 against a steady 0.8: the t test says 'better' (t = 0.16 /
    0.04 = 4 on 4 df, p 0.016), the permutation test (which decides here) cannot go below
    2/2^4 with four non-zero differences."""
    a = {0: 1.0, 1: 1.0, 2: 0.8, 3: 1.0, 4: 1.0}
    b = {s: 0.8 for s in a}
    pr = paired(a, b, bounds=UNIT)
    assert pr.two_valued and pr.test == "permutation"
    assert pr.t_p < ALPHA  # the t test would call it
    assert pr.permutation_p == 4 / 32 == pr.p  # 0.2 x 4 and a tie: 4 of 32 sign vectors
    assert pr.sign_p == sign_p(4, 0) == 0.125
    assert (pr.wins, pr.ties, pr.losses) == (4, 1, 0)
    assert pr.verdict == "no clear difference"
    assert pr.tests() == "permutation 0.125; sign 0.125; t 0.016"
    steady = paired({0: 0.9, 1: 0.92, 2: 0.91}, {0: 0.6, 1: 0.61, 2: 0.6})
    assert not steady.two_valued and steady.test == "t" and steady.p == steady.t_p
    assert steady.verdict == "better" and steady.tests().startswith("t ")


def test_paired_interval_at_another_level():
    pr = paired({0: 0.9, 1: 0.8, 2: 0.85, 3: 0.95}, {0: 0.7, 1: 0.72, 2: 0.7, 3: 0.75})
    d = [0.2, 0.08, 0.15, 0.2]
    iv = pr.at(1 - 0.05 / 4)  # Holm's first level with four comparisons
    se = np.std(d, ddof=1) / 2
    assert iv.half == pytest.approx(scipy.stats.t.ppf(1 - 0.05 / 8, 3) * se, rel=1e-9)
    assert iv.mean == pytest.approx(pr.diff.mean) and iv.half > pr.diff.half
    assert mean_ci(d, level=0.95).half == pytest.approx(pr.diff.half)
