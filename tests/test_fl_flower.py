"""Cross-check the textbook strategies against Flower's built-in Message-API strategies.

Identical inputs (three clients, two rounds, two arrays) go through ``flwr.serverapp.strategy``
(``configure_train`` then ``aggregate_train`` on constructed reply Messages) and through ours.
"""

from __future__ import annotations

import os

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

NUM_EXAMPLES = [5, 17, 8]


class _Grid:
    """The part of ``flwr.serverapp.Grid`` that ``configure_train`` uses."""

    def get_node_ids(self):
        return [11, 12, 13]


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch):
    # Messages created outside a running ServerApp need a run/node/task identity.
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 0)


def _deltas(dtype):
    rng = np.random.default_rng(1234)
    return [
        [
            {
                "w": rng.normal(0, 0.5, (4, 3)).astype(dtype),
                "b": rng.normal(0, 0.5, 5).astype(dtype),
            }
            for _ in NUM_EXAMPLES
        ]
        for _ in range(2)
    ]


def _init(dtype):
    rng = np.random.default_rng(99)
    return {"w": rng.normal(size=(4, 3)).astype(dtype), "b": rng.normal(size=5).astype(dtype)}


def run_flower(strategy, dtype):
    current = _init(dtype)
    history = []
    for rnd, deltas in enumerate(_deltas(dtype), start=1):
        arrays = ArrayRecord({k: Array(v) for k, v in current.items()})
        instructions = list(strategy.configure_train(rnd, arrays, ConfigRecord(), _Grid()))
        replies = []
        for msg, d, n in zip(instructions, deltas, NUM_EXAMPLES, strict=True):
            content = RecordDict(
                {
                    "arrays": ArrayRecord({k: Array(current[k] + d[k]) for k in current}),
                    "metrics": MetricRecord({"num-examples": n}),
                }
            )
            replies.append(Message(content, reply_to=msg))
        out, _ = strategy.aggregate_train(rnd, replies)
        current = {k: out[k].numpy() for k in current}
        history.append({k: np.asarray(v, dtype=np.float64) for k, v in current.items()})
    return history


def run_ours(strategy, dtype):
    current = {k: torch.from_numpy(v) for k, v in _init(dtype).items()}
    history = []
    for rnd, deltas in enumerate(_deltas(dtype), start=1):
        updates = [
            ClientUpdate({k: current[k] + torch.from_numpy(d[k]) for k in current}, n, i)
            for i, (d, n) in enumerate(zip(deltas, NUM_EXAMPLES, strict=True))
        ]
        current = strategy.aggregate(current, updates, rnd)
        history.append({k: t.numpy().astype(np.float64) for k, t in current.items()})
    return history


CASES = [
    ("fedavg", lambda: fs.FedAvg(), {}),
    ("fedprox", lambda: fs.FedProx(proximal_mu=0.1), {}),
    ("fedavgm", lambda: fs.FedAvgM(server_learning_rate=1.0, server_momentum=0.9), {}),
    (
        "fedavgm",
        lambda: fs.FedAvgM(server_learning_rate=0.6, server_momentum=0.5),
        {"server_lr": 0.6, "momentum": 0.5},
    ),
    # library defaults on both sides: also checks that our textbook defaults are Flower's
    ("fedadagrad", lambda: fs.FedAdagrad(), {}),
    ("fedadam", lambda: fs.FedAdam(), {}),
    ("fedyogi", lambda: fs.FedYogi(), {}),
    ("fedadagrad", lambda: fs.FedAdagrad(eta=0.3, tau=1e-2), {"eta": 0.3, "tau": 1e-2}),
    (
        "fedadam",
        lambda: fs.FedAdam(eta=0.02, beta_1=0.8, beta_2=0.95, tau=1e-4),
        {"eta": 0.02, "beta1": 0.8, "beta2": 0.95, "tau": 1e-4},
    ),
    (
        "fedyogi",
        lambda: fs.FedYogi(eta=0.05, beta_1=0.5, beta_2=0.9, tau=1e-2),
        {"eta": 0.05, "beta1": 0.5, "beta2": 0.9, "tau": 1e-2},
    ),
]


@pytest.mark.parametrize("name,flower_factory,params", CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_flower(name, flower_factory, params, dtype):
    flower = run_flower(flower_factory(), dtype)
    ours = run_ours(make_strategy(name, **params), dtype)
    tol = 1e-6 if dtype == np.float64 else 2e-5  # float32 only by its own rounding
    for rnd, (f, o) in enumerate(zip(flower, ours, strict=True), start=1):
        for k in f:
            np.testing.assert_allclose(o[k], f[k], rtol=tol, atol=tol, err_msg=f"round {rnd}, {k}")
        if rnd == 2 and name not in ("fedavg", "fedprox"):
            # the server optimizer really moved the model differently from plain FedAvg
            plain = run_ours(make_strategy("fedavg"), dtype)[1]
            assert max(np.abs(o[k] - plain[k]).max() for k in o) > 1e-3
