"""Cross-check the textbook strategies against Flower's built-in Message-API strategies.

Every strategy Flower 1.42 has a counterpart for (``flwr.serverapp.strategy``: FedAvg, FedProx,
FedAvgM, FedAdagrad, FedAdam, FedYogi, FedMedian, FedTrimmedAvg, Krum, MultiKrum, Bulyan) runs
five rounds on identical inputs: eight nodes with unequal example counts, a different subset of
five sampled by Flower in every round (``configure_train``; we read the sampled node ids from its
messages and feed the same clients to ours; all eight for Bulyan with a malicious node, which
needs 4f + 3 = 7), replies built from known deltas and aggregated by ``aggregate_train``.
"""

from __future__ import annotations

import os
import random

# Before flwr is imported (tests/conftest.py sets the same): no telemetry, no network.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")

import numpy as np
import pytest
import torch

pytest.importorskip("flwr")

from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import strategy as fs
from flwr.supercore.task_identity import TaskIdentity

from fedmllm.fl import ClientUpdate, make_strategy

NODE_IDS = [101, 102, 103, 104, 105, 106, 107, 108]
NUM_EXAMPLES = {101: 5, 102: 17, 103: 8, 104: 40, 105: 3, 106: 11, 107: 26, 108: 9}
ROUNDS = 5
FRACTION = 0.625  # 5 of 8 nodes per round (the trimmed mean with beta 0.2 cuts one per side)


class _Grid:
    """The part of ``flwr.serverapp.Grid`` that ``configure_train`` uses."""

    def get_node_ids(self):
        return list(NODE_IDS)


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch):
    # Messages created outside a running ServerApp need a run/node/task identity.
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 0)


def _deltas(dtype):
    """``deltas[round][node]``: every node's update in every round (used when it is sampled)."""
    rng = np.random.default_rng(1234)
    return [
        {
            node: {
                "w": rng.normal(0, 0.5, (4, 3)).astype(dtype),
                "b": rng.normal(0, 0.5, 5).astype(dtype),
            }
            for node in NODE_IDS
        }
        for _ in range(ROUNDS)
    ]


def _init(dtype):
    rng = np.random.default_rng(99)
    return {"w": rng.normal(size=(4, 3)).astype(dtype), "b": rng.normal(size=5).astype(dtype)}


def run_flower(strategy, dtype, counts=NUM_EXAMPLES, upload=None, after_round=None):
    """Flower's rounds; returns the states after each round and the nodes it sampled.
    ``upload(arrays, current)`` changes a node's reply arrays in place (a client mod);
    ``after_round()`` runs after each aggregation."""
    current = _init(dtype)
    history, sampled = [], []
    for rnd, deltas in enumerate(_deltas(dtype), start=1):
        arrays = ArrayRecord({k: Array(v) for k, v in current.items()})
        random.seed(1000 + rnd)  # Flower samples nodes with the random module
        instructions = list(strategy.configure_train(rnd, arrays, ConfigRecord(), _Grid()))
        nodes = [msg.metadata.dst_node_id for msg in instructions]
        sampled.append(nodes)
        replies = []
        for msg, node in zip(instructions, nodes, strict=True):
            d = deltas[node]
            sent = [current[k] + d[k] for k in current]
            if upload is not None:
                upload(sent, [current[k] for k in current])
            content = RecordDict(
                {
                    "arrays": ArrayRecord({k: Array(v) for k, v in zip(current, sent)}),
                    "metrics": MetricRecord({"num-examples": counts[node]}),
                }
            )
            replies.append(Message(content, reply_to=msg))
        out, _ = strategy.aggregate_train(rnd, replies)
        if after_round is not None:
            after_round()
        current = {k: out[k].numpy() for k in current}
        history.append({k: np.asarray(v, dtype=np.float64) for k, v in current.items()})
    return history, sampled


