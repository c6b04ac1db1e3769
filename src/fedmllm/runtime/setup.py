"""Shared set-up for every driver: model + processor, LoRA wrapping, encoded client data."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import Config, LoraConfig
from ..data.prompts import build_prompt
from ..data.types import Sample
from ..model.collate import Encoded, encode_sample
from ..model.loading import load_vlm, num_lm_layers, resolve_device, resolve_dtype
from ..model.lora import AdapterState, wrap_lora

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def model_source(cfg: Config) -> str:
    """The folder or hub id to load: ``model.name`` or the cached built-in preset."""
    if cfg.model.name:
        return cfg.model.name
    from ..model.tiny import ensure_tiny

    return str(ensure_tiny(cfg.model.preset, cfg.model.pretrain))


@dataclass
class ModelBundle:
    model: torch.nn.Module  # the peft-wrapped model
    processor: object
    adapter: AdapterState
    device: torch.device
    dtype: torch.dtype
    num_layers: int
    source: str
    init: str = "default"  # how the adapter was initialised (``lora.init`` / ``fl.yoco.init``)


def build_bundle(source: str, device: torch.device, dtype: torch.dtype, lora: LoraConfig,
                 seed: int, modules_to_save: list[str] | None = None,
                 init: str = "default") -> ModelBundle:
    """``source`` loaded on ``device``/``dtype`` and wrapped with ``lora``'s targets, rank and
    alpha; the LoRA draw is seeded by ``seed``. ``init`` names peft's initialisation
    (:data:`LORA_INIT`; any other name, e.g. one-shot's ``code``, starts from peft's default)."""
    base, processor = load_vlm(source, device=device, dtype=dtype)
    depth = num_lm_layers(base)
    torch.manual_seed(seed)  # LoRA initialisation is part of the run's seed
    model = wrap_lora(base, r=lora.r, alpha=lora.alpha, dropout=lora.dropout,
                      modules=lora.modules, layers=lora.layers, target_regex=lora.target_regex,
                      modules_to_save=modules_to_save, init_lora_weights=LORA_INIT.get(init, True))
    model.to(device)
    return ModelBundle(model, processor, AdapterState(model), device, dtype, depth, source, init)


def load_for_training(cfg: Config, source: str | None = None) -> ModelBundle:
    device = resolve_device(cfg.train.device)
    return build_bundle(source or model_source(cfg), device,
                        resolve_dtype(cfg.model.dtype, device), cfg.lora, cfg.seed,
                        cfg.model.modules_to_save, init=cfg.lora.init)


#: ``lora.init`` -> peft's ``init_lora_weights``.
LORA_INIT = {"default": True, "gaussian": "gaussian", "pissa": "pissa"}


def save_adapter(bundle: ModelBundle, state: dict[str, torch.Tensor], path: Path, meta: dict,
                 pissa_initial: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``state`` in PEFT format to ``path`` (through ``path.tmp``, then renamed), with
    ``meta`` as ``fedmllm.json``.

    With ``pissa_initial`` (the PiSSA adapter the run started from, whose base weights are the
    residual ``W - s B0 A0``) peft converts the adapter to a plain rank-2r LoRA ``[A; A0]``,
    ``[B, -B0]`` that loads on the *original* base model.
    """
    import tempfile

    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    if pissa_initial is not None:
        with tempfile.TemporaryDirectory() as scratch:
            initial = Path(scratch) / "initial"
            bundle.adapter.set(pissa_initial)
            bundle.model.save_pretrained(initial)
            bundle.adapter.set(state)
            bundle.model.save_pretrained(tmp,
                                         path_initial_model_for_weight_conversion=str(initial))
    else:
        bundle.adapter.set(state)
        bundle.model.save_pretrained(tmp)
    (tmp / "fedmllm.json").write_text(json.dumps(meta, indent=2))
    os.replace(tmp, path)


def encode_samples(processor, samples: list[Sample], strategy: str, max_len: int) -> list[Encoded]:
    return [encode_sample(processor, build_prompt(s, strategy), s.image, s.answer, max_len,
                          sample_id=s.id) for s in samples]


class ClientData:
    """A client's encoded samples and a deterministic batch stream (reshuffled every epoch)."""

    def __init__(self, encoded: list[Encoded], seed: int):
        if not encoded:
            raise ValueError("a client has no samples")
        self.encoded = encoded
        self.seed = seed

    def __len__(self) -> int:
        return len(self.encoded)

    def batches(self, round_: int, batch_size: int):
        """Infinite stream of batches for ``round_`` (same round + seed -> same order)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + round_)
        while True:
            order = torch.randperm(len(self.encoded), generator=g).tolist()
            for i in range(0, len(order), batch_size):
                yield [self.encoded[j] for j in order[i : i + batch_size]]
