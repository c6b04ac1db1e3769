"""The pieces of the YOCO study (benchmarks/grids/yoco.toml): the spectrum diagnostic, the
structured base's recipe and corpus, and the bench's gate, extra metrics and notes."""

import json

import pytest
import torch

from fedmllm.bench.grid import load_grid
from fedmllm.bench.report import build_report
from fedmllm.config import ConfigError
from fedmllm.fl import spectral_gap


def test_spectral_gap_by_hand():
    # W = U diag(s) V^T with s = 8, 4, 2, 1: at r = 2, s1/s2 = 2, gap s2/s3 = 2,
    # energy (64 + 16) / (64 + 16 + 4 + 1) = 80 / 85
    u, _ = torch.linalg.qr(torch.randn(6, 4, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(5, 4, dtype=torch.float64))
    w = u @ torch.diag(torch.tensor([8.0, 4, 2, 1], dtype=torch.float64)) @ v.T
    rep = spectral_gap({"m": w, "n": 2 * w}, r=2)
    assert rep["modules"]["m"] == pytest.approx({"s1_sr": 2.0, "gap": 2.0, "energy": 80 / 85})
    assert rep["median"] == pytest.approx({"s1_sr": 2.0, "gap": 2.0, "energy": 80 / 85})
    assert spectral_gap({"m": w}, r=5)["modules"] == {}  # 5 singular values: no s_6
    # the median of an even count is the mean of the middle two: energy at r = 1 is 64/85 for
    # w and 64.00390625/85.00390625 for w2 (s = 8, 0.0625 ...); s1/s1 = 1 for both
    w2 = u @ torch.diag(torch.tensor([8.0, 0.0625, 0.03125, 0.015625],
                                     dtype=torch.float64)) @ v.T
    med = spectral_gap({"a": w, "b": w2}, r=1)["median"]
    e2 = 64 / (64 + 0.0625 ** 2 + 0.03125 ** 2 + 0.015625 ** 2)
    assert med["energy"] == pytest.approx((64 / 85 + e2) / 2)
    assert med["gap"] == pytest.approx((2.0 + 128.0) / 2)
    with pytest.raises(ValueError):
        spectral_gap({"m": w}, r=0)


def test_structured_preset_leaves_the_other_recipes_alone():
    from fedmllm.model.tiny.corpus import make_pretrain_corpus
    from fedmllm.model.tiny.presets import PRESETS, recipe

    for name in ("tiny", "small"):
        assert not {"init_scale", "matrix_decay", "corpus_extra"} & set(recipe(name, True)["sizes"])
    sizes = recipe("tiny-structured", True)["sizes"]
    assert sizes["init_scale"] == 0.1 and sizes["matrix_decay"] == 1.0
    assert sizes["corpus_extra"] == ["safety"]
    assert PRESETS["tiny-structured"].hidden == PRESETS["tiny"].hidden
    plain = make_pretrain_corpus(300, seed=1)
    assert [s.answer for s in plain] == [s.answer for s in make_pretrain_corpus(300, seed=1,
                                                                                extra=())]
    assert not any(s.meta["kind"].startswith("safety") for s in plain)
    safety = [s for s in make_pretrain_corpus(600, seed=1, extra=("safety",))
              if s.meta["kind"].startswith("safety")]
    assert len(safety) > 60
    for s in safety:  # unsafe exactly when the sentence holds an alarming word
        from fedmllm.data.synth import BINARY_WORDS

        alarming = any(w in s.meta["text"].split() for w in BINARY_WORDS[1])
        assert s.answer.endswith("unsafe") == alarming
        assert s.image is None or s.meta["kind"] == "safety"
    with pytest.raises(ValueError, match="extra"):
        make_pretrain_corpus(3, seed=1, extra=("nope",))


GRID = """
[bench]
seeds = [0, 1]
metrics = ["auc_hard"]
gate_against = "local"
notes = "notes.md"
focus = "fedavg"
against = ["local"]

[fixed]
"model.preset" = "tiny"

[axes]
"fl.algorithm" = ["fedavg", "local"]

[[settings]]
name = "aligned"
"data.scenario" = "aligned"
"""


def test_grid_gate_metrics_notes_and_their_errors(tmp_path):
    (tmp_path / "notes.md").write_text("## Why\n\nBecause.\n")
    path = tmp_path / "g.toml"
    path.write_text(GRID)
    g = load_grid(path)
    assert g.gate_against == "local" and g.metrics == ["auc_hard"] and not g.share_uploads
    assert g.notes == str((tmp_path / "notes.md").resolve())
    for old, new, msg in (('gate_against = "local"', 'gate_against = "fedprox"',
                           "bench.gate_against: no method 'fedprox'"),
                          ('gate_against = "local"', 'gate = ["fedavg"]',
                           "bench.gate: no longer read"),
                          ('metrics = ["auc_hard"]', 'metrics = ["speed"]', "bench.metrics"),
                          ('notes = "notes.md"', 'notes = "gone.md"', "bench.notes"),
                          ('seeds = [0, 1]', 'seeds = [0, 1]\nshare_uploads = "yes"',
                           "bench.share_uploads"),
                          ('focus = "fedavg"', 'focus = "fedsgd"', "bench.focus"),
                          ('focus = "fedavg"', '', "bench.against")):
        path.write_text(GRID.replace(old, new))
        with pytest.raises(ConfigError, match=msg):
            load_grid(path)
    path.write_text(GRID)
    # a finished sweep written by hand: fedavg beats the constant answer, local does not
    out = tmp_path / "sweep"
    status = {}
    for c in g.cells:
        folder = out / "runs" / c.id
        folder.mkdir(parents=True)
        a = {"fedavg": [0.90, 0.92], "local": [0.50, 0.52]}[c.method][c.seed]
        view = {"n": 16, "accuracy": a, "macro_f1": a, "auroc": a, "auc_hard": a - 0.1,
                "invalid_rate": 0.0, "confusion": [[8, 0], [8, 0]]}
        (folder / "summary.json").write_text(json.dumps({
            "final": {"per_modality": {"image_text": view}},
            "totals": {"bytes_uploaded": 100 if c.method == "fedavg" else 10,
                       "bytes_downloaded": 100 if c.method == "fedavg" else 10,
                       "train_seconds": 1.0}}))
        row = {"round": 1, "eval": None}
        if c.method == "local":  # a one-shot row's diagnostics
            row.update(drift={"0": {"dB_rel": 0.5, "dW_rel": 0.25}, "1": {"dB_rel": 1.5,
                                                                         "dW_rel": 0.75}},
                       # the report takes the median over the modules, not the stored one
                       spectrum={"median": {"s1_sr": 9.0}, "modules": {
                           "q": {"s1_sr": 2.0, "gap": 1.0, "energy": 0.7},
                           "v": {"s1_sr": 4.0, "gap": 1.4, "energy": 0.9}}},
                       conflict={"lora_B": {"rho_bar": 0.1}},
                       conflict_update={"lora_B": {"rho_bar": 0.3}},
                       client_lr={"0": 0.001, "1": 0.001})
        (folder / "metrics.jsonl").write_text(json.dumps(row) + "\n")
        status[c.id] = {"status": "done", "seconds": 3.0}
    (out / "bench.json").write_text(json.dumps({**g.to_json(), "status": status}))
    md = build_report(out)["markdown"].read_text()
    # local stays at the constant answer (0.5) and fails the gate; fedavg, the reference,
    # beats it and local (gate_against): a competitor failing leaves the setting its signal
    assert "(no signal)" not in md and "*no signal*" not in md
    assert "| method | aligned | mean rank |" in md
    assert "| local | 0.510 (0.500–0.520) ✗ | 2.0 |" in md
    assert "| aligned | 0.500 (every seed) | fedavg | local |" in md
    assert "| fedavg | 0.910 (0.014) |" in md  # mean (sd): 0.90, 0.92
    assert "### auc_hard (image+text)" in md and "| fedavg | 0.810 (0.800–0.820) |" in md
    assert "| local | aligned | 0.1 | 0.3 | 1 | 0.5 | 0.001 |" in md  # medians over clients
    assert "| local | 3 | 1.2 | 0.8 |" in md  # one row per distinct spectrum
    assert "| local | 0.00 | 0.00 | 0.100 |" in md  # bytes / the reference's (fedavg)
    assert md.rstrip().endswith("Because.")
    # the verdict: fedavg - local = 0.40 in both seeds (the t test, one family of one
    # setting); fedavg is the reference: bytes 1
    assert "| aligned | 0.910 (0.900–0.920) | 0.400 (every seed) (p <0.001 (t), better) " \
           "| 1.000 |" in md


def test_upload_store_round_trip_and_unreadable_entries(tmp_path):
    from fedmllm.fl import ClientUpdate
    from fedmllm.runtime.uploads import load_uploads, locked, store_uploads

    ups = {k: ClientUpdate(state={"a.lora_A.weight": torch.full((2, 3), float(k))},
                           num_examples=5 + k, client_id=k, metrics={"lr": 0.01, "steps": 3})
           for k in range(2)}
    with locked(tmp_path, "key1"):
        store_uploads(tmp_path, "key1", ups, {"why": "test"})
    back = load_uploads(tmp_path, "key1")
    assert set(back) == {0, 1} and back[1].num_examples == 6 and back[1].metrics["lr"] == 0.01
    torch.testing.assert_close(back[1].state["a.lora_A.weight"], ups[1].state["a.lora_A.weight"])
    assert load_uploads(tmp_path, "nothing") is None
    (tmp_path / "key1" / "meta.json").write_text('{"clients": {"0": {}}}')  # not ours: retrain
    assert load_uploads(tmp_path, "key1") is None
    (tmp_path / "key1" / "uploads.safetensors").write_bytes(b"junk")
    assert load_uploads(tmp_path, "key1") is None
