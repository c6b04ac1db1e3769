"""Partitioners: Dirichlet label skew, IID and equal splits."""

from __future__ import annotations

import numpy as np
import pytest

from fedmllm.data.partition import (
    dirichlet_partition,
    equal_split,
    iid_partition,
    partition_counts,
)


def _is_partition(parts, n):
    flat = sorted(i for p in parts for i in p)
    return flat == list(range(n))


def _labels(n, k, seed=0):
    return list(np.random.default_rng(seed).integers(k, size=n))


@pytest.mark.parametrize("alpha", [0.05, 0.5, 5.0])
@pytest.mark.parametrize("num_labels", [2, 8])
def test_dirichlet_is_a_partition_with_minimum(alpha, num_labels):
    labels = _labels(500, num_labels)
    parts = dirichlet_partition(labels, 10, alpha, seed=3, min_per_client=5)
    assert _is_partition(parts, 500)
    assert min(len(p) for p in parts) >= 5
    assert parts == dirichlet_partition(labels, 10, alpha, seed=3, min_per_client=5)
    assert parts != dirichlet_partition(labels, 10, alpha, seed=4, min_per_client=5)


def test_dirichlet_skew_decreases_with_alpha():
    labels = _labels(4000, 4, seed=1)

    def skew(alpha):
        vals = []
        for seed in range(5):
            c = partition_counts(dirichlet_partition(labels, 10, alpha, seed), labels)
            frac = c / c.sum(axis=1, keepdims=True)
            vals.append(np.abs(frac - 0.25).sum(axis=1).mean())
        return float(np.mean(vals))

    s01, s1, s100 = skew(0.1), skew(1.0), skew(100.0)
    assert s01 > s1 > s100
    assert s100 < 0.1  # nearly IID
    assert s01 > 0.8  # clients dominated by few labels


def test_dirichlet_label_share_follows_proportions():
    """Per label, the expected share of each client is 1/K (symmetric Dirichlet)."""
    labels = [0] * 1000 + [1] * 1000
    shares = np.zeros(5)
    for seed in range(40):
        c = partition_counts(dirichlet_partition(labels, 5, 1.0, seed), labels)
        shares += c[:, 0] / 1000
    shares /= 40
    assert np.allclose(shares, 0.2, atol=0.06)


def test_dirichlet_few_samples_per_label_terminates():
    # a label with fewer samples than clients (the research code spins forever here)
    labels = [0] * 3 + [1] * 40 + [2] * 1
    parts = dirichlet_partition(labels, 10, 0.1, seed=0, min_per_client=2)
    assert _is_partition(parts, 44)
    assert min(len(p) for p in parts) >= 2
    # exactly enough samples: every client gets exactly the minimum
    parts = dirichlet_partition([0] * 20, 10, 0.1, seed=0, min_per_client=2)
    assert sorted(len(p) for p in parts) == [2] * 10


def test_dirichlet_impossible_minimum_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot give each of 10 clients at least 3"):
        dirichlet_partition([0, 1] * 14, 10, 0.5, seed=0, min_per_client=3)
    with pytest.raises(ValueError, match="at least 1"):
        dirichlet_partition([0] * 4, 5, 0.5, seed=0, min_per_client=0)
    with pytest.raises(ValueError, match="alpha"):
        dirichlet_partition([0] * 40, 5, 0.0, seed=0)


def test_all_labels_treated_alike():
    """Relabelling the classes permutes nothing but names: the same samples go together."""
    labels = _labels(300, 3, seed=2)
    relabel = {0: 10, 1: 11, 2: 12}  # same sorted order
    a = dirichlet_partition(labels, 6, 0.3, seed=1, min_per_client=4)
    b = dirichlet_partition([relabel[x] for x in labels], 6, 0.3, seed=1, min_per_client=4)
    assert a == b
    # the minimum is met with every label available for donation, not only the first one
    counts = partition_counts(a, labels)
    assert (counts.sum(axis=1) >= 4).all()


def test_independent_of_listing_order():
    rng = np.random.default_rng(0)
    ids = [f"s{i:04d}" for i in range(200)]
    labels = {i: int(rng.integers(3)) for i in ids}
    perm = list(rng.permutation(ids))

    def assign(order, fn):
        parts = fn(order)
        return sorted(sorted(order[i] for i in p) for p in parts)

    for fn in (
        lambda o: dirichlet_partition([labels[i] for i in o], 5, 0.5, seed=9, keys=o),
        lambda o: iid_partition(len(o), 5, seed=9, keys=o),
        lambda o: equal_split(len(o), 5, seed=9, keys=o),
    ):
        assert assign(ids, fn) == assign(perm, fn)


def test_iid_and_equal_split():
    parts = iid_partition(103, 10, seed=0)
    assert _is_partition(parts, 103)
    assert sorted(len(p) for p in parts) == [10] * 7 + [11] * 3
    parts = iid_partition(103, 10, seed=0, equal_sizes=False, min_per_client=3)
    assert _is_partition(parts, 103) and min(len(p) for p in parts) >= 3
    assert iid_partition(50, 5, seed=1) == iid_partition(50, 5, seed=1)
    with pytest.raises(ValueError, match="cannot give"):
        iid_partition(5, 10, seed=0)
    parts = equal_split(7, 3, seed=0)
    assert _is_partition(parts, 7) and sorted(map(len, parts)) == [2, 2, 3]
    assert sorted(map(len, equal_split(2, 3, seed=0))) == [0, 1, 1]
    assert equal_split(5, 0, seed=0) == []
