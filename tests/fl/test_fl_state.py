"""Server state that must not change under a caller: state_dict copies, side-effect-free
server_extras, numpy example counts, and FedAdam's per-key bias correction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedmllm.fl import ClientUpdate, make_strategy, validate_update

F64 = torch.float64

STATEFUL = [
    ("fedavgm", {}),
    ("fedavgm", {"variant": "fedmllm"}),
    ("fedadagrad", {}),
    ("fedadagrad", {"variant": "fedmllm"}),
    ("fedadam", {}),
    ("fedadam", {"variant": "fedmllm"}),
    ("fedyogi", {}),
    ("fedyogi", {"variant": "fedmllm"}),
    ("scaffold", {"num_clients": 3}),
]


def _round(x, r):
    gen = torch.Generator().manual_seed(r)
    return [
        ClientUpdate({k: t + torch.randn(t.shape, generator=gen, dtype=F64) for k, t in x.items()},
                     i + 1, i,
                     extras={"control_delta": {k: torch.randn(t.shape, generator=gen, dtype=F64)
                                               for k, t in x.items()}})
        for i in range(3)
    ]


@pytest.mark.parametrize("name,kwargs", STATEFUL)
def test_state_dict_is_a_copy_that_later_rounds_leave_alone(name, kwargs):
    strategy = make_strategy(name, **kwargs)
    x = {"w": torch.tensor([1.0, -2.0, 0.5], dtype=F64), "b": torch.tensor([0.25], dtype=F64)}
    x = strategy.aggregate(x, _round(x, 1), 1)
    saved = strategy.state_dict()
    snapshot = {k: t.clone() for k, t in saved.items()}
    extras = strategy.server_extras(x)
    extras_snapshot = {k: t.clone() for k, t in extras.get("control", {}).items()}
    for r in (2, 3):
        x = strategy.aggregate(x, _round(x, r), r)
    assert set(saved) == set(snapshot)
    for k, t in saved.items():
        assert torch.equal(t, snapshot[k]), f"{k} changed under the caller"
    for k, t in extras.get("control", {}).items():
        assert torch.equal(t, extras_snapshot[k])
    # and changing the returned copy does not reach the strategy
    before = {k: t.clone() for k, t in strategy.state_dict().items()}
    for t in strategy.state_dict().values():
        t.add_(100)
    after = strategy.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_scaffold_server_extras_has_no_side_effects():
    strategy = make_strategy("scaffold", num_clients=2)
    x = {"w": torch.ones(2, dtype=F64), "b": torch.ones(1, dtype=torch.bfloat16),
         "n": torch.tensor(3)}
    extras = strategy.server_extras(x)
    assert strategy.state_dict() == {}  # zeros for unseen keys are not stored
    assert set(extras["control"]) == {"w", "b"}  # floating keys only
    assert torch.equal(extras["control"]["w"], torch.zeros(2, dtype=F64))
    assert extras["control"]["b"].dtype == torch.float32  # the compute dtype
    ups = [ClientUpdate({"w": torch.full((2,), 2.0, dtype=F64)}, 1, 0,
                        extras={"control_delta": {"w": torch.full((2,), 0.5, dtype=F64)}})]
    strategy.aggregate(x, ups, 1)
    assert set(strategy.state_dict()) == {"control/w"}
    state = strategy.state_dict()
    strategy.server_extras(x)
    strategy.server_extras()
    assert set(strategy.state_dict()) == {"control/w"}
    assert torch.equal(strategy.state_dict()["control/w"], state["control/w"])
    torch.testing.assert_close(strategy.server_extras()["control"]["w"],
                               torch.full((2,), 0.25, dtype=F64))  # 0.5 / N
    assert "b" not in strategy.server_extras()["control"]  # without a global state: seen keys


def test_numpy_integer_example_counts_are_accepted():
    g = {"w": torch.zeros(2)}
    assert validate_update(ClientUpdate({"w": torch.ones(2)}, np.int64(7), 0), g) == []
    assert validate_update(ClientUpdate({"w": torch.ones(2)}, np.int32(7), 0), g) == []
    bad = validate_update(ClientUpdate({"w": torch.ones(2)}, np.int64(0), 0), g)
    assert any("num_examples must be a positive integer" in r for r in bad)
    assert validate_update(ClientUpdate({"w": torch.ones(2)}, np.float64(7.0), 0), g) == [
        "num_examples must be a positive integer, got 7.0 (float64)"]


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "fedavgm", "fedadagrad", "fedadam",
                                  "fedyogi", "scaffold", "median", "trimmed_mean", "local",
                                  "zeroshot"])
def test_every_strategy_takes_numpy_integer_example_counts(name):
    kwargs = {"num_clients": 5} if name == "scaffold" else {}
    x = {"w": torch.tensor([1.0, 2.0], dtype=F64)}
    vals = [[1.5, 0.0], [2.0, 4.0], [0.0, 3.0], [1.25, -1.0], [9.0, 2.5]]

    def ups(count):
        return [ClientUpdate({"w": torch.tensor(v, dtype=F64)}, count(i + 1), i,
                             extras={"control_delta": {"w": torch.full((2,), 0.1 * i)}})
                for i, v in enumerate(vals)]

    want = make_strategy(name, **kwargs).aggregate(x, ups(int), 1)
    got = make_strategy(name, **kwargs).aggregate(x, ups(np.int64), 1)
    assert torch.equal(got["w"], want["w"])


def test_fedadam_bias_correction_counts_each_keys_own_updates():
    """Key "b" is first returned in round 3: it gets the bias correction of its first update
    (t = 1), not of round 3; key "a", updated in every round, gets round 3's."""
    eta, b1, b2, tau = 0.1, 0.9, 0.99, 1e-3
    strategy = make_strategy("fedadam")
    x = {"a": torch.tensor([1.0], dtype=F64), "b": torch.tensor([2.0], dtype=F64)}
    d_a = [0.5, -0.25, 0.75]
    d_b3 = -0.4

    def eta_t(t):  # Flower's exponent t + 1
        return eta * math.sqrt(1 - b2 ** (t + 1)) / (1 - b1 ** (t + 1))

    m = v = 0.0
    a = 1.0
    for r, d in enumerate(d_a, start=1):
        state = {"a": x["a"] + d}
        if r == 3:
            state["b"] = x["b"] + d_b3
        x = strategy.aggregate(x, [ClientUpdate(state, 4, 0)], r)
        m = b1 * m + (1 - b1) * d
        v = b2 * v + (1 - b2) * d * d
        a = a + eta_t(r) * m / (math.sqrt(v) + tau)
        assert float(x["a"]) == pytest.approx(a, rel=1e-13)
    b = 2.0 + eta_t(1) * (0.1 * d_b3) / (math.sqrt(0.01 * d_b3 * d_b3) + tau)
    assert float(x["b"]) == pytest.approx(b, rel=1e-13)
    b_round3 = 2.0 + eta_t(3) * (0.1 * d_b3) / (math.sqrt(0.01 * d_b3 * d_b3) + tau)
    assert abs(b - b_round3) > 1e-3  # the two corrections really differ
    steps = {k: int(t) for k, t in strategy.state_dict().items() if k.startswith("step/")}
    assert steps == {"step/a": 3, "step/b": 1}
