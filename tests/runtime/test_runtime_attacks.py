"""``fl.attack`` in the drivers: a Flower node decides alone (from the configuration, the seed
and its partition id) whether it is malicious and flips only its own labels, as the simulation
does; a sign-flipping client drags FedAvg's global adapter away from the clean run's while the
median's stays near it; ``summary.json`` records the malicious set."""

from __future__ import annotations

import json

import pytest

from fedmllm.config import config_from_yaml, load_config
from fedmllm.data import build_federated_data
from fedmllm.engine.bundle import build_bundle
from fedmllm.engine.factory import build_attack, plan_run
from fedmllm.runtime import build_driver
from fedmllm.runtime.session import poisoned, split_holdout


def _cfg(*extra):
    return load_config(None, [
        "model.preset=tiny", "fl.rounds=1", "fl.num_clients=5", "fl.clients_per_round=5",
        "fl.local_steps=3", "data.train_size=100", "data.test_size=16", "eval.every=1",
        "eval.views=[image_text]", "train.lr=5e-3", "output.progress=false",
        "output.plot=false", *extra])


def test_a_node_flips_its_own_labels_as_the_simulation_does():
    from fedmllm.runtime.flower.client import ClientWorker, ProcessModel

    cfg = _cfg("fl.attack.kind=label_flip", "fl.attack.fraction=0.4", "eval.client_holdout=0.2")
    malicious = build_attack(cfg).malicious
    assert len(malicious) == 2
    data = build_federated_data(cfg.data, cfg.fl.num_clients, cfg.seed)
    train, _ = split_holdout(data.clients, cfg.eval.client_holdout, cfg.seed)
    simulated = poisoned(cfg, train)
    node_cfg = config_from_yaml(cfg.to_yaml(), "the server's configuration")  # as sent
    model = ProcessModel(node_cfg, plan_run(node_cfg))
    for k in range(cfg.fl.num_clients):
        node = ClientWorker(model, {"partition-id": k, "num-partitions": 5})
        assert [(s.id, s.label, s.answer) for s in node.train] == \
            [(s.id, s.label, s.answer) for s in simulated[k]]
        changed = [s.label for s in node.train] != [s.label for s in train[k]]
        assert changed == (k in malicious)
        assert all(s in data.clients[k] for s in node.held)  # held-out samples keep labels


def _dist(a, b):
    return sum(float((a[k].double() - b[k].double()).norm() ** 2) for k in a) ** 0.5


@pytest.mark.slow
def test_sign_flip_moves_fedavg_and_not_the_median(tmp_path, tiny_dir):
    base = _cfg()
    bundle = build_bundle(plan_run(base))  # one model and one data set for the four runs
    initial = bundle.adapter.get()
    data = build_federated_data(base.data, base.fl.num_clients, base.seed)
    attack = ["fl.attack.kind=sign_flip", "fl.attack.clients=[0]", "fl.attack.flip_factor=10.0"]
    dist = {}
    for rule in ("fedavg", "median"):
        ends = []
        for name, extra in (("clean", []), ("flip", attack)):
            bundle.adapter.set(initial)
            out = tmp_path / f"{rule}-{name}"
            sim = build_driver(_cfg(f"output.dir={out}", f"fl.algorithm={rule}", *extra),
                               bundle=bundle, data=data)
            sim.run()
            ends.append(sim.global_state)
        summary = json.loads((out / "summary.json").read_text())
        assert summary["resolved"]["attack"] == {"kind": "sign_flip", "malicious": [0],
                                                 "flip_factor": 10.0}
        dist[rule] = _dist(*ends)
    # one attacker in five with k = 10 outweighs the four honest clients in the mean
    assert dist["median"] < 0.25 * dist["fedavg"], dist
