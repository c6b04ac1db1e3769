"""The VQA-RAD dataset (Lau et al. 2018, "A dataset of clinically generated visual questions and
answers about radiology images", Scientific Data 5:180251): reader and spec (evaluation; its
training split is the image half of ``medical``).

Published layout: ``ROOT/VQA_RAD Dataset Public.json`` (a JSON list of questions with ``qid``,
``image_name``, ``question``, ``answer``, ``answer_type`` ``OPEN``/``CLOSED``,
``question_type``, ``phrase_type``) and the images in ``ROOT/images/``. The split is selected by
``phrase_type``: train = {``freeform``, ``para``}, test = {``test_freeform``, ``test_para``}.
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

VQA_RAD_FILE = "VQA_RAD Dataset Public.json"
VQA_RAD_PHRASES = {"train": ("freeform", "para"), "test": ("test_freeform", "test_para")}

__all__ = ["SPEC", "VQA_RAD_FILE", "VQA_RAD_PHRASES", "read_vqa_rad"]


def read_vqa_rad(root: str | Path, split: str = "train", skip_bad: bool = False) -> ReadResult:
    """Read ``ROOT/VQA_RAD Dataset Public.json``; ``split`` is ``train`` or ``test`` (selected
    by ``phrase_type``)."""
    if split not in VQA_RAD_PHRASES:
        raise DataError(f"{root}: unknown VQA-RAD split {split!r} (expected train or test)")
    root = Path(root)
    path = root / VQA_RAD_FILE
    col = RowCollector(path, skip_bad, "item")
    phrases = VQA_RAD_PHRASES[split]
    out: list[Sample] = []
    for _, where, obj in json_objects(path, "questions", col):
        try:
            phrase = typed_field(obj, "phrase_type", (str,)).strip()
            if phrase not in phrases:
                continue
            qid, question, answer, atype, image = vqa_row(obj, root / "images", "image_name")
            qtype = obj.get("question_type")
        except RowError as e:
            col.bad(where, str(e))
            continue
        out.append(Sample(
            id=f"vqarad-{qid}", task="vqa_rad", answer=answer, question=question, image=image,
            answer_type=atype,
            meta={"source": "vqa_rad", "split": split, "qid": qid,
                  "question_type": None if qtype is None else str(qtype),
                  "phrase_type": phrase},
        ))
    require_rows(out, path, f"{split} questions")
    return ReadResult(out, col.skipped)


def _read(source, split: str) -> ReadResult:
    return read_vqa_rad(source.data_dir, split, skip_bad=source.skip_bad)


SPEC = DatasetSpec(name="vqa_rad", kind="qa", doc="VQA-RAD (radiology VQA)", read=_read)
