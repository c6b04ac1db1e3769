"""Classification metrics: honest ones, plus the research code's numbers labelled as such.

:func:`classification_metrics` takes the true class indices, the predicted indices (``None`` or
``-1`` for an *invalid* answer — one the strict parser could not read) and, when the model was
scored by option probabilities, the class-probability matrix. It returns a JSON-serialisable dict:

``accuracy``
    fraction of samples predicted correctly; invalid answers count as wrong.
``macro_f1``
    ``sklearn.metrics.f1_score(average="macro")`` over **all** ``num_classes`` labels. An invalid
    answer is a false negative for its true class and a false positive for no class. A class
    absent from both truth and predictions contributes F1 = 0 (``zero_division=0``).
``f1_per_class``
    the per-class F1 scores behind ``macro_f1``.
``invalid_rate`` / ``invalid``
    fraction / number of invalid answers; ``invalid_by_class``: their count per true class.
``auroc``
    area under the ROC curve from **probabilities** (``None`` when undefined: no probabilities,
    or fewer than two classes in ``y_true``). Binary: ``roc_auc_score(y_true, probs[:, 1])``.
    Multi-class: macro average of one-vs-rest AUROCs, ``roc_auc_score(y_true == k, probs[:, k])``,
    over the classes **present in** ``y_true`` (a class with no positive sample has no ROC curve;
    it is skipped, not counted as 0 or 1). With every class present this equals
    ``roc_auc_score(y_true, probs, multi_class="ovr", average="macro")``. Probabilities need not
    sum to one (each one-vs-rest AUROC only ranks one column).
``auc_hard``
    the research code's Hateful-Memes "AUC": ``roc_auc_score(y_true, y_pred)`` on **hard**
    predictions with invalid answers mapped to 2 (ranked above class 1), as ``meld_dump`` does.
    With no invalid answers it equals balanced accuracy, ``(TPR + TNR) / 2`` — it is *not* an
    AUROC. Defined for binary tasks only (the research code never computed it for multi-class);
    ``None`` otherwise or when ``y_true`` has a single class.
``macro_f1_research``
    the research code's CrisisMMD number: ``f1_score(y_true, y_pred, average="macro")`` with
    invalid answers mapped to class 2 and averaged over the labels seen in truth ∪ predictions.
``confusion``
    ``num_classes × num_classes`` counts, rows = true class, columns = predicted class; invalid
    answers are not in it (see ``invalid_by_class``).
``n``
    number of samples.

All fractions are in ``[0, 1]`` (not ×100). Float metrics are ``None`` when ``n == 0``.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score

from fedmllm.eval.parsing import RESEARCH_FAILURE_INDEX

__all__ = ["INVALID", "classification_metrics", "mean_over_clients", "multiclass_auroc", "spread"]

INVALID = -1
"""The integer code of an invalid prediction (``None`` is accepted too)."""


def _as_labels(y_true: Sequence[int], num_classes: int) -> np.ndarray:
    arr = np.asarray(list(y_true), dtype=np.int64).reshape(-1)
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(f"y_true must hold class indices in 0..{num_classes - 1}")
    return arr


def _as_predictions(y_pred: Sequence[int | None], num_classes: int) -> np.ndarray:
    arr = np.asarray([INVALID if p is None else int(p) for p in y_pred], dtype=np.int64)
    bad = (arr != INVALID) & ((arr < 0) | (arr >= num_classes))
    if bad.any():
        raise ValueError(
            f"y_pred must hold class indices in 0..{num_classes - 1}, or None/-1 for invalid; "
            f"got {int(arr[bad][0])}"
        )
    return arr


def multiclass_auroc(y_true: np.ndarray, probs: np.ndarray) -> float | None:
    """Macro one-vs-rest AUROC over the classes present in ``y_true``; ``None`` if < 2 present.

    ``probs`` has one column per class. A class absent from ``y_true`` has no positives, so its
    one-vs-rest AUROC is undefined and it is left out of the average.
    """
    present = np.unique(y_true)
    if present.size < 2:
        return None
    scores = [roc_auc_score(y_true == k, probs[:, k]) for k in present]
    return float(np.mean(scores))


def classification_metrics(
    y_true: Sequence[int],
    y_pred: Sequence[int | None],
    probs: Sequence[Sequence[float]] | np.ndarray | None = None,
    *,
    num_classes: int,
) -> dict[str, Any]:
    """Accuracy, macro-F1, invalid rate, AUROC, the research ``auc_hard`` and a confusion matrix.

    Args:
        y_true: true class index per sample, in ``0..num_classes-1``.
        y_pred: predicted class index per sample; ``None`` or ``-1`` marks an invalid answer.
        probs: optional ``(n, num_classes)`` class probabilities (or any scores where larger
            means more likely) from option-probability scoring.
        num_classes: number of options of the task.

    Returns:
        a JSON-serialisable dict; see the module docstring for every key.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    t = _as_labels(y_true, num_classes)
    p = _as_predictions(y_pred, num_classes)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} vs {p.size}")
    prob_arr = None if probs is None else _as_probs(probs, t.size, num_classes)
    out = _counts(t, p, num_classes)
    if not t.size:
        return out
    invalid_mask = p == INVALID
    per_class = f1_score(t, p, labels=list(range(num_classes)), average=None, zero_division=0.0)
    research_pred = np.where(invalid_mask, RESEARCH_FAILURE_INDEX, p)
    out.update(
        accuracy=float(np.mean(t == p)),
        macro_f1=float(np.mean(per_class)),
        f1_per_class=[float(f) for f in per_class],
        invalid_rate=float(invalid_mask.mean()),
        macro_f1_research=float(f1_score(t, research_pred, average="macro", zero_division=0.0)),
    )
    two_classes_present = np.unique(t).size >= 2
    if num_classes == 2 and two_classes_present:
        out["auc_hard"] = float(roc_auc_score(t, research_pred))
    if prob_arr is not None:
        if num_classes == 2:
            out["auroc"] = float(roc_auc_score(t, prob_arr[:, 1])) if two_classes_present else None
        else:
            out["auroc"] = multiclass_auroc(t, prob_arr)
    return out


