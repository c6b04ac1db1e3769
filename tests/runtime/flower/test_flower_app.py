"""The Flower App's logic in one process (a loopback grid): the same configuration and seed give
the same final adapter through the simulation and through the ServerApp/ClientApp messages, and
the App survives clients that drop out or lose their state."""

import json
import os

import pytest
import torch
from helpers.flower_loopback import LoopbackGrid, loopback_base
from safetensors.torch import load_file

pytest.importorskip("flwr")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

from fedmllm.config import load_config
from fedmllm.runtime import run_experiment

pytestmark = pytest.mark.slow

N = 4
BASE = loopback_base(N, eval_every=2)


def flower_run(out, *extra, grid_hook=None):
    """The ServerApp over a loopback grid of N nodes; returns (grid, summary)."""
    from fedmllm.runtime.flower.app import client_app
    from fedmllm.runtime.flower.server import serve

    nodes = [{"partition-id": k, "num-partitions": N} for k in range(N)]
    grid = LoopbackGrid(client_app, nodes)
    if grid_hook is not None:
        grid_hook(grid)
    serve(grid, {"overrides": " ".join([*BASE, *extra, f"output.dir={out}"])})
    return grid, json.loads((out / "summary.json").read_text())


def adapter(out):
    return load_file(out / "adapter" / "adapter_model.safetensors")


@pytest.mark.parametrize("algorithm", ["fedavg", "fedadam", "scaffold"])
def test_same_adapter_through_the_simulation_and_the_flower_app(algorithm, tmp_path, tiny_dir):
    sim_out, fl_out = tmp_path / "sim", tmp_path / "flower"
    run_experiment(load_config(None, [*BASE, f"fl.algorithm={algorithm}",
                                      f"output.dir={sim_out}"]))
    _, summary = flower_run(fl_out, f"fl.algorithm={algorithm}")
    a, b = adapter(sim_out), adapter(fl_out)
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= 1e-5, worst
    sim_rows = [json.loads(x) for x in (sim_out / "metrics.jsonl").read_text().splitlines()]
    fl_rows = [json.loads(x) for x in (fl_out / "metrics.jsonl").read_text().splitlines()]
    assert [r["clients"] for r in fl_rows] == [r["clients"] for r in sim_rows]
    assert fl_rows[-1]["eval"]["accuracy"] == sim_rows[-1]["eval"]["accuracy"]
    # bytes counted on the wire: float32 payloads plus keys and numpy headers
    for fr, sr in zip(fl_rows, sim_rows, strict=True):
        assert sr["bytes_uploaded"] < fr["bytes_uploaded"] < 1.2 * sr["bytes_uploaded"]
        assert sr["bytes_downloaded"] <= fr["bytes_downloaded"] < 1.2 * sr["bytes_downloaded"]
    assert summary["final"]["accuracy"] == fl_rows[-1]["eval"]["accuracy"]


def test_a_client_that_does_not_reply_is_dropped_and_the_round_goes_on(tmp_path, tiny_dir):
    def kill_node_of_partition_1(grid):
        grid.dead.add(2)  # node 2 holds partition 1

    flower_run(tmp_path, "fl.clients_per_round=4", "fl.round_timeout=1",
                         grid_hook=kill_node_of_partition_1)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        assert r["dropped"] == [1] and r["clients"] == [0, 1, 2, 3]
        assert sorted(r["train_loss"]) == ["0", "2", "3"] and not r["skipped"]


