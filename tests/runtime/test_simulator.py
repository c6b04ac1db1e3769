"""End to end: a few federated rounds on the tiny preset, outputs written and valid."""

import json
import math

import pytest
import torch
from helpers.oneshot_common import logits, tol
from PIL import Image

from fedmllm.config import load_config
from fedmllm.engine.bundle import build_bundle
from fedmllm.engine.factory import plan_run
from fedmllm.report.metrics import read_metrics
from fedmllm.runtime import build_driver

# (no slow mark: each test takes about a second once the shared model is loaded)


def tiny_cfg(out, *extra):
    return load_config(None, [
        "model.preset=tiny", "fl.rounds=3", "fl.num_clients=4", "fl.clients_per_round=2",
        "fl.local_steps=6", "data.train_size=160", "data.test_size=48", "eval.every=1",
        "train.lr=5e-3", f"output.dir={out}", "output.progress=false", *extra])


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_dir):
    out = tmp_path_factory.mktemp("run")
    sim = build_driver(tiny_cfg(out))
    result = sim.run()
    return sim, result, out


def test_outputs_written_and_valid(run):
    sim, _result, out = run
    for name in ("config.yaml", "metrics.jsonl", "metrics.png", "summary.json",
                 "data_manifest.json", "adapter/adapter_config.json",
                 "adapter/adapter_model.safetensors"):
        assert (out / name).is_file(), name
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["round"] for r in rows] == [1, 2, 3]
    adapter_bytes = sum(t.numel() * t.element_size() for t in sim.global_state.values())
    for r in rows:
        assert len(r["clients"]) == 2 and set(r["train_loss"]) == {str(c) for c in r["clients"]}
        assert all(math.isfinite(v) for v in r["train_loss"].values())
        assert r["bytes_uploaded"] == 2 * adapter_bytes == r["bytes_downloaded"]
        assert r["seconds"] > 0
        ev = r["eval"]
        assert 0.0 <= ev["accuracy"] <= 1.0
        assert set(ev["per_modality"]) == {"image_text", "image_only", "text_only"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final"]["accuracy"] == rows[-1]["eval"]["accuracy"]
    saved = load_config(out / "config.yaml")
    assert saved == sim.cfg
    assert (out / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_loss_falls(run):
    _, result, _ = run
    losses = [r["train_loss_mean"] for r in result.rows]
    assert losses[-1] < losses[0]


def test_saved_adapter_loads_in_peft_with_identicallogits(run):
    from peft import PeftModel

    from fedmllm.model.collate import collate, encode_sample
    from fedmllm.model.loading import load_vlm

    sim, _, out = run
    meta = json.loads((out / "adapter" / "fedmllm.json").read_text())
    dev = sim.bundle.device
    base, proc = load_vlm(meta["base_model"], device=dev, dtype=sim.bundle.dtype)
    loaded = PeftModel.from_pretrained(base, out / "adapter").eval()
    sim.bundle.adapter.set(sim.global_state)
    sim.bundle.model.eval()
    img = Image.new("RGB", (32, 32), (30, 30, 220))
    batch = collate([encode_sample(proc, "What colour is the background?", img, "blue"),
                     encode_sample(proc, "Name a shape.", None, "circle")],
                    proc.tokenizer.pad_token_id)
    batch = {k: v.to(dev) for k, v in batch.items()}
    with torch.no_grad():
        a = loaded(**batch).logits
        b = sim.bundle.model(**batch).logits
    assert torch.equal(a, b)
    # and the adapter really changed the model
    with torch.no_grad(), loaded.disable_adapter():
        c = loaded(**batch).logits
    assert not torch.allclose(a, c)


def test_model_name_path_for_a_local_folder(tmp_path, tiny_dir):
    """`model.name` with a local folder goes through the same loading code as the hub."""
    cfg = tiny_cfg(tmp_path / "out", f"model.name={tiny_dir}", "fl.rounds=1",
                   "eval.views=[image_text]")
    result = build_driver(cfg).run()
    assert result.rows[0]["eval"]["per_modality"].keys() == {"image_text"}
    meta = json.loads((tmp_path / "out" / "adapter" / "fedmllm.json").read_text())
    assert meta["base_model"] == str(tiny_dir)


def test_same_seed_same_result(tmp_path, tiny_dir):
    r1 = build_driver(tiny_cfg(tmp_path / "a", "fl.rounds=1", "eval.views=[image_text]")).run()
    r2 = build_driver(tiny_cfg(tmp_path / "b", "fl.rounds=1", "eval.views=[image_text]")).run()
    assert r1.rows[0]["train_loss"] == r2.rows[0]["train_loss"]
    assert r1.rows[0]["eval"]["accuracy"] == r2.rows[0]["eval"]["accuracy"]


def test_multi_round_pissa_init_starts_at_base_and_saves_for_the_original_base(tmp_path):
    """``lora.init=pissa``: SVD factors + residual base, so round 0's model is the base model;
    the FedAvg result is saved converted (rank 2r) and loads on the original base."""
    from peft import PeftModel

    from fedmllm.model.collate import collate, encode_sample
    from fedmllm.model.loading import load_vlm

    cfg = tiny_cfg(tmp_path, "lora.init=pissa", "fl.rounds=2", "eval.every=2",
                   "eval.views=[image_text]", "lora.modules=[q_proj,v_proj]")
    b = build_bundle(plan_run(cfg))
    initial = b.adapter.get()
    assert all(float(t.abs().sum()) > 0 for t in initial.values())  # not zero-B
    base, proc = load_vlm(b.source, device=b.device, dtype=b.dtype)
    img = Image.new("RGB", (32, 32), (220, 30, 30))
    batch = collate([encode_sample(proc, "What colour is the background?", img, "red"),
                     encode_sample(proc, "Name a shape.", None, "square")],
                    proc.tokenizer.pad_token_id)
    batch = {k: v.to(b.device) for k, v in batch.items()}
    b.adapter.set(initial)
    torch.testing.assert_close(logits(b.model, batch), logits(base, batch), **tol(b))

    trained = build_driver(cfg, bundle=b)
    result = trained.run()
    assert math.isfinite(result.final["final"]["accuracy"])
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["r"] == 2 * cfg.lora.r and saved["init_lora_weights"] is True
    meta = json.loads((tmp_path / "adapter" / "fedmllm.json").read_text())
    assert meta["converted_from_pissa"] is True
    b.adapter.set(trained.global_state)  # the run's final global adapter, on the residual base
    loaded = PeftModel.from_pretrained(base, tmp_path / "adapter")
    torch.testing.assert_close(logits(loaded, batch), logits(b.model, batch), **tol(b))
    with loaded.disable_adapter():
        assert not torch.allclose(logits(loaded, batch), logits(b.model, batch), atol=1e-5)


def test_a_clients_update_does_not_depend_on_who_trained_before(tmp_path, tiny_dir):
    """Client 3 in round 2 trains the same, bit for bit, alone or after clients 1 and 2 (LoRA
    dropout on: its draws come from the client's own seed, not from a shared generator)."""
    run = build_driver(tiny_cfg(tmp_path, "lora.dropout=0.3", "fl.local_steps=3"))
    alone = run.train_client(3, 2, 5e-3, {}).update.state
    run.train_client(1, 2, 5e-3, {})
    run.train_client(2, 2, 5e-3, {})
    after = run.train_client(3, 2, 5e-3, {}).update.state
    assert alone.keys() == after.keys()
    assert all(torch.equal(alone[k], after[k]) for k in alone)
    moved = [k for k in alone if not torch.equal(alone[k], run.global_state[k])]
    assert moved  # it did train
