"""A DP run end to end on the tiny model: every round's epsilon in ``metrics.jsonl`` is the
accountant's, ``summary.json`` and the model card carry the privacy spent, and the noise of a
central mechanism really moves the adapter (from the seed: again the same)."""

import json

import pytest
import torch
from helpers.flower_loopback import loopback_base
from safetensors.torch import load_file

from fedmllm.config import load_config
from fedmllm.fl.privacy import Accountant
from fedmllm.runtime import run_experiment

BASE = loopback_base(3, eval_every=2)


def run(out, *extra):
    run_experiment(load_config(None, [*BASE, f"output.dir={out}", *extra]))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    return rows, summary, load_file(out / "adapter" / "adapter_model.safetensors")


@pytest.mark.slow
def test_central_dp_run_records_epsilon_everywhere_and_its_noise_is_seeded(tmp_path, tiny_dir):
    dp = ["fl.algorithm=fedadam", "fl.privacy.mechanism=central_server",
          "fl.privacy.noise_multiplier=0.8", "fl.privacy.clipping_norm=0.05"]
    rows, summary, noisy = run(tmp_path / "dp", *dp)
    acc = Accountant("central_server", 0.8, delta=1e-5, sampling="without_replacement",
                     num_clients=3, clients_per_round=2)
    assert [r["privacy_epsilon"] for r in rows] == [acc.epsilon(1), acc.epsilon(2)]
    p = summary["privacy"]
    assert p["epsilon"] == acc.epsilon(2) == p["planned_epsilon"] and p["delta"] == 1e-5
    assert p["mechanism"] == "central_server" and p["noise_multiplier"] == 0.8
    assert p["clipping_norm"] == 0.05 and p["sampling"] == "without_replacement"
    assert p["accountant"] == acc.describe()
    card = (tmp_path / "dp" / "adapter" / "README.md").read_text()
    assert "## Privacy" in card and f"{acc.epsilon(2):.4g}, 1e-05" in card
    _, _, again = run(tmp_path / "again", *dp)
    assert all(torch.equal(noisy[k], again[k]) for k in noisy)
    _, _, clip_only = run(tmp_path / "clip", *dp[:2], "fl.privacy.clipping_norm=0.05")
    assert max(float((noisy[k] - clip_only[k]).abs().max()) for k in noisy) > 1e-4


def test_local_dp_run_under_a_robust_rule(tmp_path, tiny_dir):
    rows, summary, _ = run(tmp_path, "fl.algorithm=median", "fl.clients_per_round=3",
                           "fl.privacy.mechanism=local", "fl.privacy.noise_multiplier=2",
                           "fl.privacy.clipping_norm=0.1", "fl.privacy.sampling=poisson")
    acc = Accountant("local", 2.0, delta=1e-5, sampling="poisson", num_clients=3,
                     clients_per_round=3)
    assert [r["privacy_epsilon"] for r in rows] == [acc.epsilon(1), acc.epsilon(2)]
    assert summary["privacy"]["releases"] == 2 and not any(r["rejected"] for r in rows)
    card = (tmp_path / "adapter" / "README.md").read_text()
    assert "## Privacy" in card and "- Mechanism: local (noise multiplier 2," in card
