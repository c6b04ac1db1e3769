"""The Hateful Memes dataset (Kiela et al. 2020, arXiv 2005.04790): reader, template, spec.

Published layout: ``ROOT/{train,dev_seen,dev_unseen,test_seen,test_unseen}.jsonl`` and
``ROOT/img/``. One JSON object per line with ``id`` (int), ``img`` (path relative to ``ROOT``,
e.g. ``img/42953.png``), ``label`` (0 not-hateful, 1 hateful; may be absent in prediction-only
splits) and ``text`` (the caption written on the meme). A plain "test" means ``test_seen``
(the spec's ``test_split``).

A line that is not UTF-8, not JSON or not a valid row is one bad row (an error naming the
line, or skipped with ``skip_bad``).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DataError
from ..prompts import MCTemplate, mc_answer
from ..reading import (
    ReadResult,
    RowCollector,
    RowError,
    not_utf8,
    read_rows,
    require_file,
    resolve_image,
    typed_field,
)
from ..registry import mc_folder_spec
from ..types import Sample

HATEFUL_SPLITS = ("train", "dev_seen", "dev_unseen", "test_seen", "test_unseen")
HATEFUL_OPTIONS = ("not-hateful", "hateful")
TEMPLATE = MCTemplate("Is the content hateful", HATEFUL_OPTIONS)

__all__ = ["HATEFUL_OPTIONS", "HATEFUL_SPLITS", "SPEC", "TEMPLATE", "hateful_memes_path",
           "read_hateful_memes"]


def hateful_memes_path(root: str | Path, split: str) -> Path:
    if split not in HATEFUL_SPLITS:
        raise DataError(
            f"{root}: unknown Hateful-Memes split {split!r} (expected {HATEFUL_SPLITS})"
        )
    return Path(root) / f"{split}.jsonl"


def read_hateful_memes(
    root: str | Path, split: str = "train", require_labels: bool = True, skip_bad: bool = False
) -> ReadResult:
    """Read ``ROOT/{split}.jsonl``. Unlabelled rows are allowed with ``require_labels=False``
    (prediction only: ``label=None``, ``answer=""``)."""
    root = Path(root)
    path = hateful_memes_path(root, split)
    require_file(path, "Hateful-Memes split file")
    col = RowCollector(path, skip_bad, "line")

    def sample(line: str) -> Sample:
        if not_utf8(line):
            raise RowError("not UTF-8 text")
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise RowError(f"malformed JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise RowError("expected a JSON object")
        sid = typed_field(obj, "id", (int, str))
        text = typed_field(obj, "text", (str,))
        image = resolve_image(root, typed_field(obj, "img", (str,)))
        if "label" in obj and obj["label"] is not None:
            label = typed_field(obj, "label", (int,))
            if label not in (0, 1):
                raise RowError(f"unknown label {label!r} (expected 0 or 1)")
        elif require_labels:
            raise RowError("missing field 'label'")
        else:
            label = None
        return Sample(
            id=str(sid), task="hateful_memes",
            answer=mc_answer(HATEFUL_OPTIONS, label) if label is not None else "",
            image=image, text=text, label=label, options=HATEFUL_OPTIONS,
            meta={"source": "hateful_memes", "split": split},
        )

    # undecodable bytes are kept as surrogates so that one bad line is one bad row
    with path.open(encoding="utf-8", errors="surrogateescape") as f:
        lines = ((ln, line) for ln, line in enumerate(f, start=1) if line.strip())
        return read_rows(col, lines, sample, "rows")


def _read(source, split: str) -> ReadResult:
    return read_hateful_memes(source.data_dir, split, skip_bad=True)  # source.take decides


SPEC = mc_folder_spec("hateful_memes", "Hateful Memes (image + caption, 2 classes)", _read,
                      TEMPLATE, test_split="test_seen")
