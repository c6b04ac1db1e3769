"""A server that holds no client data (issue 23): over a loopback grid, the ServerApp builds only
its test set (building any client's training samples raises), the nodes read prepared folders
that hold only their own client file, and the run equals the simulation; the plan is made once
by the server and once by the ClientApp side; client-side evaluation over Flower gives the
simulation's per-client table, from metrics the nodes send (never samples)."""

import json
import os
import shutil

import pytest
from helpers.flower_loopback import LoopbackGrid, loopback_base
from helpers.own_data import prepared_part
from safetensors.torch import load_file

pytest.importorskip("flwr")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

from fedmllm.config import load_config
from fedmllm.runtime import run_experiment

pytestmark = pytest.mark.slow

N = 4
BASE = loopback_base(N, eval_every=1)


def flower_run(out, overrides, node_configs=None):
    """The ServerApp over a loopback grid of N nodes (``node_configs[k]`` added to node k's)."""
    from fedmllm.runtime.flower.app import client_app
    from fedmllm.runtime.flower.server import serve

    nodes = [{"partition-id": k, "num-partitions": N, **((node_configs or {}).get(k, {}))}
             for k in range(N)]
    grid = LoopbackGrid(client_app, nodes)
    serve(grid, {"overrides": " ".join([*overrides, f"output.dir={out}"])})
    return grid


def rows(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def manifest(out):
    return json.loads((out / "data_manifest.json").read_text())


def own_folders(tmp_path, seed: int) -> dict[int, dict]:
    """Per node, a prepared folder holding only its own client file and images."""
    return {k: {"data-dir": str(prepared_part(tmp_path / f"node{k}", (f"client_{k}.json",),
                                              seed, N, train_size=48, test_size=8))}
            for k in range(N)}


def _refuse(*_, **__):
    raise AssertionError("the server built a client's training samples")


def test_a_server_without_client_data_gives_the_simulation(tmp_path, tiny_dir, monkeypatch):
    import fedmllm.data.datasets.synth as synth_dataset
    from fedmllm import data, runtime
    from fedmllm.data import build
    from fedmllm.engine import factory
    from fedmllm.runtime.flower import client

    cfg = load_config(None, [*BASE, f"output.dir={tmp_path / 'sim'}"])
    run_experiment(cfg)
    nodes = own_folders(tmp_path, cfg.seed)
    # from here on no training sample can be built in this process: the ServerApp builds its
    # test set only, the nodes read their own folders
    real_make_synth = synth_dataset.make_synth

    def test_set_only(task, n_train, n_test, seed, **kw):
        assert n_train == 0, "the server generated training samples"
        return real_make_synth(task, n_train, n_test, seed, **kw)

    monkeypatch.setattr(synth_dataset, "make_synth", test_set_only)
    for name in ("_partition_mc", "_qa_clients", "load_prepared"):
        monkeypatch.setattr(build, name, _refuse)
    for name in ("build_federated_data", "build_client_data"):
        monkeypatch.setattr(build, name, _refuse)
        monkeypatch.setattr(data, name, _refuse)
    plans = []
    for module in (runtime, client):  # the server's start_run, the ClientApp's worker
        real = module.plan_run
        monkeypatch.setattr(module, "plan_run", lambda *a, _real=real, **k: plans.append(
            1) or _real(*a, **k))
    monkeypatch.setattr(factory, "plan_run", _refuse)  # nothing else plans
    models = []
    monkeypatch.setattr(client, "build_bundle", lambda plan, _real=client.build_bundle: (
        models.append(1), _real(plan))[1])
    flower_run(tmp_path / "flower", BASE, nodes)
    # every node this process hosts trains the one model it built, as the simulation does
    assert len(models) == 1 and len(client._WORKERS) == N

    sim, fl = tmp_path / "sim", tmp_path / "flower"
    assert len(plans) == 2  # once in the ServerApp, once for the ClientApp process's nodes
    a = load_file(sim / "adapter" / "adapter_model.safetensors")
    b = load_file(fl / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5
    assert [r["eval"]["accuracy"] for r in rows(fl)] == [r["eval"]["accuracy"] for r in rows(sim)]
    # data_manifest.json: the server's test side and every node's own counts, as simulated
    assert manifest(fl)["clients"] == manifest(sim)["clients"]
    assert manifest(fl)["test"] == manifest(sim)["test"]


@pytest.mark.parametrize("algorithm", ["fedavg", "local"])
def test_client_side_evaluation_over_flower_gives_the_simulations_table(algorithm, tmp_path,
                                                                        tiny_dir):
    extra = [*BASE, f"fl.algorithm={algorithm}", "eval.client_holdout=0.25",
             "data.min_per_client=4"]
    sim, fl = tmp_path / "sim", tmp_path / "flower"
    run_experiment(load_config(None, [*extra, f"output.dir={sim}"]))
    grid = flower_run(fl, extra)

    sim_rows, fl_rows = rows(sim), rows(fl)
    assert [r.get("client_eval") for r in fl_rows] == [r.get("client_eval") for r in sim_rows]
    if algorithm == "fedavg":  # every round's table (local-only: the final one only)
        assert all(len(r["client_eval"]["per_client"]) == N for r in fl_rows)
    final_sim = json.loads((sim / "summary.json").read_text())["final"]
    final_fl = json.loads((fl / "summary.json").read_text())["final"]
    assert final_fl["client_eval"] == final_sim["client_eval"]
    per = final_fl["client_eval"]["per_client"]
    assert len(per) == N and all(m["n"] >= 1 for m in per.values())
    held = manifest(sim)["client_holdout"]
    assert manifest(fl)["client_holdout"] == {"fraction": 0.25, "held_out": held["held_out"]}
    assert manifest(fl)["clients"] == manifest(sim)["clients"]
    # the server sent adapters to be scored; nodes answered with metrics only
    asked = [m for m in grid.sent if m.metadata.message_type == "evaluate"]
    assert asked and all(set(m.content.keys()) == {"arrays", "config"} for m in asked)


def test_an_evaluate_reply_holds_metrics_only(tmp_path, tiny_dir):
    from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

    from fedmllm.runtime.flower.client import get_worker, handle_evaluate, handle_query
    from fedmllm.runtime.flower.wire import to_record

    cfg = load_config(None, [*BASE, "eval.client_holdout=0.25", "data.min_per_client=4",
                             f"output.dir={tmp_path}"])
    text = cfg.to_yaml()
    ctx = Context(run_id=1, node_id=1, node_config={"partition-id": 1}, state=RecordDict(),
                  run_config={})
    conf = ConfigRecord({"config": text})
    who = handle_query(Message(RecordDict({"config": conf}), dst_node_id=1,
                               message_type=MessageType.QUERY), ctx).content["node"]
    worker = get_worker(text, ctx.node_config)
    assert int(who["held-out"]) == len(worker.held) >= 1
    assert int(who["num-examples"]) == len(worker.train)
    assert json.loads(str(who["data"]))["samples"] == len(worker.train) + len(worker.held)
    msg = Message(RecordDict({"arrays": to_record(worker.initial_state), "config": conf}),
                  dst_node_id=1, message_type=MessageType.EVALUATE)
    reply = handle_evaluate(msg, ctx).content
    assert list(reply.keys()) == ["metrics"] and list(reply["metrics"].keys()) == ["client-eval"]
    metrics = json.loads(str(reply["metrics"]["client-eval"]))
    assert set(metrics) <= {"n", "accuracy", "macro_f1", "auroc"}
    assert metrics["n"] == len(worker.held)
    shutil.rmtree(tmp_path, ignore_errors=True)
