"""A shared store of one-shot client uploads (``fl.yoco.upload_cache``).

One-shot merges differ only on the server: FedAvg, FedAdam, TIES, DARE, the exact product
mean, the ensemble and the local models of one study all merge the *same* ten uploads, and
YOCO's variants ``init_ba`` and ``full`` train identically. A run that finds the uploads of its
training in the store loads them and goes straight to its merge.

The key (:func:`training_key`) is a SHA-256 over what decides the uploads: the configuration
without the merge's keys, the evaluation's and the output's, plus what the plan resolved
(initialisation, LoRA targets, client objective and its parameters, optimizer and rate). An
entry is a folder ``<key>/`` with ``uploads.safetensors`` (tensors as ``<client>/<name>``) and
``meta.json`` (example counts and metrics per client, and the key's inputs for a reader), built
in a temporary folder and renamed into place; writers of the same key take a lock so the
second waits for the first and then loads its uploads. Nothing is unpickled.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from ..config import Config
from ..engine.factory import RunPlan
from ..files import atomic_dir
from ..fl import ClientUpdate
from .executor import ClientExecutor, ClientReply, ClientTask

__all__ = ["MERGE_ONLY_KEYS", "CachedUploads", "load_uploads", "locked", "pack_uploads",
           "store_uploads", "training_inputs", "training_key", "unpack_uploads"]

#: ``fl.yoco`` keys that act on the server's merge (or name what the plan resolves) only.
MERGE_ONLY_KEYS = ("method", "variant", "init", "targets", "merge_b", "merge_a", "params_a",
                   "params_b", "pca_k", "pca_weighting", "pca_power", "pca_center",
                   "pca_sample_weighted", "density", "product_rank", "upload_cache",
                   "fedopt_step")


def training_inputs(cfg: Config, plan: RunPlan) -> dict:
    """What decides a one-shot run's uploads, as JSON-able data."""
    data = cfg.to_dict()
    for key in ("output", "eval"):
        data.pop(key, None)
    fl = data["fl"]
    for key in MERGE_ONLY_KEYS:
        fl["yoco"].pop(key, None)
    fl.pop("strategy", None)  # one-shot: the parameters of the server rules
    params = dict(plan.objective_params)
    if params.get("variant") == "full":  # trains as init_ba; only the merge of A differs
        params["variant"] = "init_ba"
    data["resolved"] = {"init": plan.init, "lora": plan.lora, "objective": plan.objective,
                        "objective_params": params, "optimizer": plan.optimizer, "lr": plan.lr}
    return data


def training_key(inputs: dict) -> str:
    """The store's key of a run's uploads: its :func:`training_inputs`, hashed."""
    text = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def pack_uploads(uploads: dict[int, ClientUpdate]) -> tuple[dict[str, torch.Tensor], dict]:
    """Uploads as flat tensors (``<client>/<name>``, on the CPU) and JSON-able per-client data
    (example counts, metrics): the form the store and the one-shot checkpoint write."""
    flat = {f"{k}/{name}": t.detach().to("cpu").contiguous()
            for k, u in uploads.items() for name, t in u.state.items()}
    clients = {str(k): {"num_examples": u.num_examples, "metrics": dict(u.metrics)}
               for k, u in sorted(uploads.items())}
    return flat, clients


def unpack_uploads(flat: dict[str, torch.Tensor], clients: dict,
                   device: torch.device | str = "cpu") -> dict[int, ClientUpdate]:
    """:func:`pack_uploads` undone (tensors moved to ``device``); ``KeyError``/``TypeError``/
    ``ValueError`` for data it did not write."""
    states: dict[int, dict[str, torch.Tensor]] = {}
    for full, t in flat.items():
        k, _, name = full.partition("/")
        states.setdefault(int(k), {})[name] = t.to(device)
    return {int(k): ClientUpdate(state=states[int(k)], num_examples=int(c["num_examples"]),
                                 client_id=int(k), metrics=dict(c["metrics"]))
            for k, c in clients.items()}


@contextlib.contextmanager
def locked(root: str | Path, key: str) -> Iterator[None]:
    """Hold the store's lock of ``key`` (an exclusive ``flock``; released when the block ends
    or the process dies)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{key}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load_uploads(root: str | Path, key: str,
                 device: torch.device | str = "cpu") -> dict[int, ClientUpdate] | None:
    """The stored uploads of ``key`` by client id, or ``None`` when there are none (an entry
    that cannot be read counts as none and is trained again)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(root) / key
    try:
        meta = json.loads((folder / "meta.json").read_text())
        flat = load_file(str(folder / "uploads.safetensors"), device=str(device))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, SafetensorError):
        return None
    try:
        return unpack_uploads(flat, meta["clients"])
    except (KeyError, TypeError, ValueError, AttributeError):  # not an entry this code wrote
        return None


def store_uploads(root: str | Path, key: str, uploads: dict[int, ClientUpdate],
                  inputs: dict) -> Path:
    """Write ``uploads`` as the entry of ``key`` (replacing an unreadable one)."""
    from safetensors.torch import save_file

    folder = Path(root) / key
    flat, clients = pack_uploads(uploads)
    meta = {"key": key, "training": inputs, "clients": clients}
    with atomic_dir(folder) as tmp:
        save_file(flat, str(tmp / "uploads.safetensors"))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
    return folder


class CachedUploads:
    """A one-shot executor with the store in front: when the store holds every client's upload
    of this training (:func:`training_inputs`), the tasks' uploads come from there; otherwise
    ``executor`` trains them and the run's uploads (those it already ``held``, restored from its
    checkpoint, and the new ones) are stored for the next run. A second run of the same
    training waits for the first (:func:`locked`)."""

    def __init__(self, executor: ClientExecutor, root: str | Path, inputs: dict, device,
                 num_clients: int, *, held: dict[int, ClientUpdate], console=None):
        self.executor, self.root, self.inputs, self.device = executor, root, inputs, device
        self.num_clients, self.held, self.console = num_clients, held, console
        self.loaded_from: str | None = None
        """The store's key when the uploads were loaded from it."""

    def fit(self, tasks: Sequence[ClientTask]) -> Iterator[ClientReply]:
        key = training_key(self.inputs)
        with locked(self.root, key):
            stored = load_uploads(self.root, key, self.device)
            if stored is not None and set(stored) == set(range(self.num_clients)):
                self.loaded_from = key
                if self.console is not None:
                    self.console.print(f"uploads of all {len(stored)} clients loaded from "
                                       f"{self.root}/{key} (the same training, stored by an "
                                       "earlier run)", markup=False)
                yield from (ClientReply(t.client_id, stored[t.client_id]) for t in tasks)
                return
            trained = {}
            for reply in self.executor.fit(tasks):
                trained[reply.client_id] = reply.update
                yield reply
            store_uploads(self.root, key, {**self.held, **trained}, self.inputs)
