"""Client partitions: Dirichlet label skew, IID and equal random splits.

Every function returns ``list[list[int]]`` -- per client, indices into the caller's sample
list -- and draws all randomness from a local ``numpy.random.Generator`` built from ``seed``
(:func:`fedmllm.seeding.numpy_rng`).
Passing ``keys`` (e.g. the sample ids) makes the result independent of the order in which the
samples were listed: the samples are first put in canonical (sorted-key) order, so the same set
of samples always gets the same assignment, whatever file or directory order produced it.

Dirichlet label skew (Hsu et al. 2019, arXiv 1909.06335, as in FedMLLM, arXiv 2411.14717, with
the FedMLLM code's bugs fixed)::

    for each label l (in sorted label order):  p_l ~ Dir(alpha * 1_K)
    n_{l,k} = largest-remainder rounding of p_l * n_l            (sums exactly to n_l)
    while some client k has sum_l n_{l,k} < m:                   (m = max(1, min_per_client))
        move one sample to k from the client with the most samples (> m), taking the label
        with the largest p_{l,k} that donor still holds

Each move lowers the total deficit by one, so the fix-up ends after at most ``K*m`` moves; it
is possible exactly when ``n >= K*m`` (else :class:`ValueError`). All labels are treated
alike. Within a label the samples are shuffled before being cut into the clients' shares, and
each client's list is shuffled at the end.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from ..seeding import numpy_rng

__all__ = ["PARTITIONS", "dirichlet_partition", "equal_split", "iid_partition",
           "partition_counts"]

PARTITIONS = ("dirichlet", "iid")
"""The label-skew partitions of ``data.partition``: Dirichlet(alpha), or IID."""


def _canonical_order(n: int, keys: Sequence[Hashable] | None) -> np.ndarray:
    if keys is None:
        return np.arange(n)
    if len(keys) != n:
        raise ValueError(f"keys has {len(keys)} entries for {n} samples")
    return np.array(sorted(range(n), key=lambda i: (str(keys[i]), i)), dtype=np.int64)


def _check(n: int, num_clients: int, min_per_client: int) -> int:
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    m = max(1, int(min_per_client))
    if n < num_clients * m:
        raise ValueError(
            f"cannot give each of {num_clients} clients at least {m} sample(s): "
            f"only {n} samples (lower num_clients or min_per_client)"
        )
    return m


def _largest_remainder(p: np.ndarray, n: int) -> np.ndarray:
    """Integers >= 0 summing to ``n``, closest to ``p * n`` (ties to the lower index)."""
    raw = p * n
    base = np.floor(raw).astype(np.int64)
    rest = n - int(base.sum())
    if rest > 0:
        order = np.argsort(-(raw - base), kind="stable")
        base[order[:rest]] += 1
    return base


def dirichlet_partition(
    labels: Sequence[int],
    num_clients: int,
    alpha: float,
    seed: int,
    min_per_client: int = 1,
    keys: Sequence[Hashable] | None = None,
) -> list[list[int]]:
    """Label-skewed split of ``labels`` over ``num_clients`` clients (see the module docstring).

    Small ``alpha`` (0.1-0.5) gives strongly skewed clients, large ``alpha`` (5-100) nearly IID.
    Raises :class:`ValueError` when ``len(labels) < num_clients * max(1, min_per_client)`` or
    ``alpha <= 0``.
    """
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    labels = list(labels)
    n = len(labels)
    m = _check(n, num_clients, min_per_client)
    rng = numpy_rng(int(seed), 1)
    order = _canonical_order(n, keys)
    uniq = sorted(set(labels))
    K = num_clients
    P = rng.dirichlet(np.full(K, float(alpha)), size=len(uniq))  # (L, K)
    groups = []
    counts = np.zeros((len(uniq), K), dtype=np.int64)
    for li, lab in enumerate(uniq):
        idx = order[[labels[i] == lab for i in order]]
        idx = idx[rng.permutation(len(idx))]
        groups.append(idx)
        counts[li] = _largest_remainder(P[li], len(idx))
    # Minimum fix-up: bounded (each move reduces the total deficit by one).
    for _ in range(K * m + 1):
        totals = counts.sum(axis=0)
        short = np.flatnonzero(totals < m)
        if short.size == 0:
            break
        k = int(short[0])
        donors_ok = totals > m
        held = (counts > 0) & donors_ok[None, :]  # (L, K): label l available at donor d
        cand_labels = np.flatnonzero(held.any(axis=1))
        lab = int(cand_labels[np.argmax(P[cand_labels, k])])
        donors = np.flatnonzero(held[lab])
        d = int(donors[np.argmax(totals[donors])])
        counts[lab, d] -= 1
        counts[lab, k] += 1
    else:  # pragma: no cover - impossible by the counting argument above
        raise RuntimeError("dirichlet_partition fix-up did not converge")
    clients: list[list[int]] = [[] for _ in range(K)]
    for li, idx in enumerate(groups):
        cuts = np.cumsum(counts[li])[:-1]
        for k, part in enumerate(np.split(idx, cuts)):
            clients[k].extend(int(i) for i in part)
    return [[c[i] for i in rng.permutation(len(c))] for c in clients]


def iid_partition(
    n: int,
    num_clients: int,
    seed: int,
    min_per_client: int = 1,
    keys: Sequence[Hashable] | None = None,
    equal_sizes: bool = True,
) -> list[list[int]]:
    """IID split of ``n`` samples.

    ``equal_sizes=True`` (default): shuffle and cut into ``num_clients`` parts whose sizes
    differ by at most one. ``False``: every sample goes to a uniformly random client
    (multinomial sizes), then the smallest clients are topped up to ``min_per_client`` from
    the largest.
    """
    m = _check(n, num_clients, min_per_client)
    rng = numpy_rng(int(seed), 2)
    order = _canonical_order(n, keys)[rng.permutation(n)]
    if equal_sizes:
        return [[int(i) for i in part] for part in np.array_split(order, num_clients)]
    owner = rng.integers(num_clients, size=n)
    for _ in range(num_clients * m + 1):
        sizes = np.bincount(owner, minlength=num_clients)
        short = np.flatnonzero(sizes < m)
        if short.size == 0:
            break
        donor = int(np.argmax(sizes))
        j = int(np.flatnonzero(owner == donor)[-1])
        owner[j] = int(short[0])
    return [[int(i) for i in order[owner == k]] for k in range(num_clients)]


def equal_split(n: int, num_parts: int, seed: int, keys: Sequence[Hashable] | None = None):
    """Shuffle ``n`` items and cut them into ``num_parts`` near-equal parts (sizes differ by at
    most one; the FedMLLM code gives the whole remainder to the last part). Parts may be empty
    when ``n < num_parts``; ``num_parts == 0`` gives ``[]``."""
    if num_parts < 0:
        raise ValueError(f"num_parts must be >= 0, got {num_parts}")
    if num_parts == 0:
        return []
    rng = numpy_rng(int(seed), 3)
    order = _canonical_order(n, keys)[rng.permutation(n)]
    return [[int(i) for i in part] for part in np.array_split(order, num_parts)]


def partition_counts(parts: list[list[int]], labels: Sequence[int]) -> np.ndarray:
    """``(num_clients, num_labels)`` count matrix over the sorted distinct labels."""
    uniq = sorted(set(labels))
    pos = {lab: j for j, lab in enumerate(uniq)}
    out = np.zeros((len(parts), len(uniq)), dtype=np.int64)
    for k, part in enumerate(parts):
        for i in part:
            out[k, pos[labels[i]]] += 1
    return out
