"""One definition of the per-client statistics, in both of the shapes the outputs use."""

from __future__ import annotations

import math

import pytest

from fedmllm.eval.metrics import mean_over_clients, spread


def test_spread_is_mean_population_std_min_max():
    s = spread([0.5, 0.7, 0.9])
    assert list(s) == ["mean", "std", "min", "max"]
    assert s["mean"] == pytest.approx(0.7)
    assert s["std"] == pytest.approx(math.sqrt(0.08 / 3))  # population std (n, not n - 1)
    assert (s["min"], s["max"]) == (0.5, 0.9)


def test_mean_over_clients_writes_the_spread_as_flat_keys():
    per = {0: {"accuracy": 0.5, "auroc": 0.6}, 1: {"accuracy": 0.9}, 2: {"accuracy": None}}
    out = mean_over_clients(per)
    s = spread([0.5, 0.9])
    assert out["per_client"] is per
    assert (out["accuracy"], out["accuracy_std"], out["accuracy_min"], out["accuracy_max"]) == (
        s["mean"], s["std"], s["min"], s["max"])
    assert out["auroc"] == 0.6
    assert mean_over_clients({0: {"accuracy": None}}) == {"per_client": {0: {"accuracy": None}}}
