"""Checkpoints: everything a run needs to go on after a crash, written so a crash never spoils one.

Layout, under the run's output folder::

    checkpoint/
      000012/                   one complete checkpoint (after round 12, or 12 one-shot clients)
        tensors.safetensors     tensor groups as "<group>/<name>": global/..., strategy/...,
                                client_state/<id>/..., adapters/<id>/..., uploads/<id>/...,
                                rng/torch_cpu
        meta.json               format, kind, step, number of metrics rows, configuration
                                digest, and the driver's JSON state (timings, last evaluation)

A checkpoint is built in a temporary sibling folder and renamed into place when complete
(:func:`fedmllm.files.atomic_dir`); only then are older checkpoints removed. A crash while
writing leaves the previous checkpoint as the newest complete one. Tensors are read back with
safetensors (never pickle), on the CPU.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import Config
from ..errors import CheckpointError
from ..files import atomic_dir
from .failpoints import failpoint

FORMAT = "fedmllm-checkpoint/1"
FOLDER = "checkpoint"


def config_digest(cfg: Config) -> str:
    """SHA-256 of the configuration that decides the results (``output.*`` left out)."""
    data = cfg.to_dict()
    data.pop("output", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Checkpoint:
    """One checkpoint in memory."""

    kind: str
    """``multiround`` or ``oneshot``."""
    step: int
    """Rounds completed (multi-round) or clients finished (one-shot)."""
    metrics_rows: int
    """Lines of ``metrics.jsonl`` that belong to this state (later lines are cut on resume)."""
    config_sha256: str
    tensors: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    """Named groups of tensors (``global``, ``strategy``, ``client_state``, ...)."""
    state: dict[str, Any] = field(default_factory=dict)
    """The driver's JSON-able state."""


def check_compatible(ckpt: Checkpoint, kind: str, cfg: Config) -> None:
    """Raise :class:`CheckpointError` unless ``ckpt`` was written by a ``kind`` run of ``cfg``."""
    if ckpt.kind != kind:
        raise CheckpointError(f"checkpoint is of a {ckpt.kind} run, this run is {kind}")
    if ckpt.config_sha256 != config_digest(cfg):
        raise CheckpointError("checkpoint was written with another configuration than "
                              "config.yaml holds now")


def _flatten(groups: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    flat: dict[str, torch.Tensor] = {}
    for group, tensors in groups.items():
        if "/" in group:
            raise ValueError(f"checkpoint group names have no '/': {group!r}")
        for name, t in tensors.items():
            flat[f"{group}/{name}"] = t.detach().to("cpu").contiguous().clone()
    return flat


def save_checkpoint(out_dir: str | Path, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` under ``out_dir/checkpoint/`` atomically, then drop older checkpoints."""
    from safetensors.torch import save_file

    root = Path(out_dir) / FOLDER
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{ckpt.step:06d}"
    tensors = _flatten({**ckpt.tensors, "rng": {"torch_cpu": torch.get_rng_state()}})
    meta = {"format": FORMAT, "kind": ckpt.kind, "step": ckpt.step,
            "metrics_rows": ckpt.metrics_rows, "config_sha256": ckpt.config_sha256,
            "groups": sorted(ckpt.tensors), "state": ckpt.state}
    with atomic_dir(target) as tmp:
        save_file(tensors, str(tmp / "tensors.safetensors"))
        failpoint("checkpoint_half_written", ckpt.step)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
    for old in root.iterdir():
        if old != target and (old.name.isdigit() or old.name.startswith(".")):
            shutil.rmtree(old, ignore_errors=True)
    return target


def _complete(root: Path) -> list[Path]:
    found = [p for p in root.iterdir() if p.is_dir() and p.name.isdigit()
             and (p / "meta.json").is_file() and (p / "tensors.safetensors").is_file()]
    return sorted(found, key=lambda p: int(p.name))


def load_checkpoint(out_dir: str | Path) -> Checkpoint | None:
    """The newest complete checkpoint under ``out_dir`` (``None`` if there is none).

    Restores torch's CPU generator state saved with it. Raises :class:`CheckpointError` naming
    the file when the newest complete checkpoint cannot be read.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    root = Path(out_dir) / FOLDER
    if not root.is_dir():
        return None
    found = _complete(root)
    if not found:
        return None
    folder = found[-1]
    meta_path = folder / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{meta_path}: cannot read ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path}: not a {FORMAT} checkpoint")
    path = folder / "tensors.safetensors"
    try:
        flat = load_file(str(path), device="cpu")
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"{path}: cannot read ({str(e).splitlines()[0]})") from None
    groups: dict[str, dict[str, torch.Tensor]] = {g: {} for g in meta.get("groups", [])}
    rng = None
    for full, t in flat.items():
        group, _, name = full.partition("/")
        if group == "rng":
            rng = t
            continue
        groups.setdefault(group, {})[name] = t
    if rng is not None:
        torch.set_rng_state(rng)
    try:
        return Checkpoint(kind=meta["kind"], step=int(meta["step"]),
                          metrics_rows=int(meta["metrics_rows"]),
                          config_sha256=meta["config_sha256"], tensors=groups,
                          state=meta.get("state", {}))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{meta_path}: missing or bad field ({e})") from None
