"""A binary decision threshold calibrated on the clients' held-out samples
(``eval.threshold = calibrated``).

The fixed decision answers class 1 when its option probability is the larger one. Scored by
option probabilities, a binary answer has the score ``q = p1 / (p0 + p1)`` and the decision
``q > t``; the fixed decision is ``t = 0.5`` (``q > 0.5`` exactly when ``p1 > p0``; a tie is
class 0, as ``argmax``). A model can rank the samples well (high AUROC) and still put them on
the wrong side of 0.5; a threshold chosen on held-out samples reads that ranking.

Calibration is federated: each client counts, for every candidate ``t`` of :data:`THRESHOLDS`,
how many of its held-out samples ``q > t`` answers correctly (:func:`correct_counts`) and
sends those counts, never a sample or a score; the server adds them up and takes the ``t``
with the most correct answers (:func:`choose_threshold`), which it applies to the test set
(:func:`calibrated_metrics`). Ties (a plateau of thresholds with the same count) go to the
candidate nearest the fixed 0.5 in log-odds, then to the smaller one, so a threshold that does
no better than 0.5 on the held-out samples is 0.5.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["THRESHOLDS", "calibrated_metrics", "choose_threshold", "correct_counts",
           "yes_score"]

#: Log-odds of the candidate thresholds: -12, -11.95, ..., 12 (481 values, 0 among them).
LOG_ODDS = np.arange(-240, 241, dtype=np.float64) / 20.0

#: The candidate thresholds on ``q``: ``sigmoid(LOG_ODDS)``, from 6.1e-6 to 1 - 6.1e-6, dense
#: where the decision is uncertain, and exactly 0.5 (the fixed decision) in the middle.
THRESHOLDS = 1.0 / (1.0 + np.exp(-LOG_ODDS))


def yes_score(probs) -> np.ndarray:
    """``q = p1 / (p0 + p1)`` per row of an ``(n, 2)`` option-probability matrix, float64."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"a binary decision needs (n, 2) option probabilities, got {p.shape}")
    return p[:, 1] / (p[:, 0] + p[:, 1])


def correct_counts(y_true: Sequence[int], probs) -> list[int]:
    """For every candidate ``t`` of :data:`THRESHOLDS`, how many samples ``q > t`` answers
    correctly (``y_true`` in {0, 1})."""
    q = yes_score(probs)
    t = np.asarray(list(y_true), dtype=np.int64)
    says_yes = q[None, :] > THRESHOLDS[:, None]
    return [int(c) for c in (says_yes == (t[None, :] == 1)).sum(axis=1)]


def choose_threshold(counts: Iterable[Sequence[int]]) -> tuple[float, int]:
    """``(t, correct)``: the candidate with the most correct held-out answers summed over the
    clients' ``counts`` (each one list per :data:`THRESHOLDS`), ties to the candidate nearest
    0.5 in log-odds, then to the smaller one."""
    total = np.zeros(len(THRESHOLDS), dtype=np.int64)
    for c in counts:
        if len(c) != len(THRESHOLDS):
            raise ValueError(f"expected {len(THRESHOLDS)} counts, got {len(c)}")
        total += np.asarray(c, dtype=np.int64)
    best = np.flatnonzero(total == total.max())
    i = min(best, key=lambda j: (abs(LOG_ODDS[j]), LOG_ODDS[j]))
    return float(THRESHOLDS[i]), int(total[i])


def calibrated_metrics(y_true: Sequence[int], probs, threshold: float) -> dict:
    """``accuracy_calibrated`` (the fraction of samples ``q > threshold`` answers correctly)
    and ``threshold``; ``accuracy_calibrated`` is ``None`` without samples."""
    t = np.asarray(list(y_true), dtype=np.int64)
    if not t.size:
        return {"accuracy_calibrated": None, "threshold": threshold}
    says_yes = yes_score(probs) > threshold
    return {"accuracy_calibrated": float(np.mean(says_yes == (t == 1))),
            "threshold": threshold}
