"""Readers of the real formats, on small generated fixtures, and every bad-input case."""

from __future__ import annotations

import json

import pytest
from helpers.fixtures_data import (
    CRISIS_HEADER,
    crisis_row,
    make_crisismmd,
    make_hateful,
    make_medalpaca,
    make_slake,
    make_vqa_rad,
    tiny_image,
    write_crisis_tsv,
)

from fedmllm.data.errors import DataError
from fedmllm.data.readers import (
    check_images,
    read_crisismmd,
    read_hateful_memes,
    read_medalpaca,
    read_slake,
    read_vqa_rad,
    remove_url,
)

# ----------------------------------------------------------------------------- Hateful-Memes


def test_hateful_reads_published_layout(tmp_path):
    root = make_hateful(tmp_path / "hm")
    samples, skipped = read_hateful_memes(root, "train")
    assert len(samples) == 40 and skipped == []
    s = samples[1]
    assert s.id == "10001" and s.task == "hateful_memes" and s.label == 1
    assert s.answer == "(B) hateful" and s.options == ("not-hateful", "hateful")
    assert s.text == "meme text number 1"
    assert s.image == str((root / "img" / "10001.png").absolute())
    assert len(read_hateful_memes(root, "test_seen").samples) == 12
    unl = read_hateful_memes(root, "test_unseen", require_labels=False).samples
    assert unl[0].label is None and unl[0].answer == ""
    with pytest.raises(DataError, match=r"test_unseen.jsonl, line 1: missing field 'label'"):
        read_hateful_memes(root, "test_unseen")


