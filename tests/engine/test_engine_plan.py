"""The run plan: the model a configuration resolves to (before anything loads), the refusals of a
Flower run written once in ``plan_run``, and ``plan_run`` made once per process (the simulation,
the one-shot run, ``fedmllm flower local``'s launcher, and the Flower ServerApp with its nodes)."""

import json
import os

import pytest
import torch

from fedmllm.config import ConfigError, load_config
from fedmllm.engine import factory
from fedmllm.engine.factory import plan_run

TINY = ["model.preset=tiny", "train.device=cpu", "model.dtype=float32", "lora.dropout=0.1",
        "fl.num_clients=2", "fl.clients_per_round=2", "fl.local_steps=1", "fl.rounds=1",
        "data.train_size=16", "data.test_size=4", "eval.views=[image_text]",
        "output.plot=false", "output.progress=false"]


@pytest.fixture
def plans(monkeypatch):
    """Every ``plan_run`` call from here on, as ``"flower"`` (a federation's checks ran) or
    ``"plain"``, counted through the one check every plan makes first."""
    calls: list[str] = []
    first, flower = factory._check_algorithm, factory._check_flower

    def counted(cfg):
        calls.append("plain")
        return first(cfg)

    def counted_flower(cfg, supernodes):
        calls[-1] = "flower"
        return flower(cfg, supernodes)

    monkeypatch.setattr(factory, "_check_algorithm", counted)
    monkeypatch.setattr(factory, "_check_flower", counted_flower)
    return calls


def test_the_plan_resolves_the_model_without_loading_it(tmp_path, monkeypatch):
    from fedmllm.model.tiny.presets import recipe_dir

    monkeypatch.setenv("FEDMLLM_CACHE", str(tmp_path))  # nothing is built: the folder is named
    m = plan_run(load_config(None, ["train.device=cpu"])).model
    assert (m.source, m.preset) == (str(recipe_dir("tiny", True)), ("tiny", True))
    assert (m.device, m.dtype, m.autocast, m.input_dtype) == (torch.device("cpu"),
                                                             torch.float32, None, torch.float32)
    assert not any(tmp_path.iterdir())
    m = plan_run(load_config(None, ["model.name=fedmllm-preset:small-init", "seed=3",
                                    "model.modules_to_save=[lm_head]"])).model
    assert (m.source, m.preset) == (str(recipe_dir("small", False)), ("small", False))
    assert (m.seed, m.modules_to_save) == (3, ("lm_head",))
    m = plan_run(load_config(None, ["model.name=org/some-vlm", "model.dtype=bfloat16"])).model
    assert (m.source, m.preset, m.dtype) == ("org/some-vlm", None, torch.bfloat16)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_this_machine_lacks_is_refused_by_the_plan(tmp_path):
    cfg = load_config(None, ["train.device=cuda", f"output.dir={tmp_path / 'x'}"])
    with pytest.raises(ConfigError, match=r"^train.device: 'cuda' requested but CUDA is not "):
        plan_run(cfg)


@pytest.mark.parametrize(("overrides", "supernodes", "words"), [
    (["fl.algorithm=centralized"], None, "fl.algorithm: centralized pools every client's data"),
    (["fl.algorithm=Centralized"], 2, "fl.algorithm: centralized pools every client's data"),
    (["fl.num_clients=3"], 2, ("fl.num_clients: 3, but --supernodes 2: every SuperNode is one "
                               "client")),
])
def test_what_a_federation_cannot_do_is_refused_by_the_plan(overrides, supernodes, words):
    cfg = load_config(None, ["fl.num_clients=2", *overrides])
    plan_run(load_config(None, ["fl.num_clients=2", *overrides]))  # fine in the simulator
    with pytest.raises(ConfigError) as e:
        plan_run(cfg, over_flower=True, supernodes=supernodes)
    assert str(e.value).startswith(words) and "\n" not in str(e.value)


def test_client_side_evaluation_is_planned_over_flower():
    """Each node scores its own held-out samples (runtime/flower/client.py)."""
    cfg = load_config(None, ["fl.num_clients=2", "eval.client_holdout=0.2"])
    assert plan_run(cfg, over_flower=True, supernodes=2).driver == "multiround"


