"""The CrisisMMD v2.0 dataset (Alam et al. 2018, "CrisisMMD: Multimodal Twitter Datasets from
Natural Disasters", ICWSM; arXiv 1805.00713), humanitarian task, text+image split: reader,
template, spec.

Published layout: ``ROOT/crisismmd_datasplit_all/task_humanitarian_text_img_{train,dev,test}.tsv``
(tab-separated, UTF-8, one header line) with at least the columns ``image_id``, ``tweet_text``,
``image`` (path relative to ``ROOT``, e.g. ``data_image/<event>/<date>/<id>.jpg``) and
``label_image``; ``event_name`` is kept when present. The ground truth is ``label_image``, one
of the 8 humanitarian classes in the order of
:data:`CRISISMMD_OPTIONS`. The tweet text is cleaned as in the FedMLLM
code (arXiv 2411.14717): URLs removed (:func:`remove_url`).
"""

from __future__ import annotations

import csv
import re
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
)
from ..registry import mc_folder_spec
from ..types import Sample

CRISISMMD_SPLITS = ("train", "dev", "test")
CRISISMMD_DIR = "crisismmd_datasplit_all"
CRISISMMD_COLUMNS = ("image_id", "tweet_text", "image", "label_image")
_URL = re.compile(r"http\S+")
CRISISMMD_OPTIONS = (
    "affected_individuals",
    "infrastructure_and_utility_damage",
    "injured_or_dead_people",
    "missing_or_found_people",
    "rescue_volunteering_or_donation_effort",
    "vehicle_damage",
    "other_relevant_information",
    "not_humanitarian",
)
TEMPLATE = MCTemplate(
    "What is the humanitarian category", CRISISMMD_OPTIONS, both_phrase="the image and text"
)

__all__ = ["CRISISMMD_COLUMNS", "CRISISMMD_DIR", "CRISISMMD_OPTIONS", "CRISISMMD_SPLITS", "SPEC",
           "TEMPLATE", "crisismmd_path", "read_crisismmd", "remove_url"]


def remove_url(text: str) -> str:
    """The FedMLLM code's tweet cleaning: drop ``http\\S+`` then strip."""
    return _URL.sub("", text).strip()


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
            if not_utf8(line):
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
    where the FedMLLM code silently reused the previous row's label)."""
    root = Path(root)
    path = crisismmd_path(root, split)
    require_file(path, "CrisisMMD split file")
    col = RowCollector(path, skip_bad, "line")
    header, rows = _read_tsv(path)
    missing_cols = [c for c in CRISISMMD_COLUMNS if c not in header]
    if missing_cols:
        raise DataError(f"{path}, line 1: missing column(s) {', '.join(missing_cols)}")

    def sample(row: dict) -> Sample:
        if None in row or any(v is None for v in row.values()):
            raise RowError(f"expected {len(header)} tab-separated fields, got a different number")
        label_name = row["label_image"].strip()
        if label_name not in CRISISMMD_OPTIONS:
            raise RowError(f"unknown label_image {label_name!r}")
        sid = row["image_id"].strip()
        if not sid:
            raise RowError("empty image_id")
        image = resolve_image(root, row["image"].strip())
        label = CRISISMMD_OPTIONS.index(label_name)
        return Sample(
            id=sid, task="crisismmd", answer=mc_answer(CRISISMMD_OPTIONS, label),
            image=image, text=remove_url(row["tweet_text"]), label=label,
            options=CRISISMMD_OPTIONS,
            meta={"source": "crisismmd", "split": split,
                  "event_name": (row.get("event_name") or "").strip()},
        )

    return read_rows(col, rows, sample, "rows")


def _read(source, split: str) -> ReadResult:
    return read_crisismmd(source.data_dir, split, skip_bad=True)  # source.take decides


SPEC = mc_folder_spec("crisismmd", "CrisisMMD v2.0 humanitarian task (image + tweet, 8 classes)",
                      _read, TEMPLATE)
