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
from ..reading import ReadResult, read_vqa_questions, typed_field
from ..registry import DatasetSpec

SLAKE_SPLITS = ("train", "validate", "test")

__all__ = ["SLAKE_SPLITS", "SPEC", "read_slake"]


def read_slake(
    root: str | Path, split: str = "test", languages: tuple[str, ...] | None = ("en",),
    skip_bad: bool = False,
) -> ReadResult:
    """Read ``ROOT/Slake1.0/{split}.json``; ``languages=None`` keeps every ``q_lang``."""
    if split not in SLAKE_SPLITS:
        raise DataError(f"{root}: unknown SLAKE split {split!r} (expected {SLAKE_SPLITS})")

    def meta(obj: dict) -> dict | None:
        lang = typed_field(obj, "q_lang", (str,)).strip()
        if languages is not None and lang not in languages:
            return None
        ctype = obj.get("content_type")
        return {"q_lang": lang, "question_type": None if ctype is None else str(ctype)}

    base = Path(root) / "Slake1.0"
    return read_vqa_questions(base / f"{split}.json", base / "imgs", "img_name", skip_bad, meta,
                              task="slake", id_prefix="slake", split=split)


def _read(source, split: str) -> ReadResult:
    return read_slake(source.data_dir, split, skip_bad=True)  # source.take decides


SPEC = DatasetSpec(name="slake", kind="qa", doc="SLAKE 1.0 (medical VQA, English)", read=_read)
