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
from ..reading import ReadResult, read_vqa_questions, typed_field
from ..registry import DatasetSpec

VQA_RAD_FILE = "VQA_RAD Dataset Public.json"
VQA_RAD_PHRASES = {"train": ("freeform", "para"), "test": ("test_freeform", "test_para")}

__all__ = ["SPEC", "VQA_RAD_FILE", "VQA_RAD_PHRASES", "read_vqa_rad"]


def read_vqa_rad(root: str | Path, split: str = "train", skip_bad: bool = False) -> ReadResult:
    """Read ``ROOT/VQA_RAD Dataset Public.json``; ``split`` is ``train`` or ``test`` (selected
    by ``phrase_type``)."""
    if split not in VQA_RAD_PHRASES:
        raise DataError(f"{root}: unknown VQA-RAD split {split!r} (expected train or test)")
    phrases = VQA_RAD_PHRASES[split]

    def meta(obj: dict) -> dict | None:
        phrase = typed_field(obj, "phrase_type", (str,)).strip()
        if phrase not in phrases:
            return None
        qtype = obj.get("question_type")
        return {"question_type": None if qtype is None else str(qtype), "phrase_type": phrase}

    root = Path(root)
    return read_vqa_questions(root / VQA_RAD_FILE, root / "images", "image_name", skip_bad, meta,
                              task="vqa_rad", id_prefix="vqarad", split=split)


def _read(source, split: str) -> ReadResult:
    return read_vqa_rad(source.data_dir, split, skip_bad=True)  # source.take decides


SPEC = DatasetSpec(name="vqa_rad", kind="qa", doc="VQA-RAD (radiology VQA)", read=_read)