def run_ours(strategy, dtype, sampled, counts=NUM_EXAMPLES, upload=None, after_round=None):
    """Our rounds on Flower's samples; ``upload(state, current)`` is what a client sends."""
    current = {k: torch.from_numpy(v) for k, v in _init(dtype).items()}
    history = []
    for rnd, (deltas, nodes) in enumerate(zip(_deltas(dtype), sampled, strict=True), start=1):
        updates = [
            ClientUpdate({k: current[k] + torch.from_numpy(deltas[node][k]) for k in current},
                         counts[node], NODE_IDS.index(node))
            for node in nodes
        ]
        if upload is not None:
            for u in updates:
                u.state = upload(u.state, current)
        current = strategy.aggregate(current, updates, rnd)
        if after_round is not None:
            after_round()
        history.append({k: t.numpy().astype(np.float64) for k, t in current.items()})
    return history


def _flower(cls, **kw):
    return lambda: cls(fraction_train=FRACTION, **kw)


CASES = [
    ("fedavg", _flower(fs.FedAvg), {}),
    ("fedprox", _flower(fs.FedProx, proximal_mu=0.1), {}),
    ("fedavgm", _flower(fs.FedAvgM, server_learning_rate=1.0, server_momentum=0.9), {}),
    (
        "fedavgm",
        _flower(fs.FedAvgM, server_learning_rate=0.6, server_momentum=0.5),
        {"server_lr": 0.6, "momentum": 0.5},
    ),
    # library defaults on both sides: also checks that our textbook defaults are Flower's
    ("fedadagrad", _flower(fs.FedAdagrad), {}),
    ("fedadam", _flower(fs.FedAdam), {}),
    ("fedyogi", _flower(fs.FedYogi), {}),
    ("fedadagrad", _flower(fs.FedAdagrad, eta=0.3, tau=1e-2), {"eta": 0.3, "tau": 1e-2}),
    (
        "fedadam",
        _flower(fs.FedAdam, eta=0.02, beta_1=0.8, beta_2=0.95, tau=1e-4),
        {"eta": 0.02, "beta1": 0.8, "beta2": 0.95, "tau": 1e-4},
    ),
    (
        "fedyogi",
        _flower(fs.FedYogi, eta=0.05, beta_1=0.5, beta_2=0.9, tau=1e-2),
        {"eta": 0.05, "beta1": 0.5, "beta2": 0.9, "tau": 1e-2},
    ),
    ("median", _flower(fs.FedMedian), {}),
    ("trimmed_mean", _flower(fs.FedTrimmedAvg, beta=0.2), {"beta": 0.2}),
    ("trimmed_mean", _flower(fs.FedTrimmedAvg, beta=0.45), {"beta": 0.45}),
    # 5 nodes: Krum's n > 2f + 2 allows f = 1 (3 - 1 = 2 neighbours scored); Bulyan's
    # n >= 4f + 3 only f = 0 (see FULL_CASES for f = 1)
    ("krum", _flower(fs.Krum, num_malicious_nodes=1), {"num_malicious": 1}),
    ("krum", _flower(fs.Krum), {}),
    (
        "multikrum",
        _flower(fs.MultiKrum, num_malicious_nodes=1, num_nodes_to_select=3),
        {"num_malicious": 1, "num_to_select": 3},
    ),
    ("bulyan", _flower(fs.Bulyan), {}),
]

# every node every round (Flower's fraction_train = 1): 8 clients, f = 1, theta = 6, beta = 4
FULL_CASES = [
    ("bulyan", lambda: fs.Bulyan(num_malicious_nodes=1), {"num_malicious": 1}),
    (
        "multikrum",
        lambda: fs.MultiKrum(num_malicious_nodes=2, num_nodes_to_select=5),
        {"num_malicious": 2, "num_to_select": 5},
    ),
]


