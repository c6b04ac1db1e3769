"""The data layer's user-facing error."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data. The message is one line naming the file and the row, line or sample id.

    The CLI prints it without a traceback and exits with status 2.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split("\n")))
