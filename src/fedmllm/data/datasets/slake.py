"""The SLAKE 1.0 dataset (Liu et al. 2021, "SLAKE: A Semantically-Labeled Knowledge-Enhanced
Dataset for Medical Visual Question Answering", ISBI; arXiv 2102.09542).

Published layout: ``ROOT/Slake1.0/{train,validate,test}.json`` (JSON lists of questions with
``qid``, ``img_name``, ``question``, ``answer``, ``answer_type`` ``OPEN``/``CLOSED``,
``q_lang`` ``en``/``zh``, ``content_type``) and the images in ``ROOT/Slake1.0/imgs/``
(``img_name`` is relative to it). English questions only by default. Reader and spec
(evaluation; ``medical``'s extra test set).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from ..reading import (
    ReadResult,
    RowCollector,
    RowError,
    json_objects,
    require_rows,
    typed_field,
    vqa_row,
)
from ..registry import DatasetSpec
from ..types import Sample

SLAKE_SPLITS = ("train", "validate", "test")

__all__ = ["SLAKE_SPLITS", "SPEC", "read_slake"]


def read_slake(
    root: str | Path, split: str = "test", languages: tuple[str, ...] | None = ("en",),
    skip_bad: bool = False,
) -> ReadResult:
    """Read ``ROOT/Slake1.0/{split}.json``; ``languages=None`` keeps every ``q_lang``."""
    if split not in SLAKE_SPLITS:
        raise DataError(f"{root}: unknown SLAKE split {split!r} (expected {SLAKE_SPLITS})")
    base = Path(root) / "Slake1.0"
    path = base / f"{split}.json"
    col = RowCollector(path, skip_bad, "item")
    out: list[Sample] = []
    for _, where, obj in json_objects(path, "questions", col):
        try:
            lang = typed_field(obj, "q_lang", (str,)).strip()
            if languages is not None and lang not in languages:
                continue
            qid, question, answer, atype, image = vqa_row(obj, base / "imgs", "img_name")
            ctype = obj.get("content_type")
        except RowError as e:
            col.bad(where, str(e))
            continue
        out.append(Sample(
            id=f"slake-{qid}", task="slake", answer=answer, question=question, image=image,
            answer_type=atype,
            meta={"source": "slake", "split": split, "qid": qid, "q_lang": lang,
                  "question_type": None if ctype is None else str(ctype)},
        ))
    require_rows(out, path, f"{split} questions")
    return ReadResult(out, col.skipped)


def _read(source, split: str) -> ReadResult:
    return read_slake(source.data_dir, split, skip_bad=source.skip_bad)


SPEC = DatasetSpec(name="slake", kind="qa", doc="SLAKE 1.0 (medical VQA, English)", read=_read)
