"""Readers of the real datasets' published formats into :class:`~fedmllm.data.records.Sample`.

- Hateful-Memes (Facebook challenge layout): ``ROOT/{train,dev_seen,dev_unseen,test_seen,
  test_unseen}.jsonl`` + ``ROOT/img/``; one JSON object per line with ``id`` (int), ``img``
  (relative path), ``label`` (0 not-hateful, 1 hateful; may be absent in prediction-only
  splits), ``text``.
- CrisisMMD v2.0, humanitarian task, text+image split:
  ``ROOT/crisismmd_datasplit_all/task_humanitarian_text_img_{train,dev,test}.tsv``; ground truth
  is ``label_image`` (8 classes in the paper's order); tweet text with URLs removed.
- VQA-RAD: ``ROOT/VQA_RAD Dataset Public.json`` + ``ROOT/images/``; train = ``phrase_type`` in
  {freeform, para}, test = {test_freeform, test_para}.
- SLAKE 1.0: ``ROOT/Slake1.0/{train,validate,test}.json`` + ``ROOT/Slake1.0/imgs/``; English
  only by default.
- MedAlpaca medical flashcards: a JSON list of ``{instruction, input, output}``; question =
  ``input``, answer = ``output``; items missing either are skipped and counted.

Images become absolute path strings, resolved inside the dataset root: a path that escapes it
(``..``, absolute) is an error. :func:`check_images` verifies existence and a decodable header.

Every problem with the input raises :class:`~fedmllm.data.errors.DataError` with one line
naming the file and the line, row or sample id. With ``skip_bad=True`` per-item problems (bad
row, unknown label, wrong type, malformed line, bad image path) are skipped instead and
reported in :attr:`ReadResult.skipped`; file-level problems (missing file or column, empty
split) always raise. Text is UTF-8: a Hateful-Memes line that is not is a bad row; a CrisisMMD
line or a JSON file that is not is an error naming the line.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DataError
from .prompts import CRISISMMD_OPTIONS, HATEFUL_OPTIONS, mc_answer
from .types import Sample

HATEFUL_SPLITS = ("train", "dev_seen", "dev_unseen", "test_seen", "test_unseen")
CRISISMMD_SPLITS = ("train", "dev", "test")
CRISISMMD_DIR = "crisismmd_datasplit_all"
CRISISMMD_COLUMNS = ("image_id", "tweet_text", "image", "label_image")
VQA_RAD_FILE = "VQA_RAD Dataset Public.json"
VQA_RAD_PHRASES = {"train": ("freeform", "para"), "test": ("test_freeform", "test_para")}
SLAKE_SPLITS = ("train", "validate", "test")
# the split a plain "test" means, where the dataset has no split of that name
TEST_SPLITS = {"hateful_memes": "test_seen", "crisismmd": "test"}
MEDALPACA_FILE = "medical_meadow_wikidoc_medical_flashcards.json"
_URL = re.compile(r"http\S+")

__all__ = [
    "TEST_SPLITS",
    "ReadResult",
    "check_images",
    "crisismmd_path",
    "hateful_memes_path",
    "load_json",
    "read_crisismmd",
    "read_hateful_memes",
    "read_medalpaca",
    "read_slake",
    "read_vqa_rad",
    "remove_url",
    "resolve_image",
]


@dataclass
class ReadResult:
    """Samples read from one split, and the items skipped (``{"file", "where", "reason"}``)."""

    samples: list[Sample]
    skipped: list[dict] = field(default_factory=list)

    def __iter__(self):  # so ``samples, skipped = read_...(...)`` works
        return iter((self.samples, self.skipped))


class _RowError(Exception):
    """A problem with one item (caught and turned into a DataError or a skip)."""


class _Collector:
    def __init__(self, path: Path, skip_bad: bool, kind: str):
        self.path, self.skip_bad, self.kind = path, skip_bad, kind
        self.skipped: list[dict] = []

    def bad(self, where: Any, reason: str) -> None:
        if not self.skip_bad:
            raise DataError(f"{self.path}, {self.kind} {where}: {reason}")
        self.skipped.append({"file": str(self.path), "where": f"{self.kind} {where}",
                             "reason": reason})


def remove_url(text: str) -> str:
    """The research code's tweet cleaning: drop ``http\\S+`` then strip."""
    return _URL.sub("", text).strip()


