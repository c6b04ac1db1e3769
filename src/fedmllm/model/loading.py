"""Load any Hugging Face vision-language model and its processor, the same way for all of them.

Real checkpoints (SmolVLM, Qwen2-VL, LLaVA, ... from the hub or a local folder) and the built-in
tiny model (a local folder in the cache) go through :func:`load_vlm`:
``AutoModelForImageTextToText`` + ``AutoProcessor``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelError


def resolve_device(device: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU. Anything else is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ModelError(f"train.device: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"train.device: '{device}' requested but CUDA is not available")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on a CUDA device that supports it, float32 otherwise."""
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def load_vlm(name_or_path: str | os.PathLike, device: torch.device | None = None,
             dtype: torch.dtype = torch.float32):
    """Load ``(model, processor)`` from a hub id or a local folder.

    The model is put in eval mode on ``device`` with every base weight frozen; LoRA wrapping
    (:mod:`fedmllm.model.lora`) decides what trains.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    name = str(name_or_path)
    local = Path(name).expanduser()
    if local.exists() and not (local / "config.json").is_file():
        raise ModelError(f"{local}: not a model folder (no config.json)")
    try:
        processor = AutoProcessor.from_pretrained(name)
        model = AutoModelForImageTextToText.from_pretrained(name, dtype=dtype)
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{name}: cannot load as a vision-language model: {first}") from None
    tok = getattr(processor, "tokenizer", None)
    if tok is not None and tok.pad_token_id is None:
        # batches pad with this id; padded positions are masked out of attention and labels
        if tok.eos_token is None:
            raise ModelError(f"{name}: the tokenizer has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    model.requires_grad_(False)
    model.eval()
    if device is not None:
        model.to(device)
    return model, processor


def _unwrap(model: nn.Module) -> nn.Module:
    """The transformers model inside a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def language_model(model: nn.Module) -> nn.Module:
    """The decoder-only language model inside a vision-language model."""
    inner = _unwrap(model)
    lm = inner.get_decoder() if hasattr(inner, "get_decoder") else None
    if lm is None or lm is inner or not hasattr(lm, "layers"):
        base = getattr(inner, "model", None)
        for attr in ("language_model", "text_model", "llm"):
            cand = getattr(base, attr, None) or getattr(inner, attr, None)
            if cand is not None and hasattr(cand, "layers"):
                return cand
        raise ModelError(f"{type(inner).__name__}: cannot find the language model's layers")
    return lm


def language_model_prefix(model: nn.Module) -> str:
    """Qualified module name of the language model (e.g. ``model.language_model``)."""
    inner = _unwrap(model)
    lm = language_model(inner)
    for name, mod in inner.named_modules():
        if mod is lm:
            return name
    raise ModelError(f"{type(inner).__name__}: language model is not a submodule")  # pragma: no cover


def num_lm_layers(model: nn.Module) -> int:
    """Depth L of the language model (read from the model, never hard-coded)."""
    return len(language_model(model).layers)
