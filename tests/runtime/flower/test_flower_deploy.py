"""fedmllm over a real Flower deployment on loopback (SuperLink + 2 SuperNodes, processes).
The tests that need no fresh federation share one (FedAvg and FedAdam, then the killed node).

- ``fedmllm flower local`` with TLS: the ServerApp killed with SIGKILL after round 1's
  checkpoint, then ``--resume``: the final adapter equals the in-process simulation's (SCAFFOLD,
  so the clients' own state and its restore after the resume are exercised too), and no
  process is left behind.
- FedAvg and FedAdam through one federation give the simulation's adapters.
- A SuperNode killed with SIGKILL during a round: the round ends at ``fl.round_timeout`` with
  the reply that arrived, ``metrics.jsonl`` records the dropped client, and the restarted node
  trains again in the next round.
"""

import json
import os
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

pytest.importorskip("flwr")

from helpers.flower_faults import kill_supernode, restart_supernode

from fedmllm.config import load_config
from fedmllm.runtime import run_experiment
from fedmllm.runtime.flower.local import pid_alive

pytestmark = pytest.mark.processes  # each test starts fedmllm or a federation

BASE = ["model.preset=tiny", "train.device=cpu", "model.dtype=float32", "lora.dropout=0.1",
        "fl.num_clients=2", "fl.clients_per_round=2", "fl.local_steps=2", "fl.rounds=2",
        "data.train_size=48", "data.test_size=8", "eval.every=2", "eval.views=[image_text]",
        "output.plot=false", "output.progress=false"]


def simulated(out, *extra):
    run_experiment(load_config(None, [*BASE, *extra, f"output.dir={out}"]))
    return load_file(out / "adapter" / "adapter_model.safetensors")


def max_difference(out, reference):
    got = load_file(out / "adapter" / "adapter_model.safetensors")
    assert got.keys() == reference.keys()
    return max(float((got[k] - reference[k]).abs().max()) for k in got)


