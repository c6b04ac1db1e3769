"""The robust rules (coordinate-wise median, trimmed mean, Krum, Multi-Krum, Bulyan) never
degenerate into the mean: a key fewer than ``min_updates`` clients returned keeps its global
value; Krum's choices checked by hand; ``plan_run`` refuses too few clients per round."""

from __future__ import annotations

import pytest
import torch

from fedmllm.config import ConfigError, load_config
from fedmllm.engine.factory import plan_run
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


# ------------------------------------------------------------------ Krum, Multi-Krum, Bulyan

#: five clients' 2-d deltas from x = 0: four near (1, 1), one far outlier (client 3)
KRUM_DELTAS = [[1.0, 1.0], [1.3, 1.0], [1.0, 0.8], [40.0, -30.0], [0.9, 1.1]]


def test_krum_rejects_the_outlier_and_picks_the_most_central_client():
    x = {"w": torch.zeros(2, dtype=F64)}
    ups = _ups(KRUM_DELTAS)
    # f = 1: each score sums the n - f - 2 = 2 smallest squared distances to the others
    #   client 0: to 1: 0.09, to 2: 0.04, to 4: 0.02  -> 0.02 + 0.04 = 0.06
    #   client 1: 0.09, 0.13, 0.17                     -> 0.09 + 0.13 = 0.22
    #   client 2: 0.04, 0.13, 0.10                     -> 0.04 + 0.10 = 0.14
    #   client 4: 0.02, 0.17, 0.10                     -> 0.02 + 0.10 = 0.12
    #   client 3 (the outlier): over 2000
    new = make_strategy("krum", num_malicious=1).aggregate(x, ups, 1)
    assert torch.equal(new["w"], torch.tensor([1.0, 1.0], dtype=F64))  # client 0, as it is
    # Multi-Krum, m = 3: clients 0, 4, 2, weighted by their examples 10, 50, 30
    new = make_strategy("multikrum", num_malicious=1, num_to_select=3).aggregate(x, ups, 1)
    want = [(10 * 1.0 + 50 * 0.9 + 30 * 1.0) / 90, (10 * 1.0 + 50 * 1.1 + 30 * 0.8) / 90]
    torch.testing.assert_close(new["w"], torch.tensor(want, dtype=F64), rtol=1e-15, atol=0)
    # m = 5 of 5 is the example-weighted mean: the outlier is back in
    assert make_strategy("multikrum", num_to_select=5).aggregate(x, ups, 1)["w"][0] > 10


def test_krum_scores_the_whole_update_and_moves_from_the_global_value():
    # the outlier is an outlier only jointly: split over two keys, and x != 0
    x = {"a": torch.tensor([2.0], dtype=F64), "b": torch.tensor([-1.0], dtype=F64)}
    ups = [ClientUpdate({"a": torch.tensor([2.0 + d[0]], dtype=F64),
                         "b": torch.tensor([-1.0 + d[1]], dtype=F64)}, 1, i)
           for i, d in enumerate(KRUM_DELTAS)]
    new = make_strategy("krum", num_malicious=1).aggregate(x, ups, 1)
    assert (float(new["a"]), float(new["b"])) == (3.0, 0.0)


def test_krum_runs_once_per_group_of_keys_the_same_clients_returned():
    x = {"w": torch.zeros(2, dtype=F64), "b": torch.zeros(1, dtype=F64)}
    ups = _ups(KRUM_DELTAS)
    for u, b in zip(ups[2:], ([5.0], [-20.0], [4.0]), strict=True):  # "b" from clients 2-4
        u.state["b"] = torch.tensor(b, dtype=F64)
    new = make_strategy("krum").aggregate(x, ups, 1)  # f = 0: n - 2 neighbours, at least 1
    assert torch.equal(new["w"], torch.tensor([1.0, 1.0], dtype=F64))  # client 0 on "w"
    # on "b" (n = 3, 1 neighbour) 5 and 4 tie at 1: the lower client index wins, never -20
    assert torch.equal(new["b"], torch.tensor([5.0], dtype=F64))


