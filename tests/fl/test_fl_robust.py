"""The robust rules (coordinate-wise median, trimmed mean) never degenerate into the mean:
a key fewer than ``min_updates`` clients returned keeps its global value."""

from __future__ import annotations

import pytest
import torch

from fedmllm.fl import ClientUpdate, make_strategy

F64 = torch.float64


def _ups(values_per_client, keys=("w",)):
    return [
        ClientUpdate({k: torch.tensor(v, dtype=F64) for k in keys}, 10 * (i + 1), i)
        for i, v in enumerate(values_per_client)
    ]


def test_trimmed_mean_drops_the_outlier_with_five_clients():
    x = {"w": torch.zeros(1, dtype=F64)}
    ups = _ups([[0.1], [0.2], [0.15], [1000.0], [0.12]])
    new = make_strategy("trimmed_mean", beta=0.2).aggregate(x, ups, 1)
    # floor(0.2 * 5) = 1 cut per side: mean of 0.12, 0.15, 0.2
    torch.testing.assert_close(new["w"], torch.tensor([(0.12 + 0.15 + 0.2) / 3], dtype=F64),
                               rtol=1e-15, atol=0)


def test_trimmed_mean_with_too_few_clients_keeps_the_global_value():
    x = {"w": torch.tensor([5.0], dtype=F64), "b": torch.tensor([-1.0], dtype=F64)}
    strategy = make_strategy("trimmed_mean", beta=0.2)  # constructing it is fine
    assert strategy.min_updates == 5
    four = _ups([[0.1], [0.2], [0.15], [1000.0]], keys=("w", "b"))
    new = strategy.aggregate(x, four, 1)  # floor(0.2 * 4) = 0 would be the plain mean
    assert torch.equal(new["w"], x["w"]) and torch.equal(new["b"], x["b"])
    # heterogeneous: "w" from 5 clients is aggregated, "b" from 4 keeps its value
    five = _ups([[6.0], [7.0], [5.5], [1000.0], [6.5]])
    for i, u in enumerate(five[:4]):
        u.state["b"] = torch.tensor([float(i)], dtype=F64)
    new = strategy.aggregate(x, five, 1)
    torch.testing.assert_close(new["w"], torch.tensor([(6.0 + 6.5 + 7.0) / 3], dtype=F64),
                               rtol=1e-15, atol=0)
    assert torch.equal(new["b"], x["b"])


def test_trimmed_mean_refuses_beta_zero():
    with pytest.raises(ValueError, match=r"beta must lie in \(0, 0.5\).*plain mean"):
        make_strategy("trimmed_mean", beta=0.0)
    with pytest.raises(ValueError, match=r"beta must lie in \(0, 0.5\)"):
        make_strategy("trimmed_mean", beta=0.5)


def test_median_of_three_and_too_few():
    x = {"w": torch.tensor([1.0, 1.0], dtype=F64), "b": torch.tensor([0.0], dtype=F64)}
    ups = _ups([[4.0, -2.0], [1.5, 9.0], [-3.0, 2.0]])
    for u in ups[:2]:
        u.state["b"] = torch.tensor([3.0], dtype=F64)  # "b" only from 2 clients
    strategy = make_strategy("median")
    new = strategy.aggregate(x, ups, 1)
    # deltas (3, -3), (0.5, 8), (-4, 1): medians 0.5 and 1
    torch.testing.assert_close(new["w"], torch.tensor([1.5, 2.0], dtype=F64), rtol=0, atol=0)
    assert torch.equal(new["b"], x["b"])  # the median of two would be their mean
    assert torch.equal(strategy.aggregate(x, ups[:2], 1)["w"], x["w"])