def rows(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def recorded_pids(out):
    rec = json.loads((out / "flower" / "processes.json").read_text())
    pids = [rec["superlink"]]
    for node in rec["supernodes"]:
        pids += [node["pid"], node.get("clientapp_worker_pid")]
    return [p for p in pids if p]


def alive(pid):
    return pid_alive(pid)  # a zombie is gone for our purpose


def fedmllm(*args, env=None):
    return subprocess.run([sys.executable, "-m", "fedmllm.cli", *args], capture_output=True,
                          text=True, timeout=900, env={**os.environ, **(env or {})},
                          check=False)


@pytest.mark.slow
def test_flower_local_killed_server_resumes_to_the_simulated_adapter(tmp_path, tiny_dir):
    out = tmp_path / "flower"
    args = ["flower", "local", "--supernodes", "2", *BASE, "fl.algorithm=scaffold",
            f"output.dir={out}"]
    first = fedmllm(*args, env={"FEDMLLM_FAILPOINT": "round_checkpointed:1"})
    assert first.returncode == 2, first.stdout + first.stderr
    assert f"--resume {out}" in first.stderr
    assert (out / "checkpoint" / "000001").is_dir() and not (out / "summary.json").exists()
    assert len(rows(out)) == 1
    time.sleep(0.5)
    assert not any(alive(p) for p in recorded_pids(out))
    second = fedmllm("flower", "local", "--supernodes", "2", "--resume", str(out))
    assert second.returncode == 0, second.stdout + second.stderr
    assert "round" in second.stdout and "finished" in second.stdout
    assert [r["round"] for r in rows(out)] == [1, 2]
    assert json.loads((out / "summary.json").read_text())["totals"]["resumed_after_rounds"] == [1]
    # TLS and SuperNode authentication were on
    assert (out / "flower" / "certs" / "ca.crt").is_file()
    assert max_difference(out, simulated(tmp_path / "sim", "fl.algorithm=scaffold")) <= 1e-5
    time.sleep(0.5)
    assert not any(alive(p) for p in recorded_pids(out))


@pytest.fixture(scope="module")
def federation(tmp_path_factory, tiny_dir):
    """One insecure 2-node federation with warm ClientApps, shared by the tests that need no
    fresh one (they leave it as they found it: a killed node is restarted)."""
    from fedmllm.runtime.flower.launch import write_app
    from fedmllm.runtime.flower.local import start_federation

    root = tmp_path_factory.mktemp("shared-fed")
    with start_federation(root / "fed", 2, insecure=True, clientapp="warm") as fed:
        yield fed, write_app(root / "fed" / "flower" / "app")


#: the tests on the shared federation run on one xdist worker, one after the other
SHARED = pytest.mark.xdist_group("flower-deploy-shared-federation")


@pytest.mark.slow
@SHARED
def test_fedavg_and_fedadam_over_one_federation_match_the_simulation(federation, tmp_path):
    from fedmllm.runtime.flower.launch import open_folder

    fed, app = federation
    for algorithm in ("fedavg", "fedadam"):
        out = tmp_path / algorithm
        cfg = load_config(None, [*BASE, f"fl.algorithm={algorithm}", f"output.dir={out}"])
        open_folder(cfg, 2, resume=None, overwrite=False)
        result = fed.run_app(app, {"config-file": str(out / "config.yaml"),
                                   "output.dir": str(out)}, timeout=600)
        assert result.ok, result.log_text[-2000:]
        reference = simulated(tmp_path / f"sim-{algorithm}", f"fl.algorithm={algorithm}")
        assert max_difference(out, reference) <= 1e-5
        fl_rows, sim_rows = rows(out), rows(tmp_path / f"sim-{algorithm}")
        assert [r["train_loss"] for r in fl_rows] == [r["train_loss"] for r in sim_rows]


@pytest.mark.slow
@SHARED
def test_central_dp_over_the_federation_matches_the_simulation(federation, tmp_path):
    """The server's DP noise (fl.privacy, drawn from the run's seed) over real processes: the
    adapter the simulation gives, and the same epsilon in every row."""
    from fedmllm.runtime.flower.launch import open_folder

    fed, app = federation
    dp = ["fl.privacy.mechanism=central_server", "fl.privacy.noise_multiplier=0.5",
          "fl.privacy.clipping_norm=0.05"]
    out = tmp_path / "dp"
    cfg = load_config(None, [*BASE, *dp, f"output.dir={out}"])
    open_folder(cfg, 2, resume=None, overwrite=False)
    result = fed.run_app(app, {"config-file": str(out / "config.yaml"), "output.dir": str(out)},
                         timeout=600)
    assert result.ok, result.log_text[-2000:]
    reference = simulated(tmp_path / "sim", *dp)
    assert max_difference(out, reference) <= 1e-5
    fl_rows, sim_rows = rows(out), rows(tmp_path / "sim")
    assert [r["privacy_epsilon"] for r in fl_rows] == [r["privacy_epsilon"] for r in sim_rows]
    assert [r["train_loss"] for r in fl_rows] == [r["train_loss"] for r in sim_rows]


@pytest.mark.slow
@SHARED
def test_a_killed_supernode_is_dropped_and_rejoins(federation, tmp_path):
    from fedmllm.runtime.flower.launch import open_folder

    fed, app = federation
    out = tmp_path / "run"
    # round 1 loads the model in each node's warm ClientApp: 35 s seen on a loaded 2-core
    # machine, so a shorter timeout drops both nodes there
    cfg = load_config(None, [*BASE, "fl.rounds=3", "fl.round_timeout=40", "eval.every=3",
                             f"output.dir={out}"])
    open_folder(cfg, 2, resume=None, overwrite=False)
    run = fed.submit_app(app, {"config-file": str(out / "config.yaml"),
                               "output.dir": str(out)})
    deadline = time.time() + 300
    while not (out / "metrics.jsonl").is_file() or not rows(out):
        assert time.time() < deadline and run.proc.alive()
        time.sleep(0.2)
    kill_supernode(fed, 1)  # round 2 has just been sent
    restart_supernode(fed, 1)
    result = run.wait(600)
    assert result.ok, result.log_text[-2000:]
    got = rows(out)
    assert [r["round"] for r in got] == [1, 2, 3]
    assert "dropped" not in got[0] and got[1]["dropped"] == [1]
    assert sorted(got[1]["train_loss"]) == ["0"] and not got[1]["skipped"]
    assert "dropped" not in got[2] and sorted(got[2]["train_loss"]) == ["0", "1"]
    assert json.loads((out / "run.json").read_text())["status"] == "finished"


def test_flower_local_refuses_a_mismatched_client_count_before_starting(tmp_path):
    proc = fedmllm("flower", "local", "--supernodes", "2", "fl.num_clients=3",
                   f"output.dir={tmp_path / 'x'}")
    assert proc.returncode == 2 and "fl.num_clients" in proc.stderr
    assert proc.stderr.count("\n") == 1 and not (tmp_path / "x").exists()
