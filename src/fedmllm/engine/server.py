"""One server round: validate the updates, aggregate, check the result, count the bytes.

:class:`ServerRound` wraps a strategy of :mod:`fedmllm.fl` with what every driver needs around
it. Per round::

    accepted, rejected = validate(updates)          (keys, shapes, dtypes, finite, norm bound)
    if len(accepted) < max(fl.min_clients, strategy.min_updates): keep the global (skipped)
    new = strategy.aggregate(global, accepted, round)
    if new global or new strategy state is not finite: restore both, keep the global (skipped)

and the bytes that crossed the wire: every received update (state and extras) up, the global
state and the server's extras down to every trained client. A skipped round changes nothing on
the server, and no client keeps state from it (:attr:`RoundResult.accepted` is empty).

Through secure aggregation the server gets only the clients' mean update ``D``
(:meth:`ServerRound.run_mean`): the checks apply to ``D`` (finite, norm bound) and the
strategy steps on ``x + D`` as on one update.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..fl import ClientUpdate, StateDict, Strategy, filter_updates
from .factory import update_norm_bound


def state_bytes(state: StateDict) -> int:
    """Bytes of a tensor dict as stored (every key)."""
    return sum(t.numel() * t.element_size() for t in state.values())


def extras_bytes(extras: dict[str, StateDict]) -> int:
    return sum(state_bytes(d) for d in extras.values())


def state_norm(state: StateDict) -> float:
    """``||state||_2`` over the floating tensors (all keys jointly, in float64)."""
    total = 0.0
    for t in state.values():
        if t.is_floating_point():
            total += float(torch.linalg.vector_norm(t, dtype=torch.float64)) ** 2
    return total ** 0.5


def non_finite_keys(state: StateDict) -> list[str]:
    """Keys of floating tensors holding a NaN or an infinity."""
    return [k for k, t in state.items()
            if t.is_floating_point() and not bool(torch.isfinite(t).all())]


@dataclass
class RoundResult:
    """What a server round decided."""

    global_state: StateDict
    accepted: list[int] = field(default_factory=list)
    """Client ids whose updates went into the new global state (empty when skipped)."""
    rejected: list[tuple[int, str]] = field(default_factory=list)
    """``(client id, reasons)`` of updates that failed validation."""
    skipped: str | None = None
    """Why the global state was kept unchanged, or ``None``."""
    bytes_uploaded: int = 0
    bytes_downloaded: int = 0


class ServerRound:
    """Validation, aggregation and accounting around ``strategy`` (see the module docstring)."""

    def __init__(self, strategy: Strategy, *, max_update_norm: float | str | None = "auto",
                 min_clients: int = 1) -> None:
        self.strategy = strategy
        self.max_update_norm = max_update_norm
        self.min_clients = min_clients

    def norm_bound(self, global_state: StateDict) -> float | None:
        """This round's bound on ``||y - x||`` (``None`` = unbounded)."""
        dp = getattr(self.strategy, "accept_norm", None)  # client-clipped central DP: C(1+1e-6)
        if self.max_update_norm in (None, "none"):
            return dp
        norm = state_norm(global_state) if self.max_update_norm == "auto" else 0.0
        bound = update_norm_bound(self.max_update_norm, norm)
        return bound if dp is None else min(bound, dp)

    def run(self, global_state: StateDict, updates: list[ClientUpdate], round: int,
            server_extras: dict[str, StateDict] | None = None) -> RoundResult:
        """Round ``round`` (from 1) over the ``updates`` of the clients that trained in it."""
        down = (state_bytes(global_state) + extras_bytes(server_extras or {})) * len(updates)
        up = sum(state_bytes(u.state) + extras_bytes(u.extras) for u in updates)
        accepted, rejected, _ = filter_updates(updates, global_state,
                                               self.norm_bound(global_state))
        result = RoundResult(global_state, rejected=rejected, bytes_uploaded=up,
                             bytes_downloaded=down)
        need = max(self.min_clients, self.strategy.min_updates)
        if len(accepted) < need:
            result.skipped = (f"{len(accepted)} valid update(s), {need} needed "
                              f"(fl.min_clients={self.min_clients}, {self.strategy.name} needs "
                              f"{self.strategy.min_updates})")
            return result
        return self._step(result, global_state, accepted, round,
                          [u.client_id for u in accepted])

    def run_mean(self, global_state: StateDict, mean_delta: StateDict | None,
                 clients: list[int], num_examples: int, round: int) -> RoundResult:
        """Round ``round`` over the mean update ``D`` of ``clients`` alone (secure aggregation:
        no update of any one client is seen, so none is validated). The checks that remain
        apply to ``D``: finite, and ``||D|| <= fl.max_update_norm``'s bound (a mean above
        it means some update was; the round is skipped, since who cannot be told). The
        strategy steps on ``D`` as on one update ``x + D`` (its mean delta is ``D``)."""
        result = RoundResult(global_state)
        need = max(self.min_clients, self.strategy.min_updates)
        bound = self.norm_bound(global_state)
        if mean_delta is None or len(clients) < need:
            result.skipped = (f"{len(clients)} client(s) in the secure aggregate, {need} "
                              f"needed (fl.min_clients={self.min_clients})")
        elif non_finite_keys(mean_delta):
            result.skipped = (f"the secure aggregate is not finite (e.g. "
                              f"{non_finite_keys(mean_delta)[0]!r}); global kept")
        elif bound is not None and state_norm(mean_delta) > bound:
            result.skipped = (f"the secure aggregate's norm {state_norm(mean_delta):.4g} "
                              f"exceeds the update bound {bound:.4g}: some update did")
        if result.skipped:
            return result
        state = dict(global_state)
        state.update({k: (global_state[k].to(d.dtype) + d).to(global_state[k].dtype)
                      for k, d in mean_delta.items()})
        update = ClientUpdate(state=state, num_examples=max(num_examples, 1))
        return self._step(result, global_state, [update], round, sorted(clients))

    def _step(self, result: RoundResult, global_state: StateDict,
              accepted: list[ClientUpdate], round: int, clients: list[int]) -> RoundResult:
        """The strategy's step on ``accepted``; undone (global kept, ``skipped``) when the new
        global state or the strategy's state is not finite."""
        before = self.strategy.state_dict()
        new = self.strategy.aggregate(global_state, accepted, round)
        bad = non_finite_keys(new) or non_finite_keys(self.strategy.state_dict())
        if bad:
            self.strategy.load_state_dict(before)
            result.skipped = f"the aggregate is not finite (e.g. {bad[0]!r}); global kept"
            return result
        result.global_state = new
        result.accepted = clients
        return result
