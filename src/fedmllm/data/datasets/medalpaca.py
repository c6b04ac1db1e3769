"""The MedAlpaca medical flashcards (Medical Meadow, Han et al. 2023, "MedAlpaca",
arXiv 2304.08247), the text-only QA data of the medical setting.

Published layout: one JSON file, ``medical_meadow_wikidoc_medical_flashcards.json``, a list of
``{instruction, input, output}`` objects; question = ``input``, answer = ``output``. The path
may be the file or a folder holding it (or exactly one ``.json`` file). Items missing either
field are skipped and counted, as in the FedMLLM code (arXiv 2411.14717). Reader and spec (the
text half of ``medical``; not offered by ``fedmllm eval``).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from ..reading import ReadResult, RowCollector, RowError, json_objects, require_rows
from ..registry import DatasetSpec
from ..types import Sample

MEDALPACA_FILE = "medical_meadow_wikidoc_medical_flashcards.json"

__all__ = ["MEDALPACA_FILE", "SPEC", "read_medalpaca"]


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
    ``input`` or ``output`` are skipped and counted (as the FedMLLM code); items that are not
    objects or have non-string fields are errors (or skipped with ``skip_bad``)."""
    path = _medalpaca_file(Path(path))
    col = RowCollector(path, skip_bad, "item")
    out: list[Sample] = []
    incomplete: list[dict] = []
    for i, obj in json_objects(path, "{instruction, input, output} items", col, None):
        try:
            q, a = obj.get("input"), obj.get("output")
            for key, v in (("input", q), ("output", a)):
                if v is not None and not isinstance(v, str):
                    raise RowError(f"field '{key}' must be str, got {type(v).__name__}")
        except RowError as e:
            col.bad(i, str(e))
            continue
        if not q or not a or not q.strip() or not a.strip():
            incomplete.append({"file": str(path), "where": f"item {i}",
                               "reason": "missing input or output", "passed_over": True})
            continue
        out.append(Sample(id=f"medalpaca-{i}", task="medalpaca", answer=a, question=q,
                          answer_type="OPEN", meta={"source": "medalpaca"}))
    require_rows(out, path, "question/answer items", col.skipped)
    return ReadResult(out, col.skipped + incomplete)


def _read(source, split: str) -> ReadResult:
    """Every flashcard (the file has no splits)."""
    return read_medalpaca(source.data_dir, skip_bad=True)  # source.take decides


SPEC = DatasetSpec(name="medalpaca", kind="qa", doc="MedAlpaca medical flashcards (text QA)",
                   read=_read, eval=False)