def resolve_image(root: Path, rel: str) -> str:
    """``root/rel`` as an absolute, normalised path string; ``rel`` must stay inside ``root``.

    The check is lexical (``..`` and absolute paths are refused); symbolic links inside the
    root are followed when the image is opened, so an ``img/`` link to another disk works.
    """
    if not isinstance(rel, str) or not rel.strip():
        raise _RowError(f"image path must be a non-empty string, got {rel!r}")
    if os.path.isabs(rel) or rel.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", rel):
        raise _RowError(f"image path {rel!r} is absolute (must be relative to {root})")
    root_abs = os.path.abspath(root)
    full = os.path.normpath(os.path.join(root_abs, rel))
    if not full.startswith(root_abs.rstrip(os.sep) + os.sep):
        raise _RowError(f"image path {rel!r} escapes the dataset root {root}")
    return full


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")


def load_json(path: Path) -> Any:
    """The JSON document in ``path`` (UTF-8); a missing file, bytes that are not UTF-8 or
    malformed JSON raise a :class:`DataError` naming the file and the line."""
    _require_file(path, "file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}, line {line}: not UTF-8 text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}, line {e.lineno}: malformed JSON ({e.msg})") from None


def _field(obj: dict, key: str, types: tuple) -> Any:
    if key not in obj:
        raise _RowError(f"missing field '{key}'")
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, types):
        names = "/".join(t.__name__ for t in types)
        raise _RowError(f"field '{key}' must be {names}, got {type(v).__name__} {v!r}")
    return v


def _nonempty(samples: list, path: Path, what: str) -> None:
    if not samples:
        raise DataError(f"{path}: empty split (no usable {what})")


def _not_utf8(line: str) -> bool:
    """Whether ``line``, read with ``errors="surrogateescape"``, held bytes that are not UTF-8."""
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _json_objects(path: Path, what: str, col: _Collector, id_key: str | None = "qid"):
    """``(index, where, object)`` for each item of the JSON list in ``path`` (a list of
    ``what``); ``where`` names the index and, when present, the item's ``id_key``. Items that
    are not objects are bad items."""
    data = load_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of {what}")
    for i, obj in enumerate(data):
        if not isinstance(obj, dict):
            col.bad(i, "expected a JSON object")
            continue
        yield i, (f"{i} ({id_key} {obj[id_key]})" if id_key and id_key in obj else i), obj


# ----------------------------------------------------------------------------- Hateful-Memes


def hateful_memes_path(root: str | Path, split: str) -> Path:
    if split not in HATEFUL_SPLITS:
        raise DataError(f"{root}: unknown Hateful-Memes split {split!r} (expected {HATEFUL_SPLITS})")
    return Path(root) / f"{split}.jsonl"


def read_hateful_memes(
    root: str | Path, split: str = "train", require_labels: bool = True, skip_bad: bool = False
) -> ReadResult:
    """Read ``ROOT/{split}.jsonl``. Unlabelled rows are allowed with ``require_labels=False``
    (prediction only: ``label=None``, ``answer=""``)."""
    root = Path(root)
    path = hateful_memes_path(root, split)
    _require_file(path, "Hateful-Memes split file")
    col = _Collector(path, skip_bad, "line")
    out: list[Sample] = []
    # undecodable bytes are kept as surrogates so that one bad line is one bad row
    with path.open(encoding="utf-8", errors="surrogateescape") as f:
        for ln, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                if _not_utf8(line):
                    raise _RowError("not UTF-8 text")
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise _RowError(f"malformed JSON ({e.msg})") from None
                if not isinstance(obj, dict):
                    raise _RowError("expected a JSON object")
                sid = _field(obj, "id", (int, str))
                text = _field(obj, "text", (str,))
                image = resolve_image(root, _field(obj, "img", (str,)))
                if "label" in obj and obj["label"] is not None:
                    label = _field(obj, "label", (int,))
                    if label not in (0, 1):
                        raise _RowError(f"unknown label {label!r} (expected 0 or 1)")
                elif require_labels:
                    raise _RowError("missing field 'label'")
                else:
                    label = None
            except _RowError as e:
                col.bad(ln, str(e))
                continue
            out.append(Sample(
                id=str(sid), task="hateful_memes",
                answer=mc_answer(HATEFUL_OPTIONS, label) if label is not None else "",
                image=image, text=text, label=label, options=HATEFUL_OPTIONS,
                meta={"source": "hateful_memes", "split": split},
            ))
    _nonempty(out, path, "rows")
    return ReadResult(out, col.skipped)


# ----------------------------------------------------------------------------- CrisisMMD


def crisismmd_path(root: str | Path, split: str) -> Path:
    if split not in CRISISMMD_SPLITS:
        raise DataError(f"{root}: unknown CrisisMMD split {split!r} (expected {CRISISMMD_SPLITS})")
    return Path(root) / CRISISMMD_DIR / f"task_humanitarian_text_img_{split}.tsv"


