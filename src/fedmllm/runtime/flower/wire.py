"""Tensors on the wire: adapter states as Flower ``ArrayRecord``s, and their byte counts.

Floating tensors travel as float32 (bf16 and fp16 are cast up before sending and back to the
receiver's dtype after receiving, on both ends; float64 stays float64); other tensors as they
are. Flower serialises arrays with ``numpy.save(allow_pickle=False)`` and reads them with
``numpy.load(allow_pickle=False)``: untrusted bytes are never unpickled. The bytes counted are
the arrays' serialised payloads plus their keys (``ArrayRecord.count_bytes``), what crosses the
wire apart from message headers.
"""

from __future__ import annotations

import torch
from flwr.app import Array, ArrayRecord

from ...fl import StateDict


def _wire(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().to("cpu")
    if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    return t.contiguous()


def to_record(state: StateDict) -> ArrayRecord:
    """``state`` as an ``ArrayRecord`` (float32 for every half-precision tensor)."""
    record = ArrayRecord()
    for key, t in state.items():
        record[key] = Array.from_torch_tensor(_wire(t))
    return record


def from_record(record: ArrayRecord, like: StateDict | None = None,
                device: torch.device | str = "cpu") -> StateDict:
    """An ``ArrayRecord`` as a tensor dict on ``device``; with ``like``, every key must be one of
    its keys with the same shape, and takes its dtype (``ValueError`` naming the key)."""
    out: StateDict = {}
    for key in record:
        t = torch.from_numpy(record[key].numpy())
        if like is not None:
            ref = like.get(key)
            if ref is None:
                raise ValueError(f"unexpected key {key!r}")
            if tuple(t.shape) != tuple(ref.shape):
                raise ValueError(f"{key!r} has shape {tuple(t.shape)}, expected "
                                 f"{tuple(ref.shape)}")
            t = t.to(dtype=ref.dtype)
        out[key] = t.to(device)
    return out


def record_bytes(*records: ArrayRecord) -> int:
    """Bytes of the arrays (and their keys) in ``records``."""
    return sum(r.count_bytes() for r in records)
