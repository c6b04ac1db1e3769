"""Errors the command line reports as one line (kept free of heavy imports, so every command
can catch them without loading torch)."""


class ModelError(ValueError):
    """A model or processor that cannot be loaded or used; the message names it."""


class OutputError(ValueError):
    """An output folder that cannot be used or written; the message names the path."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file."""
