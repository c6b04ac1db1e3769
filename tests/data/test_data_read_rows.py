"""The one loop every dataset reader runs over its rows (:func:`fedmllm.data.reading.read_rows`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedmllm.data import DataError
from fedmllm.data.reading import RowCollector, RowError, read_rows
from fedmllm.data.types import Sample


def _row(item: str) -> Sample | None:
    if item == "bad":
        raise RowError("a bad row")
    if item == "other":
        return None  # another split: passed over, not counted
    return Sample(id=item, task="toy", answer="a", text=item)


def test_bad_rows_raise_naming_file_and_place():
    col = RowCollector(Path("toy.jsonl"), False, "line")
    with pytest.raises(DataError, match=r"^toy.jsonl, line 2: a bad row$"):
        read_rows(col, [(1, "x"), (2, "bad"), (3, "y")], _row, "rows")


def test_skip_bad_records_bad_rows_and_passes_over_none():
    col = RowCollector(Path("toy.jsonl"), True, "line")
    samples, skipped = read_rows(col, [(1, "x"), (2, "bad"), (3, "other"), (4, "y")], _row,
                                 "rows")
    assert [s.id for s in samples] == ["x", "y"]
    assert skipped == [{"file": "toy.jsonl", "where": "line 2", "reason": "a bad row"}]


def test_no_sample_left_is_a_file_level_error():
    col = RowCollector(Path("toy.jsonl"), True, "item")
    with pytest.raises(DataError, match=r"^toy.jsonl: empty split \(no usable test questions\)"):
        read_rows(col, [(0, "bad"), (1, "other")], _row, "test questions")
