"""Deterministic per-round client sampling."""

from __future__ import annotations

import numpy as np


def sample_clients(num_clients: int, per_round: int, round: int, seed: int) -> list[int]:
    """Sorted ids of the clients trained in ``round``, drawn without replacement.

    The draw depends only on ``(seed, round)`` (a local ``numpy.random.Generator`` seeded with
    both), never on global RNG state, so a resumed run samples exactly the same clients.
    ``per_round >= num_clients`` selects every client.
    """
    for name, value, low in (("num_clients", num_clients, 1), ("per_round", per_round, 1),
                             ("round", round, 0), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if per_round >= num_clients:
        return list(range(num_clients))
    rng = np.random.default_rng([int(seed), int(round)])
    chosen = rng.choice(num_clients, size=per_round, replace=False)
    return sorted(int(c) for c in chosen)
