"""The reduction kernels shared by the server strategies.

Keys are grouped by the set of clients that returned them (:func:`contributor_groups`); within a
group the weights are normalised to sum to 1 *before* anything is summed, so huge values times
huge example counts cannot overflow, and every group is laid out end to end in one flat buffer
(:class:`Layout`). Mean-type reductions stream over the clients into that buffer: one kernel per
client when the client's tensors are themselves laid end to end in one storage (as
:func:`pack_state` leaves them, and as the states this module returns are), one fused
``torch._foreach`` kernel over its keys otherwise. Beyond the inputs the memory is O(adapter)
(O(clients x tensor) for the coordinate-wise median / trimmed mean, one key at a time); no
per-client copy of a state is ever made.

Notation: ``g`` global tensor, ``t_i`` client ``i``'s tensor, ``d_i = t_i - g`` its delta,
``s_i`` its clip scale (1 without clipping), ``a_i`` its aggregation weight.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torch._utils import _unflatten_dense_tensors

from .types import ClientUpdate, StateDict


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other floating dtype is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def delta_norm(state: StateDict, global_state: StateDict) -> float:
    """``||state - global||_2`` over the floating keys of ``state`` (all keys jointly)."""
    total: Tensor | None = None
    for key, t in state.items():
        g = global_state[key]
        if not g.is_floating_point():
            continue
        cd = compute_dtype(g.dtype)
        d = torch.sub(t.to(device=g.device, dtype=cd), g.to(cd))
        sq = torch.linalg.vector_norm(d, dtype=torch.float64).square()
        total = sq if total is None else total + sq
    return 0.0 if total is None else float(total.sqrt())


def check_updates(global_state: StateDict, updates: Sequence[ClientUpdate]) -> None:
    """Raise ``ValueError`` for updates that cannot be aggregated at all.

    Catches unknown keys, shape mismatches (which would otherwise broadcast silently) and
    negative example counts. Finer checks (dtype, NaN, norm) live in
    :func:`fedmllm.fl.validation.validate_update`; run :func:`filter_updates` first.
    """
    shapes = {k: g.shape for k, g in global_state.items()}
    for u in updates:
        if u.num_examples < 0:
            raise ValueError(f"client {u.client_id}: num_examples {u.num_examples} < 0")
        if [t.shape for t in u.state.values()] == [shapes.get(k) for k in u.state]:
            continue  # every key known, every shape right (the common case, checked at once)
        for key, t in u.state.items():
            g = global_state.get(key)
            if g is None:
                raise ValueError(
                    f"client {u.client_id}: unexpected key {key!r} (not in the global state); "
                    "run filter_updates() before aggregating"
                )
            if t.shape != g.shape:
                raise ValueError(
                    f"client {u.client_id}: {key!r} has shape {tuple(t.shape)}, "
                    f"expected {tuple(g.shape)}"
                )


def clip_scales(
    global_state: StateDict, updates: Sequence[ClientUpdate], clip_norm: float | None
) -> list[float]:
    """Per-client factors ``s_i = min(1, C / ||d_i||)`` (all 1.0 when ``clip_norm`` is None)."""
    if clip_norm is None:
        return [1.0] * len(updates)
    scales = []
    for u in updates:
        norm = delta_norm(u.state, global_state)
        if not math.isfinite(norm):
            raise ValueError(
                f"client {u.client_id}: non-finite update; run filter_updates() first"
            )
        scales.append(1.0 if norm <= clip_norm else clip_norm / norm)
    return scales


def cast_like(t: Tensor, like: Tensor) -> Tensor:
    """``t`` on ``like``'s device in ``like``'s dtype (no copy when it already matches)."""
    return t.to(device=like.device, dtype=like.dtype)


def in_compute_dtype(t: Tensor) -> Tensor:
    """``t`` in its compute dtype (no copy for float32/float64)."""
    return t.to(compute_dtype(t.dtype))


_DTYPE = operator.attrgetter("dtype")

CHUNK = 1 << 20
"""Elements per chunk of the chunked optimizer steps: a few such buffers stay in a core's L2."""


