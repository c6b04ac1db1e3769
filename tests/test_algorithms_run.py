"""Every algorithm and client objective runs end to end in the simulator on the tiny preset."""

import math

import pytest
import torch

from fedmllm.config import load_config
from fedmllm.fl import ALGORITHMS
from fedmllm.runtime import Simulator
from fedmllm.runtime.setup import load_for_training

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared(tiny_dir, tmp_path_factory):
    """One loaded model and one dataset for all runs (the adapter is reset before each)."""
    from fedmllm.data import build_federated_data

    cfg = base_cfg(tmp_path_factory.mktemp("o"))
    bundle = load_for_training(cfg)
    pristine = bundle.adapter.get()
    data = build_federated_data(cfg.data, cfg.fl.num_clients, cfg.seed)
    return bundle, pristine, data


def base_cfg(out, *extra):
    return load_config(None, [
        "model.preset=tiny", "fl.rounds=2", "fl.num_clients=4", "fl.clients_per_round=2",
        "fl.local_steps=2", "data.train_size=64", "data.test_size=16", "eval.every=1",
        "eval.views=[image_text]", f"output.dir={out}", "output.progress=false",
        "output.plot=false", *extra])


def run(shared, out, *extra):
    bundle, pristine, data = shared
    bundle.adapter.set(pristine)
    return Simulator(base_cfg(out, *extra), bundle=bundle, data=data).run()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_each_algorithm_completes(algorithm, shared, tmp_path):
    result = run(shared, tmp_path, f"fl.algorithm={algorithm}")
    final = result.final["final"]
    assert 0.0 <= final["accuracy"] <= 1.0
    if algorithm == "zeroshot":
        assert result.rows == [] and result.final["totals"]["bytes_uploaded"] == 0
        return
    assert [r["round"] for r in result.rows] == [1, 2]
    assert all(math.isfinite(v) for r in result.rows for v in r["train_loss"].values())
    if algorithm == "local":
        assert "accuracy_std" in final and final["per_client"]
        assert result.final["totals"]["bytes_uploaded"] == 0
    else:
        assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
        assert result.final["totals"]["bytes_uploaded"] > 0
    if algorithm == "scaffold":  # control variates travel both ways
        adapter = result.final["totals"]["adapter_bytes"]
        assert result.rows[1]["bytes_uploaded"] == 2 * 2 * adapter


@pytest.mark.parametrize("objective", ["prox", "adaptive_prox"])
def test_client_objectives_change_training(objective, shared, tmp_path):
    plain = run(shared, tmp_path / "a", "fl.client.prox_mu=0", "fl.client.s_layer=0",
                f"fl.client.objective={objective}")
    strong = run(shared, tmp_path / "b", "fl.client.prox_mu=100", "fl.client.mu_w=1",
                 "fl.client.s_layer=0", f"fl.client.objective={objective}")
    ce = run(shared, tmp_path / "c")
    # mu = 0 is plain cross-entropy; a strong pull changes the client losses
    assert plain.rows[0]["train_loss"] == ce.rows[0]["train_loss"]
    assert strong.rows[1]["train_loss"] != ce.rows[1]["train_loss"]


def test_rejected_update_skips_round(shared, tmp_path):
    _bundle, pristine, _ = shared
    result = run(shared, tmp_path, "fl.max_update_norm=1e-12", "fl.min_clients=1")
    row = result.rows[0]
    assert row["skipped"] and len(row["rejected"]) == 2
    assert "norm" in row["rejected"][0]["reason"]
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    for k, v in pristine.items():
        assert torch.equal(saved[k], v.cpu())


@pytest.mark.parametrize(("algorithm", "objective"), [("scaffold", "prox"), ("fedavg", "scaffold"),
                                                      ("fedavg", "yoco")])
def test_mismatched_objective_is_refused_before_training(algorithm, objective):
    """SCAFFOLD needs its own client side (and nothing else does); YOCO's objective is one-shot."""
    from fedmllm.config import ConfigError
    from fedmllm.runtime.simulator import make_algorithm

    cfg = load_config(None, [f"fl.algorithm={algorithm}", f"fl.client.objective={objective}"])
    with pytest.raises(ConfigError, match="fl.client.objective"):
        make_algorithm(cfg, num_layers=2)
