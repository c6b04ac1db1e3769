"""``metrics.jsonl``: one JSON object per line, one line per round (or one-shot merge)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..files import atomic_write_text


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


class MetricsWriter:
    """Appends one line per round; each line is flushed so a crash loses nothing written.

    ``keep_rows`` > 0 (a resumed run) keeps the first ``keep_rows`` complete lines of an
    existing file and drops the rest (rows written after the checkpoint, or a line cut short by
    a crash); 0 starts an empty file.
    """

    def __init__(self, path: Path, keep_rows: int = 0):
        self.path = Path(path)
        kept: list[str] = []
        if keep_rows and self.path.is_file():
            lines = self.path.read_text(encoding="utf-8").split("\n")
            kept = [line for line in lines[:-1] if line.strip()][:keep_rows]  # [-1]: unterminated
            if len(kept) < keep_rows:
                raise ValueError(f"{self.path}: {len(kept)} complete rows, the checkpoint "
                                 f"expects {keep_rows}")
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        self.rows = [json.loads(line) for line in kept]

    def write(self, record: dict) -> None:
        record = _clean(record)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=False) + "\n")
        self.rows.append(record)


def read_metrics(path: str | Path) -> list[dict]:
    rows = []
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not valid JSON ({e.msg})") from None
    return rows