class Layout:
    """Keys of one dtype and device laid end to end in one flat buffer (in the given order).

    ``dtype`` is the compute dtype (float32, or float64 for float64 keys); ``like_dtype`` the
    keys' own dtype. :meth:`views` cuts a flat buffer into per-key tensors of the keys' shapes;
    :meth:`span` finds a state's tensors already laid out like this.
    """

    __slots__ = ("_byte_offsets", "_get", "_like", "device", "dtype", "keys", "like_dtype",
                 "numels", "offsets", "shapes", "total")

    def __init__(self, keys: Sequence[str], like: Mapping[str, Tensor]) -> None:
        self.keys = tuple(keys)
        tensors = [like[k] for k in self.keys]
        first = tensors[0]
        self.like_dtype, self.device = first.dtype, first.device
        self.dtype = compute_dtype(first.dtype)
        self.shapes = [t.shape for t in tensors]
        self.numels = [t.numel() for t in tensors]
        self.offsets = [0] * len(self.keys)
        total = 0
        for i, n in enumerate(self.numels):
            self.offsets[i] = total
            total += n
        self.total = total
        self._like = tensors  # shapes for _unflatten_dense_tensors (never read or written)
        self._byte_offsets: dict[int, list[int]] = {}
        getter = operator.itemgetter(*self.keys)
        self._get = getter if len(self.keys) > 1 else (lambda state: (getter(state),))

    def empty(self) -> Tensor:
        """An uninitialised flat buffer in the compute dtype."""
        return torch.empty(self.total, dtype=self.dtype, device=self.device)

    def views(self, flat: Tensor) -> list[Tensor]:
        """Per-key views of ``flat`` (in key order, with the keys' shapes)."""
        return list(_unflatten_dense_tensors(flat, self._like))

    def span(self, state: Mapping[str, Tensor]) -> Tensor | None:
        """The 1-D view over ``state[k]`` for every key when they are contiguous, of one dtype,
        on this device and laid end to end in this order in one storage; else ``None``."""
        try:
            tensors = self._get(state)
        except KeyError:
            return None
        first = tensors[0]
        dtype, item = first.dtype, first.element_size()
        if first.device != self.device:
            return None
        offsets = self._byte_offsets.get(item)
        if offsets is None:
            offsets = self._byte_offsets[item] = [o * item for o in self.offsets]
        # C-level loops (map) over the tensors: this runs for every client in every round
        ptrs = list(map(Tensor.data_ptr, tensors))
        if list(map(operator.sub, ptrs, itertools.repeat(ptrs[0], len(ptrs)))) != offsets:
            return None
        if not all(map(Tensor.is_contiguous, tensors)):
            return None
        if any(map(dtype.__ne__, map(_DTYPE, tensors))):
            return None
        start = first.storage_offset()
        if (start + self.total) * item > first.untyped_storage().nbytes():
            return None  # adjacent in memory but not one storage
        return first.as_strided((self.total,), (1,), start)

    def read(self, state: Mapping[str, Tensor]) -> Tensor:
        """``state``'s tensors as one flat buffer in the compute dtype: the span itself when
        the state is laid out like this (read-only!), else a copy."""
        span = self.span(state)
        if span is not None and span.dtype == self.dtype:
            return span
        flat = self.empty()
        torch._foreach_copy_(self.views(flat), [state[k] for k in self.keys])
        return flat

    def chunks(self) -> list[slice]:
        """Consecutive slices of at most :data:`CHUNK` elements covering the buffer."""
        return [slice(i, min(i + CHUNK, self.total)) for i in range(0, self.total, CHUNK)]


def pack_state(state: StateDict) -> StateDict:
    """A copy of ``state`` whose floating tensors of each dtype lie end to end in one buffer
    (key order kept), as a deserialised upload does; aggregation reads such a state with one
    kernel per client instead of one per tensor. Non-floating tensors are copied as they are."""
    out: StateDict = {}
    by_kind: dict[tuple[torch.dtype, torch.device], list[str]] = {}
    for key, t in state.items():
        if t.is_floating_point():
            by_kind.setdefault((t.dtype, t.device), []).append(key)
        else:
            out[key] = t.clone()
    for (dtype, device), keys in by_kind.items():
        flat = torch.empty(sum(state[k].numel() for k in keys), dtype=dtype, device=device)
        layout = Layout(keys, state)
        views = layout.views(flat)
        torch._foreach_copy_(views, [state[k] for k in keys])
        out.update(zip(keys, views, strict=True))
    return {k: out[k] for k in state}


def contributor_groups(
    global_state: StateDict, sources: Sequence[Mapping[str, Tensor]], min_count: int = 1
) -> list[tuple[list[str], list[int]]]:
    """The floating keys of ``global_state`` grouped by the sources that hold them.

    Returns ``(keys, holders)`` pairs (keys in global order, groups in the order of their first
    key); keys of one group also share dtype and device. Keys held by fewer than ``min_count``
    sources (none, at least) are left out.
    """
    need = max(1, min_count)
    key_sets = [src.keys() for src in sources]
    floating = [k for k, x in global_state.items() if x.is_floating_point()]
    if key_sets and all(ks == key_sets[0] for ks in key_sets):  # the common case: one set
        everyone = tuple(range(len(key_sets)))
        holders_of = {k: (everyone if k in key_sets[0] else ()) for k in floating}
    else:
        holders_of = {k: tuple(i for i, ks in enumerate(key_sets) if k in ks) for k in floating}
    groups: dict[tuple, list[str]] = {}
    for k in floating:
        holders = holders_of[k]
        if len(holders) >= need:
            x = global_state[k]
            groups.setdefault((holders, x.dtype, x.device), []).append(k)
    return [(keys, list(holders)) for (holders, _, _), keys in groups.items()]


