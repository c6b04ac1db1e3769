"""Checkpoints: everything a run needs to go on after a crash, written so a crash never spoils one.

Layout, under the run's output folder::

    checkpoint/
      000011/                   the checkpoint before the newest, kept as a fall-back
      000012/                   the newest complete checkpoint (after round 12, or 12 one-shot
                                clients)
        tensors.safetensors     tensor groups as "<group>/<name>": global/..., strategy/...,
                                client_state/<id>/..., adapters/<id>/..., uploads/<id>/...,
                                rng/torch_cpu
        meta.json               format, kind, step, number of metrics rows, the configuration
                                that decides the results and its digest, the SHA-256 of
                                tensors.safetensors, and the driver's JSON state (timings,
                                last evaluation)

A checkpoint is built in a temporary sibling folder and renamed into place when complete
(:func:`fedmllm.files.atomic_dir`); only then are older checkpoints removed, all but the one
before it. A crash while writing leaves the previous checkpoint as the newest complete one; a
newest checkpoint damaged later (cut short, bytes overwritten: its SHA-256 no longer matches)
is passed over for the one before it. Tensors are read back with safetensors (never pickle),
on the CPU; ``meta.json`` is plain JSON.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import Config, flatten
from ..errors import CheckpointError
from ..files import atomic_dir
from .failpoints import failpoint

FORMAT = "fedmllm-checkpoint/1"
FOLDER = "checkpoint"
KEEP = 2
"""Checkpoints kept: the newest and the one before it (the fall-back if the newest is damaged)."""

log = logging.getLogger(__name__)


def results_config(cfg: Config) -> dict:
    """The configuration that decides the results, as JSON data: ``cfg`` without ``output.*``."""
    data = cfg.to_dict()
    data.pop("output", None)
    return json.loads(json.dumps(data, sort_keys=True, default=str))


def config_digest(cfg: Config) -> str:
    """SHA-256 of :func:`results_config` (the configuration that decides the results)."""
    return hashlib.sha256(json.dumps(results_config(cfg), sort_keys=True).encode()).hexdigest()


def _shown(value: Any) -> str:
    if isinstance(value, str) and value:
        return value
    return json.dumps(value, default=str)


def config_changes(old: dict, new: dict) -> list[str]:
    """``"key: old → new"`` for every dotted key whose value differs between two configuration
    trees (``Config.to_dict()``/:func:`results_config` shapes), in key order; a key only one
    side has shows ``(none)`` on the other."""
    a, b = flatten(old), flatten(new)
    missing = object()
    out = []
    for k in sorted(a.keys() | b.keys()):
        x, y = a.get(k, missing), b.get(k, missing)
        if x != y:
            out.append(f"{k}: {'(none)' if x is missing else _shown(x)} → "
                       f"{'(none)' if y is missing else _shown(y)}")
    return out


def only_new_defaults(old: dict, new: dict, defaults: dict | None = None) -> bool:
    """Whether configuration tree ``new`` differs from ``old`` only by keys ``old`` lacks that
    stand at their default in ``new``: keys added to fedmllm since ``old`` was written, which
    change nothing the run did (a checkpoint or a sweep's cell from before stays resumable).
    ``defaults``: the flat default values (default: :func:`results_config` of ``Config()``)."""
    defaults = flatten(results_config(Config())) if defaults is None else defaults
    a, b = flatten(old), flatten(new)
    missing = object()
    return set(a) <= set(b) and all(
        a.get(k, defaults.get(k, missing)) == v for k, v in b.items())


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
    config: dict | None = None
    """:func:`results_config` of the run (``None`` in checkpoints written before it was kept),
    to name the keys that changed when a resume finds another configuration."""

    def where(self) -> str:
        """``"after round 3"`` / ``"with 3 clients trained"``."""
        return (f"with {self.step} clients trained" if self.kind == "oneshot"
                else f"after round {self.step}")


def check_compatible(ckpt: Checkpoint, kind: str, cfg: Config) -> None:
    """Raise :class:`CheckpointError` unless ``ckpt`` was written by a ``kind`` run of ``cfg``;
    the message names every key whose value differs, ``key: checkpoint's → cfg's``."""
    if ckpt.kind != kind:
        raise CheckpointError(f"checkpoint is of a {ckpt.kind} run, this run is {kind}")
    if ckpt.config_sha256 == config_digest(cfg):
        return
    if ckpt.config and only_new_defaults(ckpt.config, results_config(cfg)):
        return
    changes = config_changes(ckpt.config, results_config(cfg)) if ckpt.config else []
    raise CheckpointError("the checkpoint was written with another configuration than "
                          "config.yaml holds now" + (f": {'; '.join(changes)}" if changes else ""))


def _flatten(groups: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    flat: dict[str, torch.Tensor] = {}
    for group, tensors in groups.items():
        if "/" in group:
            raise ValueError(f"checkpoint group names have no '/': {group!r}")
        for name, t in tensors.items():
            flat[f"{group}/{name}"] = t.detach().to("cpu").contiguous().clone()
    return flat


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(out_dir: str | Path, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` under ``out_dir/checkpoint/`` atomically, then drop the older checkpoints
    but the one before it (and any later one: a step redone after falling back)."""
    from safetensors.torch import save_file

    root = Path(out_dir) / FOLDER
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{ckpt.step:06d}"
    tensors = _flatten({**ckpt.tensors, "rng": {"torch_cpu": torch.get_rng_state()}})
    meta = {"format": FORMAT, "kind": ckpt.kind, "step": ckpt.step,
            "metrics_rows": ckpt.metrics_rows, "config_sha256": ckpt.config_sha256,
            "config": ckpt.config, "groups": sorted(ckpt.tensors), "state": ckpt.state}
    with atomic_dir(target) as tmp:
        save_file(tensors, str(tmp / "tensors.safetensors"))
        failpoint("checkpoint_half_written", ckpt.step)
        meta["tensors_sha256"] = _sha256(tmp / "tensors.safetensors")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
    earlier = [p for p in _complete(root) if int(p.name) < ckpt.step]
    keep = {target, *earlier[-(KEEP - 1):]}
    for old in root.iterdir():
        if old not in keep and (old.name.isdigit() or old.name.startswith(".")):
            shutil.rmtree(old, ignore_errors=True)
    return target


def _complete(root: Path) -> list[Path]:
    found = [p for p in root.iterdir() if p.is_dir() and p.name.isdigit()
             and (p / "meta.json").is_file() and (p / "tensors.safetensors").is_file()]
    return sorted(found, key=lambda p: int(p.name))


def _read(folder: Path) -> Checkpoint:
    """The checkpoint in ``folder``, read back whole (its ``rng`` group among the tensors);
    :class:`CheckpointError` naming the file that cannot be read or does not match its digest."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta_path = folder / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{meta_path}: cannot read ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path}: not a {FORMAT} checkpoint")
    path = folder / "tensors.safetensors"
    try:
        if "tensors_sha256" in meta and _sha256(path) != meta["tensors_sha256"]:
            raise CheckpointError(f"{path}: damaged (its SHA-256 is not the one in meta.json)")
        flat = load_file(str(path), device="cpu")
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"{path}: cannot read ({str(e).splitlines()[0]})") from None
    try:
        groups: dict[str, dict[str, torch.Tensor]] = {g: {} for g in meta.get("groups", [])}
        for full, t in flat.items():
            group, _, name = full.partition("/")
            groups.setdefault(group, {})[name] = t
        return Checkpoint(kind=meta["kind"], step=int(meta["step"]),
                          metrics_rows=int(meta["metrics_rows"]),
                          config_sha256=meta["config_sha256"], tensors=groups,
                          state=meta.get("state", {}), config=meta.get("config"))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{meta_path}: missing or bad field ({e})") from None


def newest_readable(out_dir: str | Path) -> tuple[Checkpoint | None, list[str]]:
    """The newest checkpoint under ``out_dir`` that reads back whole (``None`` if there is
    none), and why each newer one could not be read. Raises :class:`CheckpointError`, naming
    every file, when there are checkpoints but none of them reads."""
    root = Path(out_dir) / FOLDER
    if not root.is_dir():
        return None, []
    problems: list[str] = []
    for folder in reversed(_complete(root)):
        try:
            return _read(folder), problems
        except CheckpointError as e:
            problems.append(str(e))
    if problems:
        raise CheckpointError(f"no checkpoint of this run can be read: {'; '.join(problems)}")
    return None, []


def load_checkpoint(out_dir: str | Path) -> Checkpoint | None:
    """The newest checkpoint under ``out_dir`` that reads back whole, tensors on the CPU
    (``None`` if there is none), and torch's CPU generator state saved with it restored.

    A newest checkpoint that cannot be read falls back to the one before it, said in one
    warning line (which file, where the run resumes); :class:`CheckpointError` naming the
    files when none can be read (:func:`newest_readable`).
    """
    ckpt, skipped = newest_readable(out_dir)
    if ckpt is None:
        return None
    if skipped:
        log.warning("%s; resuming from the checkpoint before it, %s", "; ".join(skipped),
                    ckpt.where())
    rng = ckpt.tensors.pop("rng", {}).get("torch_cpu")
    if rng is not None:
        torch.set_rng_state(rng)
    return ckpt