def _as_probs(probs, n: int, num_classes: int) -> np.ndarray:
    prob_arr = np.asarray(probs, dtype=np.float64)
    if prob_arr.shape != (n, num_classes):
        raise ValueError(f"probs must have shape ({n}, {num_classes}), got {prob_arr.shape}")
    if not np.isfinite(prob_arr).all():
        raise ValueError("probs must be finite")
    return prob_arr


def _counts(t: np.ndarray, p: np.ndarray, num_classes: int) -> dict[str, Any]:
    """The metrics dict with its counts filled in (``n``, the invalid answers, the confusion
    matrix of the valid ones) and every fraction ``None``."""
    invalid_mask = p == INVALID
    valid = ~invalid_mask
    confusion = (
        confusion_matrix(t[valid], p[valid], labels=list(range(num_classes)))
        if valid.any()
        else np.zeros((num_classes, num_classes), dtype=np.int64)
    )
    return {
        "n": int(t.size),
        "accuracy": None,
        "macro_f1": None,
        "f1_per_class": None,
        "invalid_rate": None,
        "invalid": int(invalid_mask.sum()),
        "invalid_by_class": [int(c) for c in
                             np.bincount(t[invalid_mask], minlength=num_classes)],
        "auroc": None,
        "auc_hard": None,
        "macro_f1_research": None,
        "confusion": [[int(c) for c in row] for row in confusion],
    }


def spread(values: list[float]) -> dict[str, float]:
    """The spread of a metric over clients: ``{"mean", "std", "min", "max"}``, the std the
    population one (``sqrt(sum (v - mean)^2 / n)``: the clients are all there are, not a
    sample). ``values`` is not empty."""
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values),
            "min": min(values), "max": max(values)}


def mean_over_clients(per_client: dict[int, dict]) -> dict:
    """``per_client`` metrics with their mean, std, min and max accuracy (:func:`spread`, as
    flat keys ``accuracy``, ``accuracy_std``, ...), mean AUROC and mean
    ``accuracy_calibrated`` (where the clients have one)."""
    summary: dict = {"per_client": per_client}
    accs = [m["accuracy"] for m in per_client.values() if m.get("accuracy") is not None]
    if accs:
        acc = spread(accs)
        summary.update(accuracy=acc["mean"], accuracy_std=acc["std"], accuracy_min=acc["min"],
                       accuracy_max=acc["max"])
    aurocs = [m["auroc"] for m in per_client.values() if m.get("auroc") is not None]
    if aurocs:
        summary["auroc"] = statistics.fmean(aurocs)
    calibrated = [m["accuracy_calibrated"] for m in per_client.values()
                  if m.get("accuracy_calibrated") is not None]
    if calibrated:
        summary["accuracy_calibrated"] = statistics.fmean(calibrated)
    return summary