def test_scaffold_state_survives_a_restarted_node(tmp_path, tiny_dir):
    """A node that lost its c_i (its process restarted) says so, is skipped once, then gets
    its state back from the server's mirror; the server's c stays the mean of the c_i."""
    from fedmllm.runtime.flower.app import client_app
    from fedmllm.runtime.flower.server import grid_clients
    from fedmllm.runtime.simulation import MultiRoundRun

    nodes = [{"partition-id": k, "num-partitions": N} for k in range(N)]
    grid = LoopbackGrid(client_app, nodes)
    captured = {}
    original = MultiRoundRun.run_round

    def run_round(self, r, progress):
        if r == 2:
            grid.restart(3)  # partition 2's node loses its context
        row = original(self, r, progress)
        captured["run"] = self
        return row

    cfg = load_config(None, [*BASE, "fl.algorithm=scaffold", "fl.clients_per_round=4",
                             "fl.rounds=3", f"output.dir={tmp_path}"])
    MultiRoundRun.run_round = run_round
    try:
        run_experiment(cfg, clients=grid_clients(grid))
    finally:
        MultiRoundRun.run_round = original
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert "dropped" not in rows[0] and rows[1]["dropped"] == [2] and "dropped" not in rows[2]
    sent = [m for m in grid.sent if m.metadata.dst_node_id == 3
            and m.metadata.message_type == "train"]
    assert ["restore" in m.content for m in sent] == [False, False, True]
    run = captured["run"]
    control = run.strategy.server_extras()["control"]
    for key, c in control.items():
        kept = [run.client_states.get(i).get(key) for i in range(N)]
        mean = sum(t.double() for t in kept if t is not None) / N
        torch.testing.assert_close(c.double(), mean, atol=1e-6, rtol=1e-5)
    # and the node's own c_i after round 3 (accepted, so kept at its next message) equals
    # the server's mirror
    from fedmllm.runtime.flower.client import PENDING
    from fedmllm.runtime.flower.wire import from_record

    assert rows[2]["rejected"] == [] and not rows[2]["skipped"]
    own = from_record(grid.contexts[3].state[PENDING])
    mirror = run.client_states.get(2)
    assert own.keys() == mirror.keys()
    assert all(torch.equal(own[k], mirror[k].cpu()) for k in own)


def test_yoco_one_shot_through_the_flower_app_matches_the_simulation(tmp_path, tiny_dir):
    extra = ["fl.algorithm=yoco", "fl.yoco.local_epochs=1", "fl.yoco.targets=lora",
             "lora.modules=[q_proj,v_proj]", "data.min_per_client=4", "train.batch_size=4",
             "fl.yoco.select_epochs=[0.5,1]"]
    sim_out, fl_out = tmp_path / "sim", tmp_path / "flower"
    run_experiment(load_config(None, [*BASE, *extra, f"output.dir={sim_out}"]))
    flower_run(fl_out, *extra)
    a, b = adapter(sim_out), adapter(fl_out)
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5
    sim_row = json.loads((sim_out / "metrics.jsonl").read_text())
    fl_row = json.loads((fl_out / "metrics.jsonl").read_text())
    assert fl_row["local_epochs"] == sim_row["local_epochs"]
    assert fl_row["val_loss"] == sim_row["val_loss"]
    assert fl_row["held_out"] == sim_row["held_out"] and sim_row["held_out"]
    assert fl_row["eval"]["accuracy"] == sim_row["eval"]["accuracy"]


def test_local_only_over_flower_trains_every_node_and_calibrates_on_the_nodes(tmp_path,
                                                                              tiny_dir):
    """fl.local_clients = all over Flower: every node trains in every round, as in the
    simulation; with eval.threshold = calibrated each node sends its threshold counts (no
    sample) and the thresholds, compute and figures are the simulation's."""
    extra = ["fl.algorithm=local", "eval.client_holdout=0.25", "eval.threshold=calibrated"]
    sim_out = tmp_path / "sim"
    run_experiment(load_config(None, [*BASE, *extra, f"output.dir={sim_out}"]))
    _, summary = flower_run(tmp_path / "flower", *extra)
    sim = json.loads((sim_out / "summary.json").read_text())
    rows = [json.loads(x) for x in (tmp_path / "flower" / "metrics.jsonl").read_text()
            .splitlines()]
    assert all(r["clients"] == list(range(N)) for r in rows)
    assert summary["compute"] == sim["compute"] == {"client_steps": 2 * N * 2,
                                                    "client_runs": 2 * N}  # rounds x N x steps
    got, want = summary["final"]["client_eval"], sim["final"]["client_eval"]
    assert {k: m["threshold"] for k, m in got["per_client"].items()} == \
        {k: m["threshold"] for k, m in want["per_client"].items()}
    assert all("threshold_counts" not in m for m in got["per_client"].values())
    assert summary["final"]["accuracy_calibrated"] == pytest.approx(
        sim["final"]["accuracy_calibrated"], abs=1e-9)
