"""The reduction kernels: normalised weights, grouping by contributor set, exact values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedmllm.fl import ClientUpdate, make_strategy

BIG = 1e34  # x the example count 1e5 overflows float32 (max 3.4e38) if summed unnormalised


def _updates(hetero: bool):
    a = torch.full((3,), BIG)
    return [
        ClientUpdate({"a": a.clone(), "b": a.clone()}, 100_000, 0),
        ClientUpdate({"a": a.clone()} if hetero else {"a": a.clone(), "b": a.clone()},
                     100_000, 1),
        ClientUpdate({"a": a.clone(), "b": a.clone()}, 300_000, 2),
    ]


@pytest.mark.parametrize("name", ["fedavg", "fedavgm", "fedprox"])
@pytest.mark.parametrize("hetero", [False, True])
def test_huge_values_and_counts_stay_finite(name, hetero):
    x = {"a": torch.zeros(3), "b": torch.zeros(3)}
    new = make_strategy(name).aggregate(x, _updates(hetero), 1)
    for k in ("a", "b"):
        assert torch.equal(new[k], torch.full((3,), BIG)), (k, new[k])


def test_weights_are_normalised_per_contributor_set_by_hand():
    x = {"a": torch.zeros(2, dtype=torch.float64), "b": torch.zeros(1, dtype=torch.float64),
         "c": torch.zeros(1, dtype=torch.float64)}
    ups = [
        ClientUpdate({"a": torch.tensor([1.0, 2.0], dtype=torch.float64),
                      "b": torch.tensor([4.0], dtype=torch.float64)}, 1, 0),
        ClientUpdate({"a": torch.tensor([3.0, 6.0], dtype=torch.float64),
                      "c": torch.tensor([5.0], dtype=torch.float64)}, 3, 1),
        ClientUpdate({"b": torch.tensor([8.0], dtype=torch.float64),
                      "c": torch.tensor([9.0], dtype=torch.float64)}, 4, 2),
    ]
    new = make_strategy("fedavg").aggregate(x, ups, 1)
    np.testing.assert_array_equal(new["a"].numpy(), [(1 + 9) / 4, (2 + 18) / 4])
    np.testing.assert_array_equal(new["b"].numpy(), [(4 + 32) / 5])
    np.testing.assert_array_equal(new["c"].numpy(), [(15 + 36) / 7])