@pytest.mark.parametrize(
    "line,match",
    [
        ("{not json", "malformed JSON"),
        ('{"id": 1, "img": "img/10000.png", "label": 1}', "missing field 'text'"),
        ('{"id": 1.5, "img": "img/10000.png", "label": 1, "text": "t"}', "field 'id' must be"),
        ('{"id": 1, "img": "img/10000.png", "label": "1", "text": "t"}', "field 'label' must"),
        ('{"id": 1, "img": "img/10000.png", "label": true, "text": "t"}', "field 'label' must"),
        ('{"id": 1, "img": "img/10000.png", "label": 2, "text": "t"}', "unknown label 2"),
        ('{"id": 1, "img": "../outside.png", "label": 0, "text": "t"}', "escapes the dataset"),
        ('{"id": 1, "img": "/etc/passwd", "label": 0, "text": "t"}', "is absolute"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_hateful_bad_rows(tmp_path, line, match):
    root = make_hateful(tmp_path / "hm", n_train=3)
    path = root / "train.jsonl"
    path.write_text(path.read_text() + "\n" + line + "\n")  # blank line 4 is skipped
    with pytest.raises(DataError, match=match) as e:
        read_hateful_memes(root, "train")
    assert f"{path}, line 5:" in str(e.value) and "\n" not in str(e.value)
    samples, skipped = read_hateful_memes(root, "train", skip_bad=True)
    assert len(samples) == 3 and len(skipped) == 1 and skipped[0]["where"] == "line 5"


def test_image_symlinks_inside_root_are_allowed(tmp_path):
    elsewhere = tmp_path / "big_disk" / "img"
    tiny_image(elsewhere / "1.png")
    root = tmp_path / "hm"
    root.mkdir()
    (root / "img").symlink_to(elsewhere, target_is_directory=True)
    (root / "train.jsonl").write_text('{"id": 1, "img": "img/1.png", "label": 0, "text": "t"}')
    samples = read_hateful_memes(root).samples
    assert samples[0].image == str(root.absolute() / "img" / "1.png")
    assert check_images(samples)[0] == samples
    (root / "train.jsonl").write_text(
        '{"id": 1, "img": "img/../../x.png", "label": 0, "text": "t"}')
    with pytest.raises(DataError, match="escapes"):
        read_hateful_memes(root)


def test_hateful_non_utf8_line_is_a_bad_row(tmp_path):
    root = make_hateful(tmp_path / "hm", n_train=3)
    path = root / "train.jsonl"
    good = '{"id": 7, "img": "img/10000.png", "label": 1, "text": "after the bad line"}\n'
    path.write_bytes(path.read_bytes()
                     + b'{"id": 6, "img": "img/10000.png", "label": 0, "text": "caf\xe9"}\n'
                     + good.encode())
    with pytest.raises(DataError, match="not UTF-8") as e:
        read_hateful_memes(root, "train")
    assert f"{path}, line 4:" in str(e.value)
    samples, skipped = read_hateful_memes(root, "train", skip_bad=True)
    assert [s.id for s in samples][-1] == "7" and len(samples) == 4
    assert skipped == [{"file": str(path), "where": "line 4", "reason": "not UTF-8 text"}]


def test_hateful_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="train.jsonl: Hateful-Memes split file not found"):
        read_hateful_memes(tmp_path, "train")
    (tmp_path / "train.jsonl").write_text("\n")
    with pytest.raises(DataError, match="empty split"):
        read_hateful_memes(tmp_path, "train")
    with pytest.raises(DataError, match="unknown Hateful-Memes split"):
        read_hateful_memes(tmp_path, "validation")


# ----------------------------------------------------------------------------- CrisisMMD


def test_crisismmd_reads_label_image_and_strips_urls(tmp_path):
    root = make_crisismmd(tmp_path / "cm")
    samples, _ = read_crisismmd(root, "train")
    assert len(samples) == 48
    s = samples[5]
    assert s.label == 5 and s.answer == "(F) vehicle_damage"
    assert s.text == "water rising at street 5"
    assert s.id == "900005_0" and s.image.endswith("data_image/hurricane_harvey/5.jpg")
    assert remove_url("a http://x.y/z b https://q ") == "a  b"
    assert len(read_crisismmd(root, "test").samples) == 16


def test_crisismmd_label_image_is_the_ground_truth(tmp_path):
    root = tmp_path / "cm"
    row = crisis_row(1, "vehicle_damage")
    row[CRISIS_HEADER.index("label_text")] = "not_humanitarian"
    tiny_image(root / row[4])
    write_crisis_tsv(root / "crisismmd_datasplit_all/task_humanitarian_text_img_train.tsv", [row])
    assert read_crisismmd(root).samples[0].label == 5


@pytest.mark.parametrize("case", ["unknown_label", "field_count", "escape", "empty_id"])
def test_crisismmd_bad_rows(tmp_path, case):
    root = make_crisismmd(tmp_path / "cm", n_train=4)
    path = root / "crisismmd_datasplit_all/task_humanitarian_text_img_train.tsv"
    rows = [crisis_row(i, "not_humanitarian") for i in range(4)]
    bad = crisis_row(9, "flooded_area")
    match = "unknown label_image 'flooded_area'"
    if case == "field_count":
        bad = crisis_row(9, "not_humanitarian")[:-2]
        match = "tab-separated fields"
    elif case == "escape":
        bad = crisis_row(9, "not_humanitarian")
        bad[4] = "../../secret.jpg"
        match = "escapes the dataset root"
    elif case == "empty_id":
        bad = crisis_row(9, "not_humanitarian")
        bad[2] = ""
        match = "empty image_id"
    write_crisis_tsv(path, rows[:2] + [bad] + rows[2:])
    with pytest.raises(DataError, match=match) as e:
        read_crisismmd(root)
    assert f"{path}, line 4:" in str(e.value)
    samples, skipped = read_crisismmd(root, skip_bad=True)
    assert len(samples) == 4 and skipped[0]["where"] == "line 4"


def test_crisismmd_missing_column_and_file(tmp_path):
    root = tmp_path / "cm"
    path = root / "crisismmd_datasplit_all/task_humanitarian_text_img_train.tsv"
    header = [h for h in CRISIS_HEADER if h != "label_image"]
    write_crisis_tsv(path, [crisis_row(1, "x")[:-1]], header=header)
    with pytest.raises(DataError, match=r"line 1: missing column\(s\) label_image"):
        read_crisismmd(root)
    with pytest.raises(DataError, match="CrisisMMD split file not found"):
        read_crisismmd(root, "test")


def test_crisismmd_non_utf8_and_malformed_tsv(tmp_path):
    root = tmp_path / "cm"
    path = root / "crisismmd_datasplit_all/task_humanitarian_text_img_train.tsv"
    rows = [crisis_row(i, "not_humanitarian") for i in range(300)]  # > one 8 KiB read
    rows[250][3] = "MARK"
    write_crisis_tsv(path, rows)
    path.write_bytes(path.read_bytes().replace(b"MARK", b"caf\xe9"))
    for skip_bad in (False, True):
        with pytest.raises(DataError, match=r"train.tsv, line 252: not UTF-8 text") as e:
            read_crisismmd(root, skip_bad=skip_bad)
        assert str(path) in str(e.value)
    rows[250][3] = "x" * 200_000  # over the csv module's field limit
    write_crisis_tsv(path, rows)
    with pytest.raises(DataError, match=r"train.tsv, line 252: malformed TSV"):
        read_crisismmd(root)


# ----------------------------------------------------------------------------- VQA-RAD / SLAKE


def test_vqa_rad_split_by_phrase_type(tmp_path):
    root = make_vqa_rad(tmp_path / "vr")
    train = read_vqa_rad(root, "train").samples
    test = read_vqa_rad(root, "test").samples
    assert len(train) == 30 and len(test) == 10
    assert {s.meta["phrase_type"] for s in train} == {"freeform", "para"}
    assert {s.meta["phrase_type"] for s in test} == {"test_freeform", "test_para"}
    s = train[0]
    assert s.task == "vqa_rad" and s.answer_type == "CLOSED" and s.answer == "no"
    assert s.id == "vqarad-100" and s.text is None and s.image.endswith("images/synpic1000.jpg")
    assert s.meta["question_type"] == "PRES"


def test_vqa_rad_bad_inputs(tmp_path):
    root = make_vqa_rad(tmp_path / "vr")
    path = root / "VQA_RAD Dataset Public.json"
    items = json.loads(path.read_text())
    items[3]["answer"] = 7  # numbers are answers too
    items[4].pop("question")
    path.write_text(json.dumps(items))
    with pytest.raises(DataError, match=r"item 4 \(qid 104\): missing field 'question'"):
        read_vqa_rad(root)
    r = read_vqa_rad(root, skip_bad=True)
    assert len(r.samples) == 29 and len(r.skipped) == 1
    assert [s.answer for s in r.samples if s.id == "vqarad-103"] == ["7"]
    items[4]["question"] = "q?"
    items[5]["image_name"] = "../../x.jpg"
    path.write_text(json.dumps(items))
    with pytest.raises(DataError, match="qid 105.*escapes"):
        read_vqa_rad(root)
    path.write_text("[{\"qid\": 1,\n oops}]")
    with pytest.raises(DataError, match=r"line 2: malformed JSON"):
        read_vqa_rad(root)
    path.write_bytes(b'[{"qid": 1},\n\n {"question": "caf\xe9"}]')
    with pytest.raises(DataError, match=r"Public.json, line 3: not UTF-8 text"):
        read_vqa_rad(root)
    path.write_text('{"qid": 1}')
    with pytest.raises(DataError, match="expected a JSON list"):
        read_vqa_rad(root)
    path.unlink()
    with pytest.raises(DataError, match="file not found"):
        read_vqa_rad(root)


def test_slake_english_only_by_default(tmp_path):
    root = make_slake(tmp_path / "sl")
    en = read_slake(root, "test").samples
    both = read_slake(root, "test", languages=None).samples
    assert len(en) == 8 and len(both) == 12
    assert all(s.meta["q_lang"] == "en" for s in en)
    assert en[0].image.endswith("Slake1.0/imgs/xmlab1/source.jpg")
    assert en[0].meta["question_type"] == "Organ" and en[0].task == "slake"


def test_medalpaca_skips_incomplete_items(tmp_path):
    root = make_medalpaca(tmp_path / "ma")
    r = read_medalpaca(root)
    assert len(r.samples) == 25 and len(r.skipped) == 2
    s = r.samples[0]
    assert (s.question, s.answer, s.image, s.text) == ("What is fact 0?", "Fact 0 is true.",
                                                       None, None)
    assert s.input_modality == "text_only"
    path = root / "medical_meadow_wikidoc_medical_flashcards.json"
    path.write_text(json.dumps([{"input": 3, "output": "x"}]))
    with pytest.raises(DataError, match=r"item 0: field 'input' must be str"):
        read_medalpaca(path)
    path.write_text(json.dumps([{"input": "", "output": "x"}]))
    with pytest.raises(DataError, match="empty split"):
        read_medalpaca(root)


# ----------------------------------------------------------------------------- images


def test_check_images_missing_and_corrupt(tmp_path):
    root = make_hateful(tmp_path / "hm", n_train=5)
    samples = read_hateful_memes(root).samples
    (root / "img/10001.png").unlink()
    (root / "img/10003.png").write_bytes(b"this is not a png at all")
    with pytest.raises(DataError, match=r"10001.png, sample 10001: image not found"):
        check_images(samples)
    kept, skipped = check_images(samples, skip_bad=True)
    assert [s.id for s in kept] == ["10000", "10002", "10004"]
    assert [x["where"] for x in skipped] == ["sample 10001", "sample 10003"]
    assert "cannot be decoded" in skipped[1]["reason"]