def test_krum_with_too_few_clients_keeps_the_global_value():
    x = {"w": torch.tensor([5.0, 5.0], dtype=F64)}
    strategy = make_strategy("krum", num_malicious=1)
    assert strategy.min_updates == 5  # n > 2f + 2
    assert torch.equal(strategy.aggregate(x, _ups(KRUM_DELTAS[:4]), 1)["w"], x["w"])
    assert make_strategy("multikrum", num_malicious=2).min_updates == 7


def test_bulyan_selects_then_averages_the_values_nearest_the_median():
    x = {"w": torch.zeros(1, dtype=F64)}
    strategy = make_strategy("bulyan", num_malicious=1)
    assert strategy.min_updates == 7  # n >= 4f + 3
    six = _ups([[0.0], [0.1], [0.2], [0.3], [0.4], [9.0]])
    assert torch.equal(strategy.aggregate(x, six, 1)["w"], x["w"])  # too few: kept
    # n = 7, f = 1: theta = 5 selected by Krum's scores (the two farthest out, 9 and -6, go),
    # median of 0, 0.1, 0.2, 0.3, 0.4 is 0.2; beta = 3 nearest: 0.1, 0.2, 0.3
    seven = _ups([[0.0], [0.1], [0.2], [0.3], [0.4], [9.0], [-6.0]])
    torch.testing.assert_close(strategy.aggregate(x, seven, 1)["w"],
                               torch.tensor([0.2], dtype=F64), rtol=1e-15, atol=1e-17)


@pytest.mark.parametrize("bad", [{"num_malicious": -1}, {"num_malicious": 0.5},
                                 {"num_malicious": True}])
def test_krum_refuses_a_bad_num_malicious(bad):
    with pytest.raises(ValueError, match="num_malicious must be an integer >= 0"):
        make_strategy("krum", **bad)


def test_multikrum_refuses_num_to_select_zero_and_krum_takes_none():
    with pytest.raises(ValueError, match="num_to_select must be a positive integer"):
        make_strategy("multikrum", num_to_select=0)
    with pytest.raises(ValueError, match="num_to_select"):
        make_strategy("krum", num_to_select=2)  # Krum selects 1


def _plan(*overrides):
    return plan_run(load_config(None, ["fl.num_clients=10", *overrides]))


@pytest.mark.parametrize(("overrides", "key", "words"), [
    (["fl.algorithm=krum", "fl.strategy.num_malicious=1", "fl.clients_per_round=4"],
     "fl.clients_per_round", "krum needs at least 5 clients per round"),
    (["fl.algorithm=multikrum", "fl.strategy.num_malicious=2", "fl.clients_per_round=6"],
     "fl.clients_per_round", "fl.strategy.num_malicious=2"),
    (["fl.algorithm=bulyan", "fl.strategy.num_malicious=1", "fl.clients_per_round=6"],
     "fl.clients_per_round", "bulyan needs at least 7"),
    (["fl.algorithm=bulyan", "fl.clients_per_round=2"], "fl.clients_per_round", "at least 3"),
    (["fl.algorithm=multikrum", "fl.strategy.num_malicious=1", "fl.strategy.num_to_select=5",
      "fl.clients_per_round=5"], "fl.strategy.num_to_select", "at most"),
])
def test_plan_run_refuses_too_few_clients_per_round(overrides, key, words):
    with pytest.raises(ConfigError) as e:
        _plan(*overrides)
    message = str(e.value)
    assert message.startswith(key) and words in message and "\n" not in message, message


def test_plan_run_accepts_the_minimum():
    _plan("fl.algorithm=krum", "fl.strategy.num_malicious=1", "fl.clients_per_round=5")
    _plan("fl.algorithm=bulyan", "fl.strategy.num_malicious=1", "fl.clients_per_round=7")
    _plan("fl.algorithm=multikrum", "fl.strategy.num_malicious=1", "fl.strategy.num_to_select=4",
          "fl.clients_per_round=5")
