"""The decision threshold calibrated on held-out samples (eval.threshold = calibrated), by
hand: q = p1 / (p0 + p1), class 1 when q > t."""

import numpy as np
import pytest
import torch

from fedmllm.eval.threshold import (
    LOG_ODDS,
    THRESHOLDS,
    calibrated_metrics,
    choose_threshold,
    correct_counts,
)

#: q = 0.3, 0.4, 0.55, 0.8 with labels 0, 1, 1, 1: at 0.5 three are right (0.4 is missed);
#: any t in [0.3, 0.4) gets all four
PROBS = np.array([[0.7, 0.3], [0.6, 0.4], [0.45, 0.55], [0.2, 0.8]])
LABELS = [0, 1, 1, 1]


def test_the_grid_holds_the_fixed_threshold_and_is_symmetric():
    assert len(THRESHOLDS) == 481 and THRESHOLDS[240] == 0.5 and LOG_ODDS[240] == 0.0
    np.testing.assert_allclose(THRESHOLDS + THRESHOLDS[::-1], 1.0, rtol=0, atol=1e-15)


def test_counts_and_the_chosen_threshold_by_hand():
    counts = correct_counts(LABELS, PROBS)
    assert counts[240] == 3  # t = 0.5: 0.4 answers 0
    assert counts[0] == 3 and counts[-1] == 1  # t ~ 0: all say 1; t ~ 1: all say 0
    inside = [i for i, t in enumerate(THRESHOLDS) if 0.3 <= t < 0.4]
    assert inside and all(counts[i] == 4 for i in inside) and max(counts) == 4
    t, correct = choose_threshold([counts])
    # the plateau [0.3, 0.4): its candidate nearest 0.5 in log-odds, the largest below 0.4
    assert correct == 4 and t == max(THRESHOLDS[inside])
    assert calibrated_metrics(LABELS, PROBS, t) == {"accuracy_calibrated": 1.0, "threshold": t}


def test_clients_counts_add_up_and_ties_go_to_the_fixed_threshold():
    # two clients: one gains below 0.4 (q 0.3 no, 0.4 yes), the other loses there (q 0.35
    # no, 0.45 no): 3 of 4 right for every t in [0.35, 1), 0.5 among them, so 0.5 wins
    low = correct_counts([0, 1], np.array([[0.7, 0.3], [0.6, 0.4]]))
    high = correct_counts([0, 0], np.array([[0.65, 0.35], [0.55, 0.45]]))
    t, correct = choose_threshold([low, high])
    assert correct == 3 and t == 0.5
    assert max(np.add(low, high)) == 3
    # a symmetric plateau around 0.5 chooses 0.5; equal |log-odds|: the smaller threshold
    flat = [0] * len(THRESHOLDS)
    flat[100] = flat[380] = 7
    assert choose_threshold([flat]) == (float(THRESHOLDS[100]), 7)
    with pytest.raises(ValueError, match="expected 481 counts"):
        choose_threshold([[1, 2]])


def test_the_fixed_threshold_is_the_argmax_decision_exactly():
    """At t = 0.5 the calibrated accuracy is the accuracy of argmax (a tie is class 0)."""
    rng = np.random.default_rng(0)
    p1 = rng.random(200).astype(np.float32)
    p1[:5] = 0.5  # ties
    probs = torch.softmax(torch.log(torch.tensor(np.stack([1 - p1, p1], 1))), -1).numpy()
    y = rng.integers(0, 2, 200).tolist()
    argmax_acc = float(np.mean(probs.argmax(-1) == np.array(y)))
    assert calibrated_metrics(y, probs, 0.5)["accuracy_calibrated"] == argmax_acc
    assert correct_counts(y, probs)[240] == round(argmax_acc * 200)


def test_the_test_metrics_gain_the_calibrated_pair_and_keep_the_fixed_ones():
    from fedmllm.data.types import Sample
    from fedmllm.eval.evaluate import metrics_from_predictions

    samples = [Sample(id=str(i), task="mc", label=y, options=("no", "yes"), text="t",
                      answer="(A) no") for i, y in enumerate(LABELS)]
    pred = {"probs": torch.tensor(PROBS, dtype=torch.float32)}
    fixed = metrics_from_predictions(samples, pred)
    calibrated = metrics_from_predictions(samples, pred, threshold=0.35)
    assert "accuracy_calibrated" not in fixed and fixed["accuracy"] == 0.75
    assert calibrated == {**fixed, "accuracy_calibrated": 1.0, "threshold": 0.35}
