"""Server-side checks of untrusted client updates before aggregation."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .aggregation import delta_norm
from .checks import is_integer
from .types import ClientUpdate, StateDict


def validate_update(
    update: ClientUpdate, global_state: StateDict, max_norm: float | None = None
) -> list[str]:
    """Reasons to reject ``update`` (an empty list means it is acceptable).

    Checks: ``num_examples`` is a positive integer (Python or numpy); every state key is a
    global key (a subset is fine: heterogeneous clients); shapes and dtypes equal the global
    ones; floating values are finite; extras (e.g. SCAFFOLD ``control_delta``) use global keys
    and shapes and are finite; and, when ``max_norm`` is given,
    ``||state - global||_2 <= max_norm`` (over all returned keys).
    """
    reasons: list[str] = []
    n = update.num_examples
    if not is_integer(n) or n <= 0:  # numpy integers are integers too
        # the value and its type, the same under every numpy (numpy 2 writes np.float64(7.0))
        reasons.append(f"num_examples must be a positive integer, got {n} "
                       f"({type(n).__name__})")
    for key, t in update.state.items():
        g = global_state.get(key)
        if g is None:
            reasons.append(f"unexpected key {key!r}")
            continue
        if not isinstance(t, torch.Tensor):
            reasons.append(f"{key!r} is a {type(t).__name__}, not a tensor")
            continue
        if t.shape != g.shape:
            reasons.append(f"{key!r} has shape {tuple(t.shape)}, expected {tuple(g.shape)}")
            continue
        if t.dtype != g.dtype:
            reasons.append(f"{key!r} has dtype {t.dtype}, expected {g.dtype}")
            continue
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            reasons.append(f"{key!r} has non-finite values")
    for channel, tensors in update.extras.items():
        for key, t in tensors.items():
            g = global_state.get(key)
            where = f"extras[{channel!r}][{key!r}]"
            if g is None:
                reasons.append(f"{where}: unexpected key")
            elif not isinstance(t, torch.Tensor) or not t.is_floating_point():
                reasons.append(f"{where}: not a floating-point tensor")
            elif t.shape != g.shape:
                reasons.append(f"{where} has shape {tuple(t.shape)}, expected {tuple(g.shape)}")
            elif not bool(torch.isfinite(t).all()):
                reasons.append(f"{where} has non-finite values")
    if max_norm is not None and not reasons:
        norm = delta_norm(update.state, global_state)
        if not norm <= max_norm:
            reasons.append(f"update norm {norm:.6g} exceeds max_norm {max_norm:.6g}")
    return reasons


def filter_updates(
    updates: Iterable[ClientUpdate],
    global_state: StateDict,
    max_norm: float | None = None,
    min_clients: int = 1,
) -> tuple[list[ClientUpdate], list[tuple[int, str]], bool]:
    """Split updates into accepted and rejected ones.

    Returns ``(accepted, rejected, skip_round)`` where ``rejected`` holds
    ``(client_id, "reason; reason")`` pairs and ``skip_round`` is true when fewer than
    ``min_clients`` updates were accepted (the driver then keeps the global state and the
    server optimizer state unchanged for this round).
    """
    accepted: list[ClientUpdate] = []
    rejected: list[tuple[int, str]] = []
    for u in updates:
        reasons = validate_update(u, global_state, max_norm)
        if reasons:
            rejected.append((u.client_id, "; ".join(reasons)))
        else:
            accepted.append(u)
    return accepted, rejected, len(accepted) < min_clients