def test_every_flower_counterpart_is_covered():
    """Flower's strategies that share our update rule all appear in CASES."""
    counterparts = {"FedAvg", "FedProx", "FedAvgM", "FedAdagrad", "FedAdam", "FedYogi",
                    "FedMedian", "FedTrimmedAvg", "Krum", "MultiKrum", "Bulyan"}
    assert counterparts <= set(dir(fs))
    covered = {factory().__class__.__name__ for _, factory, _ in CASES + FULL_CASES}
    assert covered == counterparts


@pytest.mark.parametrize("name,flower_factory,params", CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_flower(name, flower_factory, params, dtype):
    flower, sampled = run_flower(flower_factory(), dtype)
    # partial participation: Flower drew 5 of 8 nodes, a different subset in every round
    assert all(len(nodes) == 5 for nodes in sampled)
    assert len({frozenset(nodes) for nodes in sampled}) == ROUNDS
    _check_same(name, params, dtype, flower, sampled)


@pytest.mark.parametrize("name,flower_factory,params", FULL_CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_flower_every_node(name, flower_factory, params, dtype):
    flower, sampled = run_flower(flower_factory(), dtype)
    assert all(sorted(nodes) == NODE_IDS for nodes in sampled)
    _check_same(name, params, dtype, flower, sampled)


def _check_same(name, params, dtype, flower, sampled):
    """Our rule's rounds equal Flower's ``flower`` history, and differ from plain FedAvg."""
    ours = run_ours(make_strategy(name, **params), dtype, sampled)
    tol = 1e-6 if dtype == np.float64 else 2e-5  # float32 only by its own rounding
    if name in ("krum", "multikrum", "bulyan") and dtype == np.float64:
        tol = 1e-12  # selection, means and medians: only float64 rounding differs
    for rnd, (f, o) in enumerate(zip(flower, ours, strict=True), start=1):
        for k in f:
            np.testing.assert_allclose(o[k], f[k], rtol=tol, atol=tol, err_msg=f"round {rnd}, {k}")
    if name not in ("fedavg", "fedprox"):
        # the rule really moved the model differently from plain FedAvg
        plain = run_ours(make_strategy("fedavg"), dtype, sampled)[-1]
        assert max(np.abs(ours[-1][k] - plain[k]).max() for k in plain) > 1e-3


# ----------------------------------------------------------------------------- central DP
# Flower's DP wrappers (flwr.serverapp.strategy.dp_*) around each mean-based rule, with noise
# multiplier 0, equal example counts and every sampled node replying: our wrappers must give
# the same states (and, adaptive, the same clip-norm sequence) to 1e-12 in float64.

EQUAL = dict.fromkeys(NODE_IDS, 10)
DP_CLIP = 1.5  # the deltas' norms are about 2: most updates are clipped, a few are not
DP_RULES = [(name, factory, params) for name, factory, params in CASES
            if name in ("fedavg", "fedprox", "fedavgm", "fedadagrad", "fedadam", "fedyogi")]


def _ours_dp(mechanism, name, params, **kw):
    from fedmllm.fl.privacy import make_private

    return make_private(make_strategy(name, **params), mechanism, noise_multiplier=0.0,
                        num_sampled=5, noise=lambda r: torch.Generator().manual_seed(r), **kw)


def _assert_close(ours, flower, dtype):
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for rnd, (f, o) in enumerate(zip(flower, ours, strict=True), start=1):
        for k in f:
            np.testing.assert_allclose(o[k], f[k], rtol=tol, atol=tol, err_msg=f"round {rnd}, {k}")


@pytest.mark.parametrize("name,flower_factory,params", DP_RULES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_server_side_fixed_clipping_matches_flower(name, flower_factory, params, dtype):
    flower_dp = fs.DifferentialPrivacyServerSideFixedClipping(flower_factory(), 0.0, DP_CLIP, 5)
    flower, sampled = run_flower(flower_dp, dtype, counts=EQUAL)
    ours = run_ours(_ours_dp("central_server", name, params, clipping_norm=DP_CLIP), dtype,
                    sampled, counts=EQUAL)
    _assert_close(ours, flower, dtype)
    unclipped = run_ours(make_strategy(name, **params), dtype, sampled, counts=EQUAL)[-1]
    assert max(np.abs(ours[-1][k] - unclipped[k]).max() for k in unclipped) > 1e-3


@pytest.mark.parametrize("name,flower_factory,params", DP_RULES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_client_side_fixed_clipping_matches_flower(name, flower_factory, params, dtype):
    """Flower's client clip is ``fixedclipping_mod``'s own function; ours ``clip_update``."""
    from flwr.supercore.differential_privacy import compute_clip_model_update

    from fedmllm.fl.privacy import clip_update

    flower_dp = fs.DifferentialPrivacyClientSideFixedClipping(flower_factory(), 0.0, DP_CLIP, 5)
    flower, sampled = run_flower(
        flower_dp, dtype, counts=EQUAL,
        upload=lambda sent, cur: compute_clip_model_update(sent, cur, DP_CLIP))
    ours = run_ours(_ours_dp("central_client", name, params, clipping_norm=DP_CLIP), dtype,
                    sampled, counts=EQUAL, upload=lambda st, cur: clip_update(st, cur, DP_CLIP)[0])
    _assert_close(ours, flower, dtype)


def _paper_norm_bit(monkeypatch):
    """Flower 1.42's adaptive class with the paper's indicator: count the *unclipped* updates
    (as its legacy ``dpfedavg_numpy_client`` does: ``norm_bit = not clipped``)."""
    from flwr.serverapp.strategy import dp_adaptive_clipping as dpac
    from flwr.supercore.differential_privacy import adaptive_clip_inputs_inplace as clip

    monkeypatch.setattr(dpac, "adaptive_clip_inputs_inplace", lambda a, c: not clip(a, c))


@pytest.mark.parametrize("name,flower_factory,params", DP_RULES)
def test_server_side_adaptive_clipping_matches_flower(name, flower_factory, params,
                                                      monkeypatch):
    _paper_norm_bit(monkeypatch)
    flower_dp = fs.DifferentialPrivacyServerSideAdaptiveClipping(
        flower_factory(), 0.0, 5, initial_clipping_norm=0.5, target_clipped_quantile=0.4,
        clip_norm_lr=0.3)
    flower_clips, our_clips = [], []
    flower, sampled = run_flower(flower_dp, np.float64, counts=EQUAL,
                                 after_round=lambda: flower_clips.append(flower_dp.clipping_norm))
    ours_dp = _ours_dp("central_adaptive", name, params, clipping_norm=0.5, target_quantile=0.4,
                       clip_lr=0.3)
    ours = run_ours(ours_dp, np.float64, sampled, counts=EQUAL,
                    after_round=lambda: our_clips.append(ours_dp.clip_norm))
    _assert_close(ours, flower, np.float64)
    np.testing.assert_allclose(our_clips, flower_clips, rtol=1e-12, atol=0)
    assert our_clips[0] > 0.5 and len(set(our_clips)) == ROUNDS  # C grows towards the norms


def test_flower_adaptive_clipping_counts_the_clipped_updates():
    """Why the cross-check above flips Flower's indicator: its class as shipped moves C
    *down* when every update is clipped (the paper, and Flower's legacy DPFedAvgAdaptive,
    move it up). Fails once Flower changes this: then drop the patch above."""
    flower_dp = fs.DifferentialPrivacyServerSideAdaptiveClipping(
        fs.FedAvg(fraction_train=FRACTION), 0.0, 5, initial_clipping_norm=0.1)
    clips = []
    run_flower(flower_dp, np.float64, counts=EQUAL,
               after_round=lambda: clips.append(flower_dp.clipping_norm))
    assert clips[0] < 0.1 and clips == sorted(clips, reverse=True)
