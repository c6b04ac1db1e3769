"""The data layer's user-facing error."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data. The message is one line naming the file and the row, line or sample id.

    The CLI prints it without a traceback and exits with status 2.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split("\n")))


def where(path, row: int | str | None = None, kind: str = "line") -> str:
    """``"path"`` or ``"path, line 3"`` / ``"path, row 3"`` / ``"path, sample 42"``."""
    return str(path) if row is None else f"{path}, {kind} {row}"
