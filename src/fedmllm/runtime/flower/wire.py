"""Tensors on the wire: adapter states as Flower ``ArrayRecord``s, and their byte counts.

Floating tensors travel as float32 (bf16 and fp16 are cast up before sending and back to the
receiver's dtype after receiving, on both ends; float64 stays float64); other tensors as they
are. A state travels packed: one array per dtype and a JSON layout (see :func:`to_record`).
Flower serialises arrays with ``numpy.save(allow_pickle=False)`` and reads them with
``numpy.load(allow_pickle=False)``: untrusted bytes are never unpickled. The bytes counted are
the arrays' serialised payloads plus their keys (``ArrayRecord.count_bytes``), what crosses the
wire apart from message headers.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, MetricRecord

from ...fl import ClientUpdate, StateDict


def _wire(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().to("cpu")
    if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    return t.contiguous()


LAYOUT = "__fedmllm_layout__"
"""Key of the JSON layout (``[[key, dtype, shape], ...]``) of a packed record."""


def to_record(state: StateDict) -> ArrayRecord:
    """``state`` as an ``ArrayRecord`` (float32 for every half-precision tensor), packed: the
    tensors of each dtype end to end in one array, plus the layout as a JSON byte array.

    Flower moves every array of a message as its own object (one request each), so an adapter
    of 200 LoRA tensors sent tensor by tensor costs 200 round trips; packed it costs 2 or 3.
    """
    record = ArrayRecord()
    layout, groups = [], {}
    for key, t in state.items():
        w = _wire(t)
        dtype = str(w.dtype).removeprefix("torch.")
        layout.append([key, dtype, list(w.shape)])
        groups.setdefault(dtype, []).append(w.reshape(-1))
    for dtype, parts in groups.items():
        record[f"__fedmllm_{dtype}__"] = Array.from_torch_tensor(torch.cat(parts))
    blob = json.dumps(layout).encode()
    record[LAYOUT] = Array.from_numpy_ndarray(np.frombuffer(blob, dtype=np.uint8).copy())
    return record


def _unpack(record: ArrayRecord) -> dict[str, torch.Tensor]:
    layout = json.loads(bytes(record[LAYOUT].numpy().astype(np.uint8)))
    flats = {k: torch.from_numpy(record[k].numpy()) for k in record if k != LAYOUT}
    offsets = dict.fromkeys(flats, 0)
    out = {}
    for key, dtype, shape in layout:
        name = f"__fedmllm_{dtype}__"
        n = int(np.prod(shape)) if shape else 1
        flat = flats.get(name)
        if flat is None or offsets[name] + n > flat.numel():
            raise ValueError(f"{key!r}: the packed record does not hold its values")
        out[key] = flat[offsets[name]:offsets[name] + n].reshape(shape)
        offsets[name] += n
    if any(offsets[name] != flat.numel() for name, flat in flats.items()):
        raise ValueError("the packed record holds values no key names")
    return out


def from_record(record: ArrayRecord, like: StateDict | None = None,
                device: torch.device | str = "cpu") -> StateDict:
    """An ``ArrayRecord`` (packed by :func:`to_record`, or one array per key) as a tensor dict
    on ``device``; with ``like``, every key must be one of its keys with the same shape, and
    takes its dtype (``ValueError`` naming the key)."""
    out: StateDict = {}
    unpacked = _unpack(record) if LAYOUT in record else \
        {key: torch.from_numpy(record[key].numpy()) for key in record}
    for key, t in unpacked.items():
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


#: A client's statistics on the wire: ``ClientUpdate.metrics`` key -> (``MetricRecord`` key,
#: type), besides ``num-examples``, ``partition-id`` and ``val_loss/<candidate>`` per held-out
#: loss.
METRICS = {"train_loss": ("train_loss", float), "steps": ("steps", int),
           "epochs": ("epochs", float), "lr": ("lr", float), "held_out": ("held-out", int),
           "client_seconds": ("seconds", float), "steps_tried": ("steps-tried", int)}


def metrics_record(update: ClientUpdate) -> MetricRecord:
    """A client's update's example count and statistics (:data:`METRICS`), as sent."""
    m = update.metrics
    out = {"num-examples": int(update.num_examples), "partition-id": int(update.client_id)}
    out.update({wire: kind(m[key]) for key, (wire, kind) in METRICS.items() if key in m})
    out.update({f"val_loss/{label}": float(v) for label, v in m.get("val_loss", {}).items()})
    return MetricRecord(out)


def metrics_from_record(record: MetricRecord) -> dict:
    """:func:`metrics_record` read back as ``ClientUpdate.metrics`` (``held_out`` only beside
    the held-out losses it counts)."""
    out = {key: kind(record[wire]) for key, (wire, kind) in METRICS.items()
           if wire in record and key != "held_out"}
    losses = {key.split("/", 1)[1]: float(v) for key, v in record.items()
              if key.startswith("val_loss/")}
    if losses:
        out["val_loss"] = losses
        out["held_out"] = int(record["held-out"])
    return out
