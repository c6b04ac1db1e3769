"""A DP run through the Flower App (a loopback grid in this process) equals the simulation:
the server's noise (central_server) and the clients' clip (central_client) are drawn and
applied by the same engine in both, from the same seed."""

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

N = 3
BASE = loopback_base(N, eval_every=2)


def _results(out):
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return rows, load_file(out / "adapter" / "adapter_model.safetensors")


@pytest.mark.parametrize("mechanism", ["central_server", "central_client"])
def test_dp_run_over_the_flower_app_equals_the_simulation(mechanism, tmp_path, tiny_dir):
    from fedmllm.runtime.flower.app import client_app
    from fedmllm.runtime.flower.server import serve

    dp = [f"fl.privacy.mechanism={mechanism}", "fl.privacy.noise_multiplier=0.5",
          "fl.privacy.clipping_norm=0.05"]
    sim_out, fl_out = tmp_path / "sim", tmp_path / "flower"
    run_experiment(load_config(None, [*BASE, *dp, f"output.dir={sim_out}"]))
    grid = LoopbackGrid(client_app, [{"partition-id": k, "num-partitions": N}
                                     for k in range(N)])
    serve(grid, {"overrides": " ".join([*BASE, *dp, f"output.dir={fl_out}"])})
    sim_rows, a = _results(sim_out)
    fl_rows, b = _results(fl_out)
    assert [r["privacy_epsilon"] for r in fl_rows] == [r["privacy_epsilon"] for r in sim_rows]
    assert not any(r["rejected"] for r in fl_rows)  # client-clipped uploads pass the bound
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "not bitwise equal"