def _read_tsv(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """The header and the ``(line, row)`` pairs of a tab-separated UTF-8 file (no quoting).
    Bytes that are not UTF-8 or a row the csv module refuses raise a :class:`DataError`
    naming the line."""
    def lines(f):
        for ln, line in enumerate(f, start=1):
            if _not_utf8(line):
                raise DataError(f"{path}, line {ln}: not UTF-8 text")
            yield line

    # undecodable bytes are kept as surrogates so that the error names their line
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as f:
        reader = csv.DictReader(lines(f), delimiter="\t", quoting=csv.QUOTE_NONE)
        try:
            header = reader.fieldnames or []
            rows = [(reader.line_num, row) for row in reader]
        except csv.Error as e:  # DictReader's own line_num lags behind on an error
            raise DataError(f"{path}, line {reader.reader.line_num}: malformed TSV ({e})"
                            ) from None
    return list(header), rows


def read_crisismmd(root: str | Path, split: str = "train", skip_bad: bool = False) -> ReadResult:
    """Read the humanitarian text+image TSV; label = ``label_image`` (errors on unknown labels,
    where the research code silently reused the previous row's label)."""
    root = Path(root)
    path = crisismmd_path(root, split)
    _require_file(path, "CrisisMMD split file")
    col = _Collector(path, skip_bad, "line")
    out: list[Sample] = []
    header, rows = _read_tsv(path)
    missing_cols = [c for c in CRISISMMD_COLUMNS if c not in header]
    if missing_cols:
        raise DataError(f"{path}, line 1: missing column(s) {', '.join(missing_cols)}")
    for ln, row in rows:
        try:
            if None in row or any(v is None for v in row.values()):
                raise _RowError(
                    f"expected {len(header)} tab-separated fields, got a different number"
                )
            label_name = row["label_image"].strip()
            if label_name not in CRISISMMD_OPTIONS:
                raise _RowError(f"unknown label_image {label_name!r}")
            sid = row["image_id"].strip()
            if not sid:
                raise _RowError("empty image_id")
            image = resolve_image(root, row["image"].strip())
        except _RowError as e:
            col.bad(ln, str(e))
            continue
        label = CRISISMMD_OPTIONS.index(label_name)
        out.append(Sample(
            id=sid, task="crisismmd", answer=mc_answer(CRISISMMD_OPTIONS, label),
            image=image, text=remove_url(row["tweet_text"]), label=label,
            options=CRISISMMD_OPTIONS,
            meta={"source": "crisismmd", "split": split,
                  "event_name": (row.get("event_name") or "").strip()},
        ))
    _nonempty(out, path, "rows")
    return ReadResult(out, col.skipped)


# ----------------------------------------------------------------------------- VQA-RAD / SLAKE


def _answer_string(obj: dict) -> str:
    v = _field(obj, "answer", (str, int, float))
    return str(v).strip()


def _vqa_row(obj: dict, images: Path, image_key: str) -> tuple:
    """The fields VQA-RAD and SLAKE share: qid, question, answer, answer_type, image path."""
    qid = _field(obj, "qid", (int, str))
    question = _field(obj, "question", (str,))
    answer = _answer_string(obj)
    atype = _field(obj, "answer_type", (str,)).strip().upper()
    if atype not in ("OPEN", "CLOSED"):
        raise _RowError(f"unknown answer_type {atype!r} (expected OPEN or CLOSED)")
    image = resolve_image(images, _field(obj, image_key, (str,)))
    return qid, question, answer, atype, image


def read_vqa_rad(root: str | Path, split: str = "train", skip_bad: bool = False) -> ReadResult:
    """Read ``ROOT/VQA_RAD Dataset Public.json``; ``split`` is ``train`` or ``test`` (selected
    by ``phrase_type``)."""
    if split not in VQA_RAD_PHRASES:
        raise DataError(f"{root}: unknown VQA-RAD split {split!r} (expected train or test)")
    root = Path(root)
    path = root / VQA_RAD_FILE
    col = _Collector(path, skip_bad, "item")
    phrases = VQA_RAD_PHRASES[split]
    out: list[Sample] = []
    for _, where, obj in _json_objects(path, "questions", col):
        try:
            phrase = _field(obj, "phrase_type", (str,)).strip()
            if phrase not in phrases:
                continue
            qid, question, answer, atype, image = _vqa_row(obj, root / "images", "image_name")
            qtype = obj.get("question_type")
        except _RowError as e:
            col.bad(where, str(e))
            continue
        out.append(Sample(
            id=f"vqarad-{qid}", task="vqa_rad", answer=answer, question=question, image=image,
            answer_type=atype,
            meta={"source": "vqa_rad", "split": split, "qid": qid,
                  "question_type": None if qtype is None else str(qtype),
                  "phrase_type": phrase},
        ))
    _nonempty(out, path, f"{split} questions")
    return ReadResult(out, col.skipped)


def read_slake(
    root: str | Path, split: str = "test", languages: tuple[str, ...] | None = ("en",),
    skip_bad: bool = False,
) -> ReadResult:
    """Read ``ROOT/Slake1.0/{split}.json``; ``languages=None`` keeps every ``q_lang``."""
    if split not in SLAKE_SPLITS:
        raise DataError(f"{root}: unknown SLAKE split {split!r} (expected {SLAKE_SPLITS})")
    base = Path(root) / "Slake1.0"
    path = base / f"{split}.json"
    col = _Collector(path, skip_bad, "item")
    out: list[Sample] = []
    for _, where, obj in _json_objects(path, "questions", col):
        try:
            lang = _field(obj, "q_lang", (str,)).strip()
            if languages is not None and lang not in languages:
                continue
            qid, question, answer, atype, image = _vqa_row(obj, base / "imgs", "img_name")
            ctype = obj.get("content_type")
        except _RowError as e:
            col.bad(where, str(e))
            continue
        out.append(Sample(
            id=f"slake-{qid}", task="slake", answer=answer, question=question, image=image,
            answer_type=atype,
            meta={"source": "slake", "split": split, "qid": qid, "q_lang": lang,
                  "question_type": None if ctype is None else str(ctype)},
        ))
    _nonempty(out, path, f"{split} questions")
    return ReadResult(out, col.skipped)


# ----------------------------------------------------------------------------- MedAlpaca


def _medalpaca_file(path: Path) -> Path:
    if path.is_dir():
        default = path / MEDALPACA_FILE
        if default.is_file():
            return default
        found = sorted(path.glob("*.json"))
        if len(found) == 1:
            return found[0]
        raise DataError(
            f"{path}: expected {MEDALPACA_FILE} (or exactly one .json file) in the folder"
        )
    return path


def read_medalpaca(path: str | Path, skip_bad: bool = False) -> ReadResult:
    """Read the flashcards JSON list (a file, or a folder holding it). Items lacking a non-empty
    ``input`` or ``output`` are skipped and counted (as the research code); items that are not
    objects or have non-string fields are errors (or skipped with ``skip_bad``)."""
    path = _medalpaca_file(Path(path))
    col = _Collector(path, skip_bad, "item")
    out: list[Sample] = []
    incomplete: list[dict] = []
    for i, _, obj in _json_objects(path, "{instruction, input, output} items", col, None):
        try:
            q, a = obj.get("input"), obj.get("output")
            for key, v in (("input", q), ("output", a)):
                if v is not None and not isinstance(v, str):
                    raise _RowError(f"field '{key}' must be str, got {type(v).__name__}")
        except _RowError as e:
            col.bad(i, str(e))
            continue
        if not q or not a or not q.strip() or not a.strip():
            incomplete.append({"file": str(path), "where": f"item {i}",
                               "reason": "missing input or output"})
            continue
        out.append(Sample(id=f"medalpaca-{i}", task="medalpaca", answer=a, question=q,
                          answer_type="OPEN", meta={"source": "medalpaca"}))
    _nonempty(out, path, "question/answer items")
    return ReadResult(out, col.skipped + incomplete)


# ----------------------------------------------------------------------------- image checks


def check_images(samples: list[Sample], skip_bad: bool = False, source: str = ""
                 ) -> tuple[list[Sample], list[dict]]:
    """Check that every path image exists and has a decodable header (cheap: no full decode).

    Returns ``(kept, skipped)``; without ``skip_bad`` the first bad image raises a
    :class:`DataError` naming the file and the sample id. In-memory images pass.
    """
    from PIL import Image, UnidentifiedImageError

    kept, skipped = [], []
    for s in samples:
        if s.image is None or not isinstance(s.image, (str, Path)):
            kept.append(s)
            continue
        reason = None
        p = Path(s.image)
        if not p.is_file():
            reason = "image not found"
        else:
            try:
                with Image.open(p) as im:
                    w, h = im.size
                    if w <= 0 or h <= 0:
                        reason = "image has no pixels"
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
                reason = f"image cannot be decoded ({type(e).__name__})"
        if reason is None:
            kept.append(s)
        elif skip_bad:
            skipped.append({"file": str(p), "where": f"sample {s.id}", "reason": reason,
                            "source": source})
        else:
            raise DataError(f"{p}, sample {s.id}: {reason}")
    return kept, skipped
