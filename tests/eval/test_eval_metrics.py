"""Classification metrics against scikit-learn on fixed arrays."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    roc_auc_score,
)

from fedmllm.eval.metrics import classification_metrics

Y_TRUE = [0, 1, 2, 2, 1, 0, 2, 1, 0, 2]
Y_PRED = [0, 2, 2, 1, 1, 0, 2, 0, 1, 2]
PROBS = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.2, 0.3, 0.5],
        [0.1, 0.2, 0.7],
        [0.2, 0.5, 0.3],
        [0.1, 0.8, 0.1],
        [0.6, 0.3, 0.1],
        [0.1, 0.1, 0.8],
        [0.5, 0.4, 0.1],
        [0.3, 0.4, 0.3],
        [0.2, 0.2, 0.6],
    ]
)


def test_multiclass_matches_sklearn() -> None:
    m = classification_metrics(Y_TRUE, Y_PRED, PROBS, num_classes=3)
    assert m["n"] == 10
    assert m["accuracy"] == pytest.approx(accuracy_score(Y_TRUE, Y_PRED))
    assert m["macro_f1"] == pytest.approx(f1_score(Y_TRUE, Y_PRED, average="macro"))
    assert m["auroc"] == pytest.approx(
        roc_auc_score(Y_TRUE, PROBS, multi_class="ovr", average="macro")
    )
    assert m["confusion"] == confusion_matrix(Y_TRUE, Y_PRED).tolist()
    assert m["invalid"] == 0 and m["invalid_rate"] == 0.0
    assert m["auc_hard"] is None  # research "AUC" exists for binary tasks only
    json.dumps(m)  # plain Python values only
    assert all(isinstance(v, float) for v in (m["accuracy"], m["macro_f1"], m["auroc"]))


def test_auroc_from_probabilities_differs_from_hard_auc() -> None:
    # The model ranks every positive above every negative but never crosses 0.5: a perfect
    # AUROC, while the research code's hard-label "AUC" sees only class-0 predictions.
    y_true = [0, 0, 1, 1]
    p1 = np.array([0.10, 0.20, 0.30, 0.40])
    probs = np.stack([1 - p1, p1], axis=1)
    y_pred = probs.argmax(axis=1).tolist()
    m = classification_metrics(y_true, y_pred, probs, num_classes=2)
    assert m["auroc"] == pytest.approx(1.0)
    assert m["auc_hard"] == pytest.approx(0.5)
    assert m["accuracy"] == pytest.approx(0.5)


def test_auc_hard_is_balanced_accuracy_for_binary() -> None:
    y_true = [0, 0, 0, 1, 1, 1, 1, 0, 1, 1]
    y_pred = [0, 1, 0, 1, 0, 1, 1, 0, 1, 0]
    m = classification_metrics(y_true, y_pred, num_classes=2)
    assert m["auc_hard"] == pytest.approx(roc_auc_score(y_true, y_pred))
    assert m["auc_hard"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert m["auroc"] is None  # no probabilities, no AUROC


def test_invalid_predictions() -> None:
    y_true = [0, 1, 1, 0, 1, 0]
    y_pred = [0, None, 1, -1, 1, 1]
    m = classification_metrics(y_true, y_pred, num_classes=2)
    # invalid answers are wrong, for accuracy and F1 alike
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["invalid"] == 2
    assert m["invalid_rate"] == pytest.approx(2 / 6)
    assert m["invalid_by_class"] == [1, 1]
    mapped = [0, -1, 1, -1, 1, 1]
    assert m["macro_f1"] == pytest.approx(
        f1_score(y_true, mapped, labels=[0, 1], average="macro", zero_division=0)
    )
    # per class by hand: class 0 tp=1 fp=0 fn=2 -> 2/4; class 1 tp=2 fp=1 fn=1 -> 4/6
    assert m["f1_per_class"] == pytest.approx([0.5, 4 / 6])
    # the confusion matrix holds the valid answers only
    assert m["confusion"] == [[1, 1], [0, 2]]
    # the research numbers map an invalid answer to 2
    research = [0, 2, 1, 2, 1, 1]
    assert m["auc_hard"] == pytest.approx(roc_auc_score(y_true, research))
    assert m["macro_f1_research"] == pytest.approx(f1_score(y_true, research, average="macro"))


def test_all_invalid() -> None:
    m = classification_metrics([0, 1], [None, None], num_classes=2)
    assert m["accuracy"] == 0.0 and m["macro_f1"] == 0.0 and m["invalid_rate"] == 1.0
    assert m["confusion"] == [[0, 0], [0, 0]]


def test_macro_f1_counts_every_class() -> None:
    # class 3 never occurs and is never predicted: it still counts (F1 = 0), unlike sklearn's
    # default label set (which the research code used).
    y_true = [0, 1, 2, 0]
    y_pred = [0, 1, 2, 0]
    m = classification_metrics(y_true, y_pred, num_classes=4)
    assert m["macro_f1"] == pytest.approx(0.75)
    assert m["macro_f1_research"] == pytest.approx(1.0)
    assert len(m["confusion"]) == 4 and all(len(r) == 4 for r in m["confusion"])


def test_multiclass_auroc_skips_absent_classes() -> None:
    y_true = np.array([0, 0, 1, 1, 0, 1])
    probs = np.array(
        [
            [0.6, 0.3, 0.1],
            [0.5, 0.2, 0.3],
            [0.2, 0.7, 0.1],
            [0.3, 0.4, 0.3],
            [0.4, 0.5, 0.1],
            [0.1, 0.6, 0.3],
        ]
    )
    m = classification_metrics(y_true, probs.argmax(1), probs, num_classes=3)
    expected = np.mean([roc_auc_score(y_true == k, probs[:, k]) for k in (0, 1)])
    assert m["auroc"] == pytest.approx(expected)


def test_undefined_auroc() -> None:
    probs = [[0.8, 0.2], [0.4, 0.6]]
    m = classification_metrics([1, 1], [0, 1], probs, num_classes=2)
    assert m["auroc"] is None and m["auc_hard"] is None
    m = classification_metrics([2, 2], [2, 1], [[0.1, 0.1, 0.8]] * 2, num_classes=3)
    assert m["auroc"] is None


def test_empty_and_bad_input() -> None:
    m = classification_metrics([], [], num_classes=2)
    assert m["n"] == 0 and m["accuracy"] is None and m["confusion"] == [[0, 0], [0, 0]]
    with pytest.raises(ValueError):
        classification_metrics([0, 1], [0], num_classes=2)
    with pytest.raises(ValueError):
        classification_metrics([0, 1], [0, 2], num_classes=2)
    with pytest.raises(ValueError):
        classification_metrics([0, 3], [0, 1], num_classes=2)
    with pytest.raises(ValueError):
        classification_metrics([0, 1], [0, 1], [[1.0, 0.0]], num_classes=2)