def test_the_launcher_plans_once_and_refuses_before_opening_a_folder(tmp_path, plans):
    from fedmllm.runtime.flower.launch import open_folder

    bad = load_config(None, [*TINY, "fl.num_clients=3", f"output.dir={tmp_path / 'bad'}"])
    with pytest.raises(ConfigError, match="--supernodes 2"):
        open_folder(bad, 2, resume=None, overwrite=False)
    assert not (tmp_path / "bad").exists() and plans == ["flower"]
    folder = open_folder(load_config(None, [*TINY, f"output.dir={tmp_path / 'run'}"]), 2,
                         resume=None, overwrite=False)
    assert folder.status()["status"] == "launching" and plans == ["flower", "flower"]


@pytest.mark.slow
def test_a_run_on_a_shared_model_plans_once(plain, plans, tmp_path):
    from helpers.oneshot_common import run

    run(plain, tmp_path, "fl.yoco.method=fedavg")
    assert plans == ["plain"]


@pytest.mark.slow
def test_a_run_plans_once(tmp_path, tiny_dir, plans):
    """``fedmllm run`` (multi-round) and a one-shot run whose full-rank export rebuilds the
    model: one plan each, passed along."""
    from fedmllm.cli import main
    from fedmllm.runtime import run_experiment

    assert main(["run", "--quiet", *TINY, f"output.dir={tmp_path / 'multi'}"]) == 0
    assert plans == ["plain"]
    run_experiment(load_config(None, [*TINY, "fl.algorithm=yoco", "fl.yoco.method=exact",
                                      "fl.yoco.product_rank=full", "fl.yoco.local_epochs=1",
                                      "data.min_per_client=4", "train.batch_size=4",
                                      f"output.dir={tmp_path / 'oneshot'}"]))
    assert plans == ["plain", "plain"]
    assert json.loads((tmp_path / "oneshot" / "summary.json").read_text())["final"]


@pytest.mark.slow
def test_the_flower_server_app_and_its_nodes_plan_once(tmp_path, tiny_dir, plans):
    """Over a loopback grid (the ServerApp and its two nodes in this one process): the
    ServerApp plans once with the federation's checks, and the nodes share one plan, made as a
    Flower run's too (so a node accepts what only runs over Flower: fl.secure_aggregation)."""
    from helpers.flower_loopback import LoopbackGrid

    pytest.importorskip("flwr")
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    from fedmllm.runtime.flower.app import client_app
    from fedmllm.runtime.flower.server import serve

    grid = LoopbackGrid(client_app, [{"partition-id": k, "num-partitions": 2} for k in (0, 1)])
    serve(grid, {"overrides": " ".join([*TINY, f"output.dir={tmp_path}"])})
    assert (tmp_path / "summary.json").is_file()
    assert plans == ["flower", "flower"]


def test_local_only_states_which_clients_train_and_sampled_is_for_local_only():
    """fl.local_clients: its note says who trains; 'sampled' with another rule is one line."""
    from fedmllm.report.console import run_header

    cfg = load_config(None, ["fl.algorithm=local"])
    plan = plan_run(cfg)
    assert "fl.local_clients = all: every one of the 10 clients trains in every round" in \
        plan.notes
    assert ("24 rounds x 10 of 10 clients x 6 steps (fl.local_clients = all) = 1440 client "
            "steps") in "\n".join(run_header(cfg, plan, "out"))
    cfg = load_config(None, ["fl.algorithm=local", "fl.local_clients=sampled"])
    plan = plan_run(cfg)
    assert ("fl.local_clients = sampled: only the 4 of 10 clients sampled each round train"
            in plan.notes)
    assert "24 rounds x 4 of 10 clients x 6 steps (fl.local_clients = sampled) = 576 client " \
        "steps" in "\n".join(run_header(cfg, plan, "out"))
    with pytest.raises(ConfigError, match=r"^fl.local_clients: 'sampled' is for local-only "
                                          r"training \(fl.algorithm=local\); fedavg [^\n]*$"):
        plan_run(load_config(None, ["fl.local_clients=sampled"]))
