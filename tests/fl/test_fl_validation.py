"""Update validation, client sampling and round learning rates."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from fedmllm.fl import ClientUpdate, filter_updates, round_lr, sample_clients, validate_update

G = {"w": torch.zeros(2, 3), "b": torch.zeros(3)}


def _ok(**kw):
    return ClientUpdate({"w": torch.full((2, 3), 0.1), "b": torch.ones(3)}, 4, 0, **kw)


def test_valid_update_and_key_subset():
    assert validate_update(_ok(), G) == []
    assert validate_update(ClientUpdate({"b": torch.ones(3)}, 1, 1), G) == []
    assert validate_update(_ok(), G, max_norm=10.0) == []


@pytest.mark.parametrize(
    "update,fragment",
    [
        (ClientUpdate({"w": torch.zeros(2, 3), "x": torch.zeros(1)}, 1), "unexpected key 'x'"),
        (ClientUpdate({"w": torch.zeros(3, 2)}, 1), "'w' has shape (3, 2), expected (2, 3)"),
        (ClientUpdate({"b": torch.zeros(3, dtype=torch.float64)}, 1), "dtype torch.float64"),
        (ClientUpdate({"b": torch.tensor([0.0, math.nan, 1.0])}, 1), "'b' has non-finite"),
        (ClientUpdate({"b": torch.tensor([0.0, math.inf, 1.0])}, 1), "'b' has non-finite"),
        (ClientUpdate({"b": torch.zeros(3)}, 0), "num_examples must be a positive integer"),
        (ClientUpdate({"b": torch.zeros(3)}, 2.5), "num_examples must be a positive integer"),
        (ClientUpdate({"b": torch.zeros(3)}, 1, extras={"control_delta": {"z": torch.zeros(3)}}),
         "extras['control_delta']['z']: unexpected key"),
        (ClientUpdate({"b": torch.zeros(3)}, 1,
                      extras={"control_delta": {"b": torch.tensor([math.nan, 0, 0])}}),
         "non-finite"),
    ],
)
def test_invalid_updates(update, fragment):
    reasons = validate_update(update, G)
    assert any(fragment in r for r in reasons), reasons


def test_norm_limit():
    # ||delta|| = sqrt(6 * 0.01 + 3 * 1) = sqrt(3.06)
    reasons = validate_update(_ok(), G, max_norm=1.7)
    assert len(reasons) == 1 and "exceeds max_norm 1.7" in reasons[0]
    assert validate_update(_ok(), G, max_norm=1.75) == []


def test_filter_updates_and_skip_round():
    bad = ClientUpdate({"b": torch.tensor([math.nan, 0.0, 0.0])}, 1, 7)
    big = ClientUpdate({"b": torch.full((3,), 100.0)}, 1, 8)
    good = ClientUpdate({"b": torch.ones(3)}, 1, 9)
    accepted, rejected, skip = filter_updates([bad, good, big], G, max_norm=5.0, min_clients=1)
    assert accepted == [good] and not skip
    assert [cid for cid, _ in rejected] == [7, 8]
    assert "non-finite" in rejected[0][1] and "max_norm" in rejected[1][1]
    _, _, skip = filter_updates([bad, good, big], G, max_norm=5.0, min_clients=2)
    assert skip
    _, _, skip = filter_updates([], G, min_clients=1)
    assert skip


# ----------------------------------------------------------------------------- sampling


def test_sampling_is_deterministic_and_independent_of_global_rng():
    first = [sample_clients(10, 3, r, seed=42) for r in range(1, 21)]
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    random.random()
    np.random.rand()
    second = [sample_clients(10, 3, r, seed=42) for r in range(1, 21)]
    assert first == second
    for s in first:
        assert s == sorted(s) and len(set(s)) == 3 and all(0 <= c < 10 for c in s)
    assert len({tuple(s) for s in first}) > 5  # rounds differ
    # exactly numpy's draw without replacement from a generator seeded with (seed, round)
    for r, chosen in enumerate(first, start=1):
        rng = np.random.default_rng([42, r])
        assert chosen == sorted(int(c) for c in rng.choice(10, size=3, replace=False))
    assert first != [sample_clients(10, 3, r, seed=43) for r in range(1, 21)]  # seeds differ
    # every client is drawn eventually, roughly uniformly
    counts = np.bincount(np.concatenate([sample_clients(10, 3, r, 1) for r in range(1, 1001)]))
    assert counts.min() > 240 and counts.max() < 360


def test_sampling_all_and_errors():
    assert sample_clients(4, 4, 1, 0) == [0, 1, 2, 3]
    assert sample_clients(4, 10, 7, 3) == [0, 1, 2, 3]
    for args in [(0, 1, 1, 0), (4, 0, 1, 0), (4, 2, -1, 0), (4, 2, 1, -5)]:
        with pytest.raises(ValueError):
            sample_clients(*args)


# ----------------------------------------------------------------------------- lr schedule


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
@pytest.mark.parametrize("total,warmup", [(1, 0), (1, 1), (2, 1), (5, 0), (50, 0), (50, 1),
                                          (50, 5), (10, 10)])
def test_round_lr_never_exceeds_base(schedule, total, warmup):
    lrs = [round_lr(r, total, 2e-5, schedule, warmup, 0.1) for r in range(1, total + 1)]
    assert max(lrs) <= 2e-5 * (1 + 1e-12)
    assert min(lrs) > 0
    if warmup:
        assert lrs[warmup - 1] == pytest.approx(2e-5)  # warm-up reaches base at round W
        assert lrs[:warmup] == sorted(lrs[:warmup])
    elif schedule == "cosine" or total == 1:
        assert lrs[0] == pytest.approx(2e-5)  # no warm-up: the first round gets base_lr
    if schedule == "cosine" and total > max(warmup, 1):
        assert lrs[-1] == pytest.approx(2e-6)  # min_lr_ratio * base at the last round
        assert lrs[warmup:] == sorted(lrs[warmup:], reverse=True)


def test_round_lr_values_by_hand():
    # warm-up over 2 rounds then cosine from round 2 to round 6
    lrs = [round_lr(r, 6, 1.0, "cosine", warmup_rounds=2) for r in range(1, 7)]
    expected = [0.5, 1.0] + [(1 + math.cos(math.pi * k / 4)) / 2 for k in (1, 2, 3, 4)]
    assert lrs == pytest.approx(expected)
    assert round_lr(3, 6, 1.0, "constant", warmup_rounds=2) == 1.0
    # research setting R=50 (warm-up 0.5 round gave round 0 twice the base rate): here <= base
    assert round_lr(1, 50, 2e-5) == pytest.approx(2e-5)


def test_round_lr_errors():
    with pytest.raises(ValueError, match="unknown lr schedule 'linear'"):
        round_lr(1, 5, 1.0, "linear")
    with pytest.raises(ValueError, match="round must be"):
        round_lr(0, 5, 1.0)
    with pytest.raises(ValueError, match="round must be"):
        round_lr(6, 5, 1.0)
    with pytest.raises(ValueError, match="warmup_rounds"):
        round_lr(1, 5, 1.0, warmup_rounds=6)


# ----------------------------------------------------------------------------- local step sizes


def test_local_lr_values_by_hand():
    from fedmllm.fl import LOCAL_SCHEDULES, local_lr

    assert LOCAL_SCHEDULES == ("constant", "cosine")
    # 10 steps, warm-up ratio 0.2 -> W = 2: 0.5, 1.0, then the cosine over the 8 remaining steps
    got = [local_lr(k, 10, 2.0, "cosine", 0.2) for k in range(10)]
    want = [1.0, 2.0] + [2.0 * (1 + math.cos(math.pi * j / 8)) / 2 for j in range(8)]
    assert got == pytest.approx(want, rel=1e-15)
    assert got[2] == 2.0 and min(got) == pytest.approx(2.0 * (1 + math.cos(7 * math.pi / 8)) / 2)
    # constant: the warm-up, then base_lr
    assert [local_lr(k, 10, 2.0, "constant", 0.2) for k in range(4)] == [1.0, 2.0, 2.0, 2.0]
    assert [local_lr(k, 3, 0.1) for k in range(3)] == [0.1, 0.1, 0.1]
    # W = ceil(0.01 * 250) = 3: 1/3, 2/3, 1, then cosine from base_lr
    assert [local_lr(k, 250, 3.0, "cosine", 0.01) for k in range(4)] == pytest.approx(
        [1.0, 2.0, 3.0, 3.0])
    # W = ceil(0.01 * 20) = 1: the first step already uses base_lr (HF's would use 0)
    assert local_lr(0, 20, 1.0, "cosine", 0.01) == 1.0
    assert local_lr(1, 20, 1.0, "cosine", 0.01) == 1.0
    assert local_lr(19, 20, 1.0, "cosine", 0.01) == pytest.approx(
        (1 + math.cos(math.pi * 18 / 19)) / 2)
    # a single step, and warm-up over every step
    assert local_lr(0, 1, 0.5, "cosine") == 0.5
    assert [local_lr(k, 4, 1.0, "cosine", 1.0) for k in range(4)] == [0.25, 0.5, 0.75, 1.0]


def test_local_lr_is_hf_cosine_shifted_by_one_warmup_step():
    """After warm-up it is HF's get_cosine_schedule_with_warmup; during warm-up step k uses
    HF's rate of step k + 1 (HF's step 0 has rate 0)."""
    from transformers.optimization import get_cosine_schedule_with_warmup

    from fedmllm.fl import local_lr

    total, ratio = 37, 0.1
    warm = math.ceil(ratio * total)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    hf = get_cosine_schedule_with_warmup(opt, warm, total).lr_lambdas[0]
    for k in range(total):
        ref = hf(k + 1) if k < warm else hf(k)
        assert local_lr(k, total, 1.0, "cosine", ratio) == pytest.approx(ref, rel=1e-12, abs=0)
    assert hf(0) == 0.0 and local_lr(0, total, 1.0, "cosine", ratio) > 0


def test_local_lr_errors():
    from fedmllm.fl import local_lr

    for args, kwargs, fragment in [
        ((10, 10, 1.0), {}, "step must be an integer in \\[0, 10\\)"),
        ((-1, 10, 1.0), {}, "step must be"),
        ((0.5, 10, 1.0), {}, "step must be"),
        ((0, 0, 1.0), {}, "total_steps must be an integer >= 1"),
        ((0, 10, -1.0), {}, "base_lr must be"),
        ((0, 10, math.inf), {}, "base_lr must be"),
        ((0, 10, 1.0, "linear"), {}, "unknown local lr schedule 'linear'"),
        ((0, 10, 1.0), {"warmup_ratio": 1.5}, "warmup_ratio must lie in \\[0, 1\\]"),
        ((0, 10, 1.0), {"warmup_ratio": -0.1}, "warmup_ratio must lie"),
    ]:
        with pytest.raises(ValueError, match=fragment):
            local_lr(*args, **kwargs)
    assert local_lr(np.int64(2), np.int64(5), 1.0) == 1.0  # numpy integers are integers
