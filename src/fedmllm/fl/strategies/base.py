"""The machinery every aggregating strategy shares: the delta-strategy base class (per-key
``x_new = step(x, reduce(deltas))``), the stateful mixin (per-key optimizer slots and their
``state_dict``), the coordinate-wise base of the robust rules, and :data:`VARIANTS`.

Notation (one round, one parameter key). ``x`` is the global tensor, ``S`` the clients that
returned this key, ``n_i`` their example counts, ``d_i = y_i - x`` their deltas, ``s_i`` the
optional clip factor ``min(1, C / ||d_i||)`` (``clip_norm`` = C, norm over the client's whole
update). Two mean deltas appear in the strategies::

    D_w = sum_{i in S} n_i s_i d_i / sum_{i in S} n_i      (example-weighted)
    D_u = (1 / |S|) sum_{i in S} s_i d_i                   (unweighted)

Heterogeneous clients: every rule is applied key by key over the clients that returned the key,
with the weights renormalised among them. A key that no client returned, or fewer than the
strategy's ``min_updates`` (3 for the median, ``ceil(1/beta)`` for the trimmed mean), keeps its
global value and its optimizer state is left untouched (no decay of momentum for keys nobody
trained; no robust rule silently turned into the mean).

``variant="textbook"`` follows the papers exactly as Flower 1.42's built-in strategies
(``flwr.serverapp.strategy``) compute them; ``variant="fedmllm"`` reproduces the server
optimisers of the FedMLLM research code (arXiv 2411.14717, OpenFedLLM-style: no bias correction,
unweighted mean deltas, ``v`` starting at ``tau^2``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..aggregation import (
    check_updates,
    clip_scales,
    in_compute_dtype,
    mean_deltas,
)
from ..checks import check_round, one_of, optional_positive, split_state_key
from ..types import ClientUpdate, StateDict, Strategy

VARIANTS: tuple[str, ...] = ("textbook", "fedmllm")
"""``textbook`` = the papers as Flower computes them; ``fedmllm`` = the FedMLLM research code."""


def check_variant(value: Any) -> str:
    return one_of("variant", value, VARIANTS)


class DeltaStrategy(Strategy):
    """``x_new = step(x, reduce(deltas))`` over the keys some client returned.

    Subclasses define ``_step`` (and ``_reduce`` for non-mean reductions). Both work on lists of
    keys at once so that the arithmetic runs as fused ``torch._foreach`` kernels.
    """

    weighted: bool = True
    """Weight deltas by ``num_examples`` (``D_w``) or not (``D_u``)."""

    def __init__(self, *, clip_norm: float | None = None) -> None:
        self.clip_norm = optional_positive("clip_norm", clip_norm)

    def aggregate(
        self, global_state: StateDict, updates: list[ClientUpdate], round: int
    ) -> StateDict:
        check_round(round)
        updates = list(updates)
        check_updates(global_state, updates)
        self._check_extras(global_state, updates)
        new = dict(global_state)
        need = self.min_updates  # fewer holders: the key keeps its value (and its state)
        keys = [
            k
            for k, x in global_state.items()
            if x.is_floating_point() and sum(k in u.state for u in updates) >= need
        ]
        if not keys:
            return new
        with torch.no_grad():
            scales = clip_scales(global_state, updates, self.clip_norm)
            deltas = self._reduce(global_state, updates, keys, scales)
            xs = [in_compute_dtype(global_state[k]) for k in keys]  # read-only (may alias input)
            stepped = self._step(keys, xs, [deltas[k] for k in keys], round)
            for k, t in zip(keys, stepped, strict=True):
                new[k] = t.to(global_state[k].dtype)
            self._finish_round(global_state, updates)
        return new

    def _check_extras(self, global_state: StateDict, updates: list[ClientUpdate]) -> None:
        """Hook: validate strategy-specific extras before anything changes."""

    def _reduce(
        self,
        global_state: StateDict,
        updates: list[ClientUpdate],
        keys: list[str],
        scales: list[float],
    ) -> dict[str, Tensor]:
        """Mean delta per key, ``D_w`` (``weighted``) or ``D_u``, in the compute dtype."""
        if self.weighted:
            weights = [float(u.num_examples) for u in updates]
        else:
            weights = [1.0] * len(updates)
        return mean_deltas(global_state, updates, keys, weights, scales)

    def _step(
        self, keys: list[str], xs: list[Tensor], deltas: list[Tensor], round: int
    ) -> list[Tensor]:
        """New values for ``keys`` (default ``x + delta``); must not modify ``xs`` in place."""
        return torch._foreach_add(xs, deltas)

    def _finish_round(self, global_state: StateDict, updates: list[ClientUpdate]) -> None:
        """Hook: update state that does not follow the model keys (SCAFFOLD's ``c``)."""

    def config(self) -> dict[str, Any]:
        return {"clip_norm": self.clip_norm}


class StatefulMixin:
    """``state_dict``/``load_state_dict`` for per-key optimizer slots ``self._slots[slot][key]``."""

    _slots: dict[str, StateDict]
    name: str

    def state_dict(self) -> StateDict:
        return {f"{slot}/{k}": t for slot, d in self._slots.items() for k, t in d.items()}

    def load_state_dict(self, state: StateDict) -> None:
        slots: dict[str, StateDict] = {slot: {} for slot in self._slots}
        for full, t in state.items():
            slot, key = split_state_key(full, tuple(self._slots), f"strategy {self.name!r}")
            slots[slot][key] = t.detach().clone()
        self._slots = slots


class CoordinateWise(DeltaStrategy):
    """Robust rules applied per key to the (clipped) deltas of the clients that sent the key;
    unweighted. Subclasses give :meth:`_reduce_key`."""

    weighted = False

    def _reduce_key(self, global_t: Tensor, tensors: list[Tensor], scales: list[float]) -> Tensor:
        raise NotImplementedError

    def _reduce(
        self,
        global_state: StateDict,
        updates: list[ClientUpdate],
        keys: list[str],
        scales: list[float],
    ) -> dict[str, Tensor]:
        out = {}
        for k in keys:
            sent = [(u.state[k], s) for u, s in zip(updates, scales, strict=True) if k in u.state]
            out[k] = self._reduce_key(global_state[k], [t for t, _ in sent], [s for _, s in sent])
        return out
