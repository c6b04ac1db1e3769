"""Every random draw of a run comes from a generator derived from ``(seed, *key)``.

A key is a path of integers and short strings, e.g. ``(seed, "batches", round, client)``. The
derivation goes through :class:`numpy.random.SeedSequence`, so different keys give
statistically independent streams, and a draw never depends on what was drawn before it in
the same process: client 3's batches in round 2 are the same whether it trains alone or after
clients 1 and 2, and a run resumed from a checkpoint draws exactly what the uninterrupted run
drew.

Strings are mapped to integers by a stable hash (BLAKE2b, not Python's salted ``hash``);
integers must be ``>= 0``. ``derive(seed, a, b)`` with integers only equals
``np.random.SeedSequence([seed, a, b])``, so streams written as
``default_rng(SeedSequence([seed, stream]))`` keep their values.

numpy only at import; :func:`torch_generator` and :func:`torch_seed` import torch when called,
so the data layer can use this module without torch.
"""

from __future__ import annotations

import hashlib
import numbers
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

Key = int | str


def _word(part: Key) -> int:
    if isinstance(part, str):
        return int.from_bytes(hashlib.blake2b(part.encode(), digest_size=8).digest(), "little")
    if isinstance(part, bool) or not isinstance(part, numbers.Integral) or part < 0:
        raise ValueError(f"seed key parts are strings or integers >= 0, got {part!r}")
    return int(part)


def derive(seed: int, *key: Key) -> np.random.SeedSequence:
    """The seed sequence of ``(seed, *key)``."""
    return np.random.SeedSequence([_word(seed), *(_word(p) for p in key)])


def numpy_rng(seed: int, *key: Key) -> np.random.Generator:
    """A numpy generator for ``(seed, *key)``."""
    return np.random.default_rng(derive(seed, *key))


def torch_seed(seed: int, *key: Key) -> int:
    """A 63-bit integer for ``torch.manual_seed`` / ``torch.Generator.manual_seed``."""
    return int(derive(seed, *key).generate_state(1, np.uint64)[0] >> np.uint64(1))


def torch_generator(seed: int, *key: Key, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded for ``(seed, *key)``."""
    import torch

    return torch.Generator(device=device).manual_seed(torch_seed(seed, *key))
