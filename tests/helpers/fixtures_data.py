"""Small fixtures in each real dataset's published format, generated into a temporary folder."""

from __future__ import annotations

import csv
import json
import random
import struct
import zlib
from pathlib import Path

from PIL import Image

CRISIS_CLASSES = (
    "affected_individuals",
    "infrastructure_and_utility_damage",
    "injured_or_dead_people",
    "missing_or_found_people",
    "rescue_volunteering_or_donation_effort",
    "vehicle_damage",
    "other_relevant_information",
    "not_humanitarian",
)
CRISIS_HEADER = ["event_name", "tweet_id", "image_id", "tweet_text", "image", "label",
                 "label_text", "label_image", "label_text_image"]


def tiny_image(path: Path, colour=(200, 30, 30), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 5), colour).save(path, format=fmt)
    return path


BAD_IMAGES = ("truncated", "empty", "not_image", "bomb", "folder", "mode")
"""Every kind of bad image file :func:`bad_image` writes (the bad-input corpus)."""


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bad_image(path: Path, kind: str) -> Path:
    """Replace ``path`` with a bad image of ``kind`` (:data:`BAD_IMAGES`): a PNG whose valid
    header is followed by half its body; an empty file; text; a PNG header claiming 20000 x
    20000 pixels (beyond twice Pillow's ``MAX_IMAGE_PIXELS``: ``DecompressionBombError``, a few
    bytes on disk); a folder of that name; a valid 16-bit greyscale PNG (mode ``I;16``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        path.unlink()
    if kind == "truncated":
        rng = random.Random(0)
        noise = bytes(rng.randrange(256) for _ in range(64 * 64 * 3))
        Image.frombytes("RGB", (64, 64), noise).save(path, format="PNG")
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "not_image":
        path.write_text("this is a caption, not a picture\n")
    elif kind == "bomb":
        ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
                         + _png_chunk(b"IDAT", zlib.compress(b"")) + _png_chunk(b"IEND", b""))
    elif kind == "folder":
        path.mkdir()
    elif kind == "mode":
        Image.new("I;16", (6, 5), 40000).save(path, format="PNG")
    else:
        raise ValueError(f"unknown bad image kind {kind!r} (expected one of {BAD_IMAGES})")
    return path


def make_hateful(root: Path, n_train: int = 40, n_test: int = 12) -> Path:
    """``root/{train,dev_seen,test_seen}.jsonl`` + ``root/img/*.png`` (Facebook layout)."""
    for split, n, base in (("train", n_train, 10000), ("dev_seen", 6, 20000),
                           ("test_seen", n_test, 30000)):
        lines = []
        for i in range(n):
            sid = base + i
            tiny_image(root / "img" / f"{sid:05d}.png", (i * 5 % 255, 40, 90))
            lines.append(json.dumps({"id": sid, "img": f"img/{sid:05d}.png", "label": i % 2,
                                     "text": f"meme text number {i}"}))
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    # an unlabelled prediction-only split
    tiny_image(root / "img" / "40000.png")
    (root / "test_unseen.jsonl").write_text(
        json.dumps({"id": 40000, "img": "img/40000.png", "text": "no label here"}) + "\n")
    return root


def write_crisis_tsv(path: Path, rows: list[list[str]], header=CRISIS_HEADER) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\",
                       lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def crisis_row(i: int, label: str, event: str = "hurricane_harvey") -> list[str]:
    img = f"data_image/{event}/{i}.jpg"
    return [event, str(900000 + i), f"{900000 + i}_0",
            f"water rising at street {i} https://t.co/abc{i} ", img, "informative", label,
            label, "positive"]


def make_crisismmd(root: Path, n_train: int = 48, n_test: int = 16) -> Path:
    base = root / "crisismmd_datasplit_all"
    for split, n, off in (("train", n_train, 0), ("dev", 8, 5000), ("test", n_test, 9000)):
        rows = []
        for i in range(n):
            row = crisis_row(off + i, CRISIS_CLASSES[i % 8])
            tiny_image(root / row[4], (20, 120, i * 3 % 255), fmt="JPEG")
            rows.append(row)
        write_crisis_tsv(base / f"task_humanitarian_text_img_{split}.tsv", rows)
    return root


def make_vqa_rad(root: Path, n_train: int = 30, n_test: int = 10) -> Path:
    items = []
    phrases = ["freeform", "para"] * (n_train // 2) + ["test_freeform", "test_para"] * (n_test // 2)
    for i, ph in enumerate(phrases):
        name = f"synpic{1000 + i % 12}.jpg"
        tiny_image(root / "images" / name, (i * 7 % 255, 10, 10), fmt="JPEG")
        closed = i % 3 == 0
        items.append({
            "qid": 100 + i, "image_name": name, "image_organ": "CHEST",
            "question": f"Is there an effusion in image {i}?" if closed else f"What organ {i}?",
            "answer": ("yes" if i % 2 else "no") if closed else "lung",
            "answer_type": "CLOSED" if closed else "OPEN",
            "question_type": "PRES" if closed else "ORGAN", "phrase_type": ph,
        })
    root.mkdir(parents=True, exist_ok=True)
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(items, indent=1))
    return root


def make_medalpaca(root: Path, n: int = 25) -> Path:
    items = [{"instruction": "Answer this question truthfully", "input": f"What is fact {i}?",
              "output": f"Fact {i} is true."} for i in range(n)]
    items.append({"instruction": "x", "input": "", "output": "orphan answer"})
    items.append({"instruction": "x", "input": "question without answer"})
    root.mkdir(parents=True, exist_ok=True)
    (root / "medical_meadow_wikidoc_medical_flashcards.json").write_text(json.dumps(items))
    return root


def make_slake(root: Path, n: int = 12) -> Path:
    base = root / "Slake1.0"
    for split in ("train", "validate", "test"):
        items = []
        for i in range(n):
            name = f"xmlab{i % 4}/source.jpg"
            tiny_image(base / "imgs" / name, (10, 10, 200), fmt="JPEG")
            lang = "en" if i % 3 else "zh"
            items.append({"img_id": i % 4, "img_name": name, "question": f"Which organ {i}?",
                          "answer": "Liver", "q_lang": lang, "location": "Abdomen",
                          "modality": "CT", "answer_type": "OPEN" if i % 2 else "CLOSED",
                          "base_type": "vqa", "content_type": "Organ", "triple": [],
                          "qid": 5000 + i})
        base.mkdir(parents=True, exist_ok=True)
        (base / f"{split}.json").write_text(json.dumps(items, ensure_ascii=False))
    return root


def make_medical(root: Path) -> Path:
    make_vqa_rad(root / "vqa_rad")
    make_medalpaca(root / "medalpaca")
    make_slake(root / "slake")
    return root
