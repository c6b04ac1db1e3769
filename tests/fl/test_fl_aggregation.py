"""The reduction kernels: normalised weights, grouping by contributor set, exact values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedmllm.fl import ALGORITHMS, ClientUpdate, make_strategy
from fedmllm.fl.aggregation import Layout, pack_state

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


# ----------------------------------------------------------------------------- packed states

def _state(seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(3, 4, generator=g, dtype=dtype),
            "n": torch.tensor([seed]),  # not floating: never part of a layout
            "b": torch.randn(5, generator=g, dtype=dtype),
            "c": torch.randn(2, 2, generator=g, dtype=dtype)}


def test_pack_state_lays_floating_tensors_end_to_end():
    state = _state(0)
    packed = pack_state(state)
    assert list(packed) == list(state)
    assert all(torch.equal(packed[k], state[k]) for k in state)
    layout = Layout(["a", "b", "c"], state)
    span = layout.span(packed)
    assert span is not None and span.shape == (21,)
    assert torch.equal(span, torch.cat([state[k].reshape(-1) for k in ("a", "b", "c")]))
    assert layout.span(state) is None  # separate allocations


def test_span_refuses_anything_but_one_contiguous_run_in_key_order():
    packed = pack_state(_state(1))
    assert Layout(["b", "a", "c"], packed).span(packed) is None  # other order
    assert Layout(["a", "c"], packed).span(packed) is None  # a gap ("b" between them)
    assert Layout(["b", "c"], packed).span(packed) is not None  # a sub-run is fine
    replaced = dict(packed)
    replaced["b"] = packed["b"].clone()  # one tensor swapped for its own allocation
    assert Layout(["a", "b", "c"], packed).span(replaced) is None
    flat = torch.arange(12.0)
    transposed = {"a": flat[:6].view(2, 3).t(), "b": flat[6:]}  # right pointers, not contiguous
    like = {"a": torch.zeros(3, 2), "b": torch.zeros(6)}
    assert Layout(["a", "b"], like).span(transposed) is None
    assert Layout(["a", "b"], like).span({"a": flat[:6].view(3, 2), "b": flat[6:]}) is not None
    mixed = {"a": flat[:6].view(3, 2), "b": flat.view(torch.int32)[6:]}  # same width, other dtype
    assert Layout(["a", "b"], like).span(mixed) is None
    assert Layout(["a", "b"], like).span({"a": flat[:6].view(3, 2)}) is None  # a key missing


@pytest.mark.parametrize("name", [n for n in ALGORITHMS if n != "centralized"])  # one client
def test_packed_and_separate_client_states_give_identical_results(name):
    kwargs = {"num_clients": 6} if name == "scaffold" else {}
    glob = {k: t for k, t in _state(10).items()}
    clients = [_state(20 + i) for i in range(6)]
    for c in clients:
        c["n"] = glob["n"]
    hetero = [dict(c) for c in clients]
    del hetero[0]["b"], hetero[3]["c"]

    def ups(states, pack):
        return [ClientUpdate(pack_state(s) if pack else s, 3 + i, i,
                             extras={"control_delta": {k: 0.1 * t for k, t in s.items()
                                                       if t.is_floating_point()}})
                for i, s in enumerate(states)]

    for states in (clients, hetero):
        a_strategy, b_strategy = make_strategy(name, **kwargs), make_strategy(name, **kwargs)
        xa = xb = glob
        for r in (1, 2, 3):
            xa = a_strategy.aggregate(xa, ups(states, pack=True), r)
            xb = b_strategy.aggregate(xb, ups(states, pack=False), r)
            for k in glob:
                assert torch.equal(xa[k], xb[k]), (name, r, k)


def test_the_new_global_state_is_packed_per_key_group():
    glob = _state(3)
    clients = [_state(4 + i) for i in range(3)]
    new = make_strategy("fedavg").aggregate(glob, [ClientUpdate(c, 1, i)
                                                   for i, c in enumerate(clients)], 1)
    assert Layout(["a", "b", "c"], new).span(new) is not None
    assert new["n"] is glob["n"]
