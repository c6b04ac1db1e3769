"""A real loopback federation (``fedmllm flower local``: SuperLink, 2 SuperNodes, processes)
whose ServerApp cannot read any client's training samples: its dataset is a prepared folder
that holds only ``manifest.json`` and the test split, each node's ``data-dir`` a folder holding
only its own client file. The run completes, writes the simulation's adapter (<= 1e-5), its
per-client table of client-side evaluation and the nodes' counts in ``data_manifest.json``."""

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers.own_data import prepared_part
from safetensors.torch import load_file

pytest.importorskip("flwr")

from fedmllm.config import load_config
from fedmllm.runtime import run_experiment

pytestmark = [pytest.mark.processes, pytest.mark.slow]

SEED, N = 4, 2
BASE = ["model.preset=tiny", "train.device=cpu", "model.dtype=float32", f"seed={SEED}",
        f"fl.num_clients={N}", "fl.clients_per_round=2", "fl.local_steps=2", "fl.rounds=2",
        "eval.every=1", "eval.views=[image_text]", "eval.client_holdout=0.25",
        "output.plot=false", "output.progress=false"]
DATA = {"train_size": 40, "test_size": 8, "min_per_client": 4}


def test_a_federation_whose_server_cannot_read_client_data(tmp_path, tiny_dir):
    full = prepared_part(tmp_path / "full", tuple(f"client_{k}.json" for k in range(N))
                         + ("test.json",), SEED, N, **DATA)
    server = prepared_part(tmp_path / "server", ("test.json",), SEED, N, **DATA)
    # nodes: one folder, as `--data-dir` gives every node the same (node k reads client_k)
    nodes = prepared_part(tmp_path / "nodes", tuple(f"client_{k}.json" for k in range(N)),
                          SEED, N, **DATA)
    assert not list(server.glob("client_*")) and not (nodes / "test.json").exists()

    sim = tmp_path / "sim"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the N ClientApps on this machine's cores (flower local)
    try:
        run_experiment(load_config(None, [*BASE, f"data.prepared={full}", f"output.dir={sim}"]))
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "flower"
    done = subprocess.run(
        [sys.executable, "-m", "fedmllm.cli", "flower", "local", "--supernodes", str(N),
         "--insecure", "--data-dir", str(nodes), *BASE, f"data.prepared={server}",
         f"output.dir={out}"],
        capture_output=True, text=True, timeout=900, check=False,
        env={**os.environ, "FLWR_HOME": str(tmp_path / "flwr-home")})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    a = load_file(sim / "adapter" / "adapter_model.safetensors")
    b = load_file(out / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5
    sim_rows, fl_rows = ([json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
                         for d in (sim, out))
    assert [r["client_eval"] for r in fl_rows] == [r["client_eval"] for r in sim_rows]
    assert all(len(r["client_eval"]["per_client"]) == N for r in fl_rows)
    fl_manifest = json.loads((out / "data_manifest.json").read_text())
    sim_manifest = json.loads((sim / "data_manifest.json").read_text())
    assert fl_manifest["clients"] == sim_manifest["clients"]
    assert fl_manifest["client_holdout"]["held_out"] == \
        sim_manifest["client_holdout"]["held_out"]
