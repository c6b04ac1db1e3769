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
optimisers of the FedMLLM research code (arXiv 2411.14717, https://github.com/1xbq1/FedMLLM;
OpenFedLLM-style: no bias correction, unweighted mean deltas, ``v`` starting at ``tau^2``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..aggregation import (
    Layout,
    check_updates,
    clip_scales,
    contributor_groups,
    mean_delta,
)
from ..checks import check_round, one_of, optional_positive, split_state_key
from ..types import ClientUpdate, StateDict, Strategy

VARIANTS: tuple[str, ...] = ("textbook", "fedmllm")
"""``textbook`` = the papers as Flower computes them; ``fedmllm`` = the FedMLLM research code."""


def check_variant(value: Any) -> str:
    return one_of("variant", value, VARIANTS)


class DeltaStrategy(Strategy):
    """``x_new = step(x, reduce(deltas))`` over the keys enough clients returned.

    The keys are grouped by the clients that returned them (and by dtype), each group laid out
    in one flat buffer (:class:`~fedmllm.fl.aggregation.Layout`); subclasses define ``_step``
    (and ``_reduce`` for non-mean reductions) on those flat buffers, so the arithmetic runs as
    a few large kernels instead of one per tensor.
    """

    weighted: bool = True
    """Weight deltas by ``num_examples`` (``D_w``) or not (``D_u``)."""

    reduce_plus_global: bool = False
    """``_reduce`` hands ``_step`` ``x + D`` instead of ``D`` (FedAvg's state as it is; the
    optimisers subtract ``x`` chunk by chunk while it is in cache, saving a pass)."""

    def __init__(self, *, clip_norm: float | None = None) -> None:
        self.clip_norm = optional_positive("clip_norm", clip_norm)

    def aggregate(
        self, global_state: StateDict, updates: list[ClientUpdate], round: int
    ) -> StateDict:
        check_round(round)
        updates = list(updates)
        check_updates(global_state, updates)
        self._check_extras(global_state, updates)
        # a key fewer than min_updates clients returned keeps its value (and its state)
        groups = contributor_groups(global_state, [u.state for u in updates], self.min_updates)
        with torch.no_grad():
            scales = clip_scales(global_state, updates, self.clip_norm) if groups else []

            def reduce(layout: Layout, holders: list[int]) -> Tensor:
                members = [updates[i] for i in holders]
                return self._reduce(layout, global_state, members, [scales[i] for i in holders])

            new = self._apply(global_state, groups, reduce, round)
            self._finish_round(global_state, updates)
        return new

    def step_mean(self, global_state: StateDict, delta: StateDict, round: int) -> StateDict:
        """``x_new = step(x, D)`` for a mean delta ``D`` given over every floating key (in the
        compute dtype; consumed): the rule's step without its reduction, for a wrapper that
        forms the mean itself (the central DP mechanisms of :mod:`fedmllm.fl.privacy`)."""
        check_round(round)

        def reduce(layout: Layout, holders: list[int]) -> Tensor:
            flat = layout.read(delta)
            return flat.add_(layout.read(global_state)) if self.reduce_plus_global else flat

        with torch.no_grad():
            return self._apply(global_state, contributor_groups(global_state, [delta]), reduce,
                               round)

    def _apply(self, global_state: StateDict, groups: list[tuple[list[str], list[int]]],
               reduce: Callable[[Layout, list[int]], Tensor], round: int) -> StateDict:
        """The new state: per key group, ``_step`` on ``reduce(layout, holders)``."""
        new = dict(global_state)
        for keys, holders in groups:
            layout = Layout(keys, global_state)
            flat = self._step(layout, global_state, reduce(layout, holders), round)
            if flat.dtype != layout.like_dtype:
                flat = flat.to(layout.like_dtype)
            new.update(zip(layout.keys, layout.views(flat), strict=True))
        return new

    def _check_extras(self, global_state: StateDict, updates: list[ClientUpdate]) -> None:
        """Hook: validate strategy-specific extras before anything changes."""

    def _weights(self, updates: list[ClientUpdate]) -> list[float]:
        if self.weighted:
            return [float(u.num_examples) for u in updates]
        return [1.0] * len(updates)

    def _reduce(self, layout: Layout, global_state: StateDict, updates: list[ClientUpdate],
                scales: list[float]) -> Tensor:
        """Mean delta of one key group, ``D_w`` (``weighted``) or ``D_u`` (``x + D`` with
        :attr:`reduce_plus_global`): a fresh flat compute-dtype buffer ``_step`` may overwrite."""
        states = [u.state for u in updates]
        return mean_delta(layout, global_state, states, self._weights(updates), scales,
                          plus_global=self.reduce_plus_global)

    def _step(self, layout: Layout, global_state: StateDict, delta: Tensor, round: int) -> Tensor:
        """The new flat values of one key group (default ``x + delta``, written into
        ``delta``); must not modify the global state."""
        return delta.add_(layout.read(global_state))

    def _finish_round(self, global_state: StateDict, updates: list[ClientUpdate]) -> None:
        """Hook: update state that does not follow the model keys (SCAFFOLD's ``c``)."""

    def config(self) -> dict[str, Any]:
        return {"clip_norm": self.clip_norm}


class StatefulMixin:
    """Per-key optimizer slots ``self._slots[slot][key]`` with ``state_dict`` /
    ``load_state_dict`` (copies both ways).

    :meth:`_slot_flat` keeps the tensors of one key group as views of one flat buffer, updated
    in place by later rounds; that is safe because nothing outside the strategy ever holds them.
    After the key groups change (heterogeneous clients), a buffer may stay alive through the
    views of keys outside the new group: at most one adapter's worth per distinct grouping.
    """

    _slots: dict[str, StateDict]
    name: str

    def state_dict(self) -> StateDict:
        """Server optimizer state as ``"<slot>/<param name>" -> tensor``: copies, which no later
        round changes."""
        return {f"{slot}/{k}": t.clone() for slot, d in self._slots.items() for k, t in d.items()}

    def load_state_dict(self, state: StateDict) -> None:
        slots: dict[str, StateDict] = {slot: {} for slot in self._slots}
        for full, t in state.items():
            slot, key = split_state_key(full, tuple(self._slots), f"strategy {self.name!r}")
            slots[slot][key] = t.detach().clone()
        self._slots = slots

    def _slot_flat(
        self, slot: str, layout: Layout, init: Callable[[int, Tensor], None]
    ) -> Tensor:
        """Slot ``slot`` of ``layout``'s keys as one flat compute-dtype buffer whose views are
        the slot's tensors (so in-place updates of the buffer update the slot). Keys without a
        value yet are set by ``init(index, view)``."""
        d = self._slots[slot]
        if all(k in d for k in layout.keys):
            span = layout.span(d)
            if span is not None and span.dtype == layout.dtype:
                return span
        flat = layout.empty()
        views = layout.views(flat)
        for i, (k, view) in enumerate(zip(layout.keys, views, strict=True)):
            old = d.get(k)
            if old is None:
                init(i, view)
            else:
                view.copy_(old)
        d.update(zip(layout.keys, views, strict=True))
        return flat

    def _momentum_flat(
        self, slot: str, layout: Layout, x: Tensor, summed: Tensor, textbook: bool
    ) -> tuple[Tensor, bool]:
        """The momentum slot ``slot`` of ``layout``'s keys as one flat buffer
        (:meth:`_slot_flat`), and whether ``summed`` now holds ``D``.

        ``summed`` is ``x + D``. A key seen for the first time starts its momentum at 0
        (``textbook``: the papers, Flower) or at its ``D`` (the FedMLLM research code's
        ``m = D``); in that case ``summed`` is turned into ``D`` in place first."""
        is_delta = not textbook and any(k not in self._slots[slot] for k in layout.keys)
        if is_delta:
            summed.sub_(x)

        def init(i: int, view: Tensor) -> None:
            if textbook:
                view.zero_()
            else:
                start = layout.offsets[i]
                view.copy_(summed[start : start + layout.numels[i]].view(view.shape))

        return self._slot_flat(slot, layout, init), is_delta


class CoordinateWise(DeltaStrategy):
    """Robust rules applied per key to the (clipped) deltas of the clients that sent the key;
    unweighted. Subclasses give :meth:`_reduce_key`."""

    weighted = False

    def _reduce_key(self, global_t: Tensor, tensors: list[Tensor], scales: list[float]) -> Tensor:
        raise NotImplementedError

    def _reduce(self, layout: Layout, global_state: StateDict, updates: list[ClientUpdate],
                scales: list[float]) -> Tensor:
        flat = layout.empty()
        for k, view in zip(layout.keys, layout.views(flat), strict=True):
            view.copy_(self._reduce_key(global_state[k], [u.state[k] for u in updates], scales))
        return flat