def weighted_sum(
    layout: Layout, sources: Sequence[Mapping[str, Tensor]], alphas: Sequence[float]
) -> Tensor:
    """``sum_i alphas_i * sources_i`` over ``layout``'s keys as one flat compute-dtype buffer.

    Every source must hold every key. A source laid out like ``layout`` (:meth:`Layout.span`)
    costs one kernel; any other one fused ``torch._foreach`` kernel over its tensors.
    """
    acc = layout.empty()
    views: list[Tensor] | None = None
    for n, (src, a) in enumerate(zip(sources, alphas, strict=True)):
        span = layout.span(src)
        if span is not None:
            if n > 0:
                acc.add_(span, alpha=a)
            elif span.dtype == acc.dtype:
                torch.mul(span, a, out=acc)
            else:  # upcast first: a bf16 product would round
                acc.copy_(span).mul_(a)
            continue
        if views is None:
            views = layout.views(acc)
        if n == 0:
            acc.zero_()
        torch._foreach_add_(views, [src[k].to(acc.device) for k in layout.keys], alpha=a)
    return acc


def mean_delta(
    layout: Layout,
    global_state: StateDict,
    states: Sequence[Mapping[str, Tensor]],
    weights: Sequence[float],
    scales: Sequence[float],
    plus_global: bool = False,
) -> Tensor:
    """``D = sum_i w_i s_i (t_i - g) / sum_i w_i`` over one group of keys, as a flat buffer.

    The weights are normalised (``w_i / W``, ``W = sum_i w_i``) before anything is summed.
    Computed as ``sum_i (w_i s_i / W) t_i - (A / W) g`` with ``A = sum_i w_i s_i`` (``A = W``
    without clipping), one pass over each client state. With ``plus_global`` the result is
    ``g + D`` instead (the FedAvg state), which without clipping is the weighted mean of the
    client tensors and never reads ``g``.
    """
    total = float(sum(weights))
    if not total > 0:
        raise ValueError(
            f"{layout.keys[0]!r}: the clients that returned it report 0 examples in total"
        )
    scaled = [w * s for w, s in zip(weights, scales, strict=True)]
    acc = weighted_sum(layout, states, [a / total for a in scaled])
    kept = sum(scaled)  # == total exactly without clipping (same terms, same order)
    coef = (total - kept) / total if plus_global else -kept / total
    if coef != 0.0:
        acc.add_(layout.read(global_state), alpha=coef)
    return acc


def _stacked_deltas(g: Tensor, tensors: Sequence[Tensor], scales: Sequence[float]) -> Tensor:
    """``[s_i * (t_i - g)]`` stacked on a new *last* axis (contiguous per coordinate)."""
    gc = in_compute_dtype(g)
    stacked = torch.stack([cast_like(t, gc) for t in tensors], dim=-1)
    stacked.sub_(gc.unsqueeze(-1))
    if any(s != 1.0 for s in scales):
        stacked.mul_(torch.tensor(scales, dtype=gc.dtype, device=gc.device))
    return stacked


def median_delta(g: Tensor, tensors: Sequence[Tensor], scales: Sequence[float]) -> Tensor:
    """Coordinate-wise median of the (clipped) deltas; mean of the two middle values for even n."""
    d = _stacked_deltas(g, tensors, scales)
    n = d.shape[-1]
    if n % 2 == 1:
        return d.median(dim=-1).values
    low = d.topk(n // 2 + 1, dim=-1, largest=False, sorted=True).values
    return (low[..., -2] + low[..., -1]) / 2


def trimmed_mean_delta(
    g: Tensor, tensors: Sequence[Tensor], scales: Sequence[float], beta: float
) -> Tensor:
    """Coordinate-wise mean after dropping the ``floor(beta * n)`` lowest and highest deltas."""
    d = _stacked_deltas(g, tensors, scales)
    n = d.shape[-1]
    cut = int(beta * n)
    if cut == 0:
        return d.mean(dim=-1)
    return d.sort(dim=-1).values[..., cut : n - cut].mean(dim=-1)
