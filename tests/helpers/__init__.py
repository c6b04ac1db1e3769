"""What the tests share: the repository's root, the test device, tiny runs, data fixtures in
the published formats, the model families' checkpoints, reference merges and a loopback
Flower grid. The tests import them as ``helpers.<module>`` (``tests/`` is on pytest's path)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository's root folder (where ``pyproject.toml`` is)."""
