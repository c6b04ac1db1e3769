"""The federated-data entry point, prepared folders (atomic, deterministic), load and stats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.fixtures_data import make_crisismmd, make_hateful, make_medical

from fedmllm.config import DataConfig
from fedmllm.data import (
    DataError,
    build_federated_data,
    build_prompt,
    data_stats,
    federated_data,
    load_prepared,
    prepare,
)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("scenario", ["aligned", "missing", "cross", "hybrid"])
def test_build_synth_scenarios(scenario):
    cfg = DataConfig(scenario=scenario, train_size=300, test_size=40, image_clients=2)
    data = build_federated_data(cfg, num_clients=5, seed=3)
    assert data.task.name == "synth_binary" and data.task.kind == "mc"
    assert data.task.options == ("safe", "unsafe")
    assert sum(map(len, data.clients)) == 300 and min(map(len, data.clients)) >= 2
    assert len(data.test) == 40 and all(s.modality == "image_text" for s in data.test)
    m = data.manifest
    assert m["params"]["scenario"] == scenario and m["num_clients"] == 5
    for k, c in enumerate(data.clients):
        assert m["clients"][k]["samples"] == len(c)
        assert sum(m["clients"][k]["modalities"].values()) == len(c)
        assert sum(m["clients"][k]["labels"].values()) == len(c)
    if scenario == "cross":
        assert sum(1 for c in m["clients"] if c["modalities"]["image_only"]) == 2
    again = build_federated_data(cfg, num_clients=5, seed=3)
    assert [[s.id for s in c] for c in again.clients] == [[s.id for s in c] for c in data.clients]
    assert json.dumps(again.manifest) == json.dumps(m)


def test_build_synth_vqa_and_multiclass():
    data = build_federated_data(DataConfig(task="vqa", scenario="cross", image_clients=3,
                                           train_size=200, test_size=20), 5, seed=0)
    assert data.task.kind == "vqa" and data.task.options is None
    img = data.manifest["scenario"]["image_clients"]
    for k, c in enumerate(data.clients):
        assert all((s.image is not None) == (k in img) for s in c)
    with pytest.raises(DataError, match="'missing' is not defined for VQA"):
        build_federated_data(DataConfig(task="vqa", scenario="missing"), 5, 0)
    data = build_federated_data(DataConfig(task="multiclass", partition="iid", train_size=160,
                                           test_size=16), 4, seed=0)
    assert len(data.task.options) == 8 and sorted(map(len, data.clients)) == [40] * 4


def test_build_errors():
    with pytest.raises(DataError, match="data.data_dir: required for dataset 'hateful_memes'"):
        build_federated_data(DataConfig(dataset="hateful_memes"), 5, 0)
    with pytest.raises(DataError, match="partition: cannot give each of 10 clients"):
        build_federated_data(DataConfig(train_size=12, min_per_client=2), 10, 0)
    with pytest.raises(DataError, match="image_clients"):
        build_federated_data(DataConfig(scenario="cross", image_clients=7, train_size=50), 5, 0)


def test_real_datasets(tmp_path):
    hm = federated_data("hateful_memes", 4, 0, data_dir=make_hateful(tmp_path / "hm"),
                        scenario="missing", missing_rate=0.3, alpha=1.0)
    assert hm.task.name == "hateful_memes" and sum(map(len, hm.clients)) == 40
    assert len(hm.test) == 12 and hm.manifest["params"]["test_split"] == "test_seen"
    cm = federated_data("crisismmd", 4, 0, data_dir=make_crisismmd(tmp_path / "cm"),
                        scenario="hybrid")
    assert cm.task.options[7] == "not_humanitarian" and len(cm.test) == 16
    md = federated_data("medical", 5, 0, data_dir=make_medical(tmp_path / "med"),
                        scenario="cross", image_clients=3)
    assert md.task.name == "medical" and md.task.kind == "vqa"
    assert len(md.test) == 10 and len(md.extra_tests["slake"]) == 8
    img = md.manifest["scenario"]["image_clients"]
    for k, c in enumerate(md.clients):
        assert {s.task for s in c} == ({"vqa_rad"} if k in img else {"medalpaca"})
    assert md.manifest["skipped"]["count"] == 2  # the two incomplete MedAlpaca items


def test_bad_image_is_error_or_skipped(tmp_path):
    root = make_hateful(tmp_path / "hm")
    (root / "img/10002.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"10002.png, sample 10002: image cannot be decoded"):
        federated_data("hateful_memes", 4, 0, data_dir=root)
    data = federated_data("hateful_memes", 4, 0, data_dir=root, skip_bad=True)
    assert sum(map(len, data.clients)) == 39
    assert data.manifest["skipped"]["items"][0]["where"] == "sample 10002"
    data = federated_data("hateful_memes", 4, 0, data_dir=root, verify_images=False)
    assert sum(map(len, data.clients)) == 40


def test_prepare_is_deterministic_and_loads_back(tmp_path):
    out = tmp_path / "out"
    opts = {"num_clients": 4, "seed": 7, "scenario": "missing", "train_size": 120,
            "test_size": 20}
    manifest = prepare(out, "synth", **opts)
    first = _files(out)
    assert {"client_0.json", "client_3.json", "test.json", "manifest.json"} <= set(first)
    assert any(k.startswith("images/") for k in first)
    prepare(out, "synth", overwrite=True, **opts)
    assert _files(out) == first
    with pytest.raises(DataError, match="already exists"):
        prepare(out, "synth", **opts)
    assert json.loads(first["manifest.json"]) == json.loads(json.dumps(manifest))

    rec = json.loads(first["client_0.json"])[0]
    assert set(rec) >= {"id", "image", "conversations"}
    user = rec["conversations"][0]["content"]
    assert (rec["image"] is not None) == user.startswith("<image>\n")
    if rec["image"] is not None:
        assert Path(rec["image"]).is_file() and Path(rec["image"]).is_absolute()

    built = federated_data("synth", **opts)
    loaded = load_prepared(out)
    assert loaded.task == built.task and loaded.manifest == json.loads(first["manifest.json"])
    for a_client, b_client in zip(built.clients, loaded.clients):
        assert [(s.id, s.text, s.label, s.answer, s.modality, build_prompt(s))
                for s in a_client] == \
            [(s.id, s.text, s.label, s.answer, s.modality, build_prompt(s)) for s in b_client]
    assert len(loaded.test) == 20
    assert build_federated_data(DataConfig(prepared=str(out)), 4, 0).manifest == loaded.manifest
    with pytest.raises(DataError, match="prepared for 4 clients but fl.num_clients = 5"):
        build_federated_data(DataConfig(prepared=str(out)), 5, 0)


def test_prepare_real_dataset_agnostic_prompts(tmp_path):
    root = make_crisismmd(tmp_path / "cm")
    out = tmp_path / "prep"
    prepare(out, "crisismmd", root, num_clients=3, seed=1, prompt_strategy="agnostic",
            scenario="cross", image_clients=1)
    recs = json.loads((out / "client_0.json").read_text())
    assert all("without considering the modality" in r["conversations"][0]["content"]
               for r in recs)
    assert all(r["image"] is None or r["image"].startswith(str(root.absolute())) for r in recs)
    loaded = load_prepared(out)
    assert loaded.task.prompt_strategy == "agnostic"
    s = loaded.clients[0][0]
    assert "<image>\n" * (s.image is not None) + build_prompt(s, "agnostic") == \
        recs[0]["conversations"][0]["content"]


def test_prepare_failure_leaves_nothing(tmp_path):
    root = make_hateful(tmp_path / "hm")
    (root / "img/10005.png").unlink()
    out = tmp_path / "prep"
    with pytest.raises(DataError, match="image not found"):
        prepare(out, "hateful_memes", root, num_clients=3)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["hm"]  # no temporary folder left behind


def test_load_research_style_folder_and_errors(tmp_path):
    folder = tmp_path / "research"
    folder.mkdir()
    rec = {"id": 42953, "image": "/data/img/42953.png", "conversations": [
        {"role": "user", "content": "<image>\nSelect the best answer ..."},
        {"role": "assistant", "content": "(A) not-hateful"}]}
    for k in range(2):
        (folder / f"client_{k}.json").write_text(json.dumps([rec], indent=4))
    data = load_prepared(folder)
    s = data.clients[1][0]
    assert s.id == "42953" and s.task == "conversation" and s.answer == "(A) not-hateful"
    assert build_prompt(s) == "Select the best answer ..."
    (folder / "client_1.json").write_text(json.dumps([{"id": 1, "conversations": "hi"}]))
    with pytest.raises(DataError, match=r"client_1.json, item 0 \(id 1\): 'conversations'"):
        load_prepared(folder)
    with pytest.raises(DataError, match="prepared folder not found"):
        load_prepared(tmp_path / "nope")


@pytest.fixture
def small_prepared(tmp_path) -> Path:
    out = tmp_path / "prep"
    prepare(out, "synth", num_clients=2, seed=0, train_size=40, test_size=8)
    return out


def _edit_json(path: Path, edit) -> None:
    obj = json.loads(path.read_text())
    edit(obj)
    path.write_text(json.dumps(obj))


@pytest.mark.parametrize("edit,match", [
    (lambda m: m["task"].pop("name"), r"key 'task.name': missing"),
    (lambda m: m["task"].update(kind="regression"), r"key 'task.kind': unknown kind"),
    (lambda m: m["task"].update(options="ab"), r"key 'task.options': must be"),
    (lambda m: m.update(task="synth_binary"), r"key 'task': must be an object"),
    (lambda m: m.pop("num_clients"), r"key 'num_clients': missing"),
    (lambda m: m.update(num_clients="two"), r"key 'num_clients': must be a positive integer"),
    (lambda m: m.update(num_clients=2.5), r"key 'num_clients': must be a positive integer"),
    (lambda m: m.update(extra_tests={"../x": {}}), r"key 'extra_tests': must be"),
])
def test_load_prepared_checks_the_manifest(small_prepared, edit, match):
    mpath = small_prepared / "manifest.json"
    _edit_json(mpath, edit)
    with pytest.raises(DataError, match=match) as e:
        load_prepared(small_prepared)
    assert str(e.value).startswith(f"{mpath}, key '")


@pytest.mark.parametrize("label", [2, -1, True, "1", 0.0])
def test_load_prepared_refuses_a_label_outside_the_options(small_prepared, label):
    path = small_prepared / "client_1.json"
    _edit_json(path, lambda recs: recs[0]["fedmllm"].update(label=label))
    with pytest.raises(DataError, match=r"client_1.json, item 0 \(id .*\): 'fedmllm.label' "
                                        r"must be null or an option index 0..1"):
        load_prepared(small_prepared)
    _edit_json(path, lambda recs: recs[0]["fedmllm"].update(label=None))
    assert load_prepared(small_prepared).clients[1][0].label is None


def test_load_prepared_non_utf8_files(small_prepared):
    for name in ("manifest.json", "client_0.json"):
        path = small_prepared / name
        good = path.read_bytes()
        path.write_bytes(good.replace(b'"', b'"\xff', 1))
        line = good[:good.index(b'"')].count(b"\n") + 1
        with pytest.raises(DataError, match=rf"{name}, line {line}: not UTF-8 text"):
            load_prepared(small_prepared)
        path.write_bytes(good)


def test_data_stats_table_and_png(tmp_path):
    out = tmp_path / "prep"
    prepare(out, "synth", num_clients=3, seed=0, scenario="cross", image_clients=1,
            train_size=90, test_size=10)
    stats = data_stats(out)
    lines = stats.table.splitlines()
    assert lines[0].split()[:6] == ["client", "samples", "image+text", "image", "text", "none"]
    assert len(lines) == 1 + 3 + 1  # header, 3 clients, test
    assert sum(r["samples"] for r in stats.rows[:3]) == 90
    assert stats.png is not None and stats.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_clients_file_loads_alone(tmp_path):
    """A federation site reads only its own client file (the rest of the folder may be absent)."""
    import shutil

    from fedmllm.data import federated_data, load_prepared, load_prepared_client, write_prepared
    from fedmllm.data.errors import DataError

    data = federated_data("synth", 3, 0, train_size=60, test_size=10)
    full = write_prepared(data, tmp_path / "all")
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(full / "manifest.json", site)
    shutil.copy(full / "client_1.json", site)
    mine = load_prepared_client(site, 1)
    assert [s.id for s in mine] == [s.id for s in load_prepared(full).clients[1]]
    assert [s.label for s in mine] == [s.label for s in data.clients[1]]
    with pytest.raises(DataError, match="client_2.json"):
        load_prepared_client(site, 2)
