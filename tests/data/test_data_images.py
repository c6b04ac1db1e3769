"""Images are checked for what they are: every bad kind of file (the bad-input corpus of
``helpers.fixtures_data.bad_image``) is refused in one line naming the file and the sample,
all bad samples at once, through the data build ``fedmllm run`` uses; skipped and counted
with ``data.skip_bad_samples``; each image decoded once per build."""

from __future__ import annotations

import dataclasses

import pytest
from helpers.fixtures_data import BAD_IMAGES, bad_image, make_hateful, make_medical
from PIL import Image

from fedmllm.config import DataConfig
from fedmllm.data import DataError, build_federated_data
from fedmllm.data import reading as reading_mod
from fedmllm.data.readers import read_hateful_memes
from fedmllm.data.reading import MAX_LISTED, bad_samples_message, check_images, image_problem
from fedmllm.data.registry import read_split

REASONS = {
    "truncated": "image cannot be decoded (OSError: image file is truncated",
    "empty": "image file is empty",
    "not_image": "image cannot be decoded (not an image file Pillow can identify)",
    "bomb": "decompression bomb refused by Pillow",
    "folder": "a folder where an image file should be",
    # a 16-bit PNG: Pillow >= 10.1 opens it as 'I;16', 10.0 as 'I' (test-lowest): both refused
    "mode": "unsupported image mode 'I",
}


@pytest.mark.parametrize("kind", BAD_IMAGES)
def test_each_bad_image_kind_has_its_reason(tmp_path, kind):
    Image.new("P", (4, 4)).save(tmp_path / "ok.png")
    assert image_problem(tmp_path / "ok.png") is None
    assert image_problem(bad_image(tmp_path / f"{kind}.png", kind)).startswith(REASONS[kind])


@pytest.mark.parametrize("kind", BAD_IMAGES)
def test_run_data_build_refuses_each_bad_image_in_one_line(tmp_path, kind):
    root = make_hateful(tmp_path / "hm", n_train=8, n_test=4)
    path = bad_image(root / "img" / "10003.png", kind)
    cfg = DataConfig(dataset="hateful_memes", data_dir=str(root))
    with pytest.raises(DataError) as e:
        build_federated_data(cfg, 2, 0)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}, sample 10003: {REASONS[kind]}")
    assert msg.endswith("(skip it with data.skip_bad_samples=true)")


def test_every_bad_sample_is_listed_and_skipping_counts_them(tmp_path):
    root = make_hateful(tmp_path / "hm", n_train=12, n_test=6)
    bad = {sid: bad_image(root / "img" / f"{sid}.png", kind)
           for sid, kind in zip((10001, 10004, 10009, 30002), ("truncated", "empty", "bomb",
                                                                "folder"))}
    with pytest.raises(DataError) as e:
        build_federated_data(DataConfig(dataset="hateful_memes", data_dir=str(root)), 2, 0)
    msg = str(e.value)
    assert msg.startswith("4 bad samples (skip them with data.skip_bad_samples=true): ")
    for sid, path in bad.items():  # train and test split alike, in one error
        assert f"{path}, sample {sid}: " in msg
    cfg = DataConfig(dataset="hateful_memes", data_dir=str(root), skip_bad_samples=True)
    data = build_federated_data(cfg, 2, 0)
    assert sum(map(len, data.clients)) == 9 and len(data.test) == 5
    skipped = data.manifest["skipped"]
    assert skipped["count"] == 4
    assert {i["file"] for i in skipped["items"]} == {str(p) for p in bad.values()}
    assert data.manifest["params"]["skip_bad"] is True


def test_long_lists_end_with_a_count():
    bad = [{"file": f"/d/{i}.png", "where": f"sample {i}", "reason": "image file is empty"}
           for i in range(MAX_LISTED + 3)]
    msg = bad_samples_message(bad, "--skip-bad")
    assert msg.startswith(f"{MAX_LISTED + 3} bad samples (skip them with --skip-bad): ")
    assert f"/d/{MAX_LISTED - 1}.png" in msg and f"/d/{MAX_LISTED}.png" not in msg
    assert msg.endswith("; and 3 more")


def test_check_images_lists_all_and_keeps_in_memory_images(tmp_path):
    root = make_hateful(tmp_path / "hm", n_train=5)
    samples = read_hateful_memes(root).samples
    bad_image(root / "img/10001.png", "not_image")
    bad_image(root / "img/10003.png", "mode")
    with pytest.raises(DataError, match=r"^2 bad samples \(skip them with skip_bad=True\)"):
        check_images(samples)
    samples[1] = dataclasses.replace(samples[1], image=Image.new("RGB", (3, 3)))  # generated
    kept, skipped = check_images(samples, skip_bad=True, source="hm")
    assert [s.id for s in kept] == ["10000", "10001", "10002", "10004"]
    assert [(x["where"], x["source"]) for x in skipped] == [("sample 10003", "hm")]


def test_each_image_is_decoded_once_per_build(tmp_path, monkeypatch):
    """VQA-RAD's questions share 12 images over train and test: 12 decodes, not 40; SLAKE's 4."""
    root = make_medical(tmp_path / "med")
    seen: list[str] = []
    real = reading_mod.image_problem
    monkeypatch.setattr(reading_mod, "image_problem", lambda p: seen.append(str(p)) or real(p))
    build_federated_data(DataConfig(dataset="medical", data_dir=str(root)), 3, 0)
    assert len(seen) == len(set(seen)) == 12 + 4


def test_bad_rows_and_bad_images_come_in_one_error(tmp_path):
    """A malformed row no longer hides the bad images behind it: both in one error."""
    root = make_hateful(tmp_path / "hm", n_train=10, n_test=4)
    lines = (root / "train.jsonl").read_text().splitlines()
    lines[2] = '{"id": 10002, "img": "img/10002.png"'
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    image = bad_image(root / "img" / "10005.png", "truncated")
    with pytest.raises(DataError) as e:
        build_federated_data(DataConfig(dataset="hateful_memes", data_dir=str(root)), 2, 0)
    msg = str(e.value)
    assert msg.startswith("2 bad samples (skip them with data.skip_bad_samples=true): ")
    assert f"{root / 'train.jsonl'}, line 3: malformed JSON" in msg
    assert f"{image}, sample 10005: image cannot be decoded" in msg
    cfg = DataConfig(dataset="hateful_memes", data_dir=str(root), skip_bad_samples=True)
    data = build_federated_data(cfg, 2, 0)
    assert data.manifest["skipped"]["count"] == 2 and sum(map(len, data.clients)) == 8


def test_a_split_emptied_by_bad_rows_lists_them(tmp_path):
    root = make_hateful(tmp_path / "hm", n_train=2)
    (root / "train.jsonl").write_text('{"id": 1}\nnot json\n')
    with pytest.raises(DataError, match=r"train.jsonl: empty split \(no usable rows\): 2 bad "
                                        r"samples: .*line 1: missing field .*line 2: "):
        read_hateful_memes(root, "train", skip_bad=True)


def test_one_split_read_for_eval_checks_and_skips_alike(tmp_path):
    root = make_hateful(tmp_path / "hm", n_train=4, n_test=5)
    bad_image(root / "img" / "30001.png", "empty")
    with pytest.raises(DataError, match=r"30001.png, sample 30001: image file is empty$"):
        read_split("hateful_memes", root)  # fedmllm eval --dataset: no option to name
    assert [s.id for s in read_split("hateful_memes", root, skip_bad=True)] == [
        "30000", "30002", "30003", "30004"]
    assert len(read_split("hateful_memes", root, check=False)) == 5
