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


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` is a CUDA device that computes in bfloat16."""
    return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on a CUDA device that supports it, float32 otherwise."""
    if dtype == "auto":
        return torch.bfloat16 if bf16_supported(device) else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def resolve_autocast(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the forward passes (``train.autocast``), or ``None`` for none.

    ``auto``: bfloat16 where :func:`bf16_supported` (CUDA only: CPU runs keep their float32
    numbers), none elsewhere; ``bf16``: bfloat16, a :class:`ModelError` where unsupported;
    ``off``: none.
    """
    if mode == "off":
        return None
    if bf16_supported(device):
        return torch.bfloat16
    if mode == "bf16":
        raise ModelError(f"train.autocast: bf16 needs a CUDA device that supports bfloat16 "
                         f"(this run's device is {device})")
    return None


def quantization_config(mode: str, compute_dtype: torch.dtype = torch.bfloat16):
    """transformers' ``BitsAndBytesConfig`` for ``model.quantization`` (QLoRA's recipe):
    ``4bit`` = NF4 with double quantization, matmuls in ``compute_dtype``; ``8bit`` =
    LLM.int8. ``none``: ``None``."""
    if mode == "none":
        return None
    from transformers import BitsAndBytesConfig

    if mode == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype)
    if mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ModelError(f"model.quantization: unknown mode {mode!r}; choices: none, 4bit, 8bit")


def quantization_problem(mode: str, device: torch.device | str) -> str | None:
    """Why ``model.quantization = mode`` cannot run on ``device`` here (one line), or
    ``None``: bitsandbytes quantization needs a CUDA device and the ``bitsandbytes``
    package."""
    import importlib.util

    if mode == "none":
        return None
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return (f"model.quantization: {mode} needs a CUDA GPU (bitsandbytes); this run's "
                f"device is {device.type} — use model.quantization=none on this machine")
    if importlib.util.find_spec("bitsandbytes") is None:
        return (f"model.quantization: {mode} needs bitsandbytes, which is not installed: "
                f"pip install 'fedmllm[qlora]'")
    return None


def load_vlm(name_or_path: str | os.PathLike, device: torch.device | None = None,
             dtype: torch.dtype = torch.float32, quantization: str = "none"):
    """Load ``(model, processor)`` from a hub id or a local folder.

    The model is put in eval mode on ``device`` with every base weight frozen; LoRA wrapping
    (:mod:`fedmllm.model.lora`) decides what trains. With ``quantization`` (``4bit``/``8bit``,
    :func:`quantization_config`) bitsandbytes quantizes the linear layers while they are
    loaded straight onto ``device`` (a CUDA device; :func:`quantization_problem` says why not).
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    name = str(name_or_path)
    local = Path(name).expanduser()
    if local.exists() and not (local / "config.json").is_file():
        raise ModelError(f"{local}: not a model folder (no config.json)")
    kwargs: dict = {"dtype": dtype}
    if quantization != "none":
        problem = quantization_problem(quantization, device or "cpu")
        if problem:
            raise ModelError(problem)
        kwargs.update(quantization_config=quantization_config(quantization, dtype),
                      device_map={"": device})
    try:
        processor = AutoProcessor.from_pretrained(name)
        model = AutoModelForImageTextToText.from_pretrained(name, **kwargs)
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
    if device is not None and quantization == "none":  # a quantized model was loaded there
        model.to(device)
    return model, processor


def enable_checkpointing(model: nn.Module) -> None:
    """Activation (gradient) checkpointing on every decoder layer of ``model`` (a peft model
    or a transformers one), non-reentrant: the layers' activations are recomputed in the
    backward pass (with the forward's random state, so dropout masks are the same) instead of
    being kept. :class:`ModelError` when the model does not support it."""
    inner = _unwrap(model)
    enable = getattr(inner, "activation_checkpointing_enable", None) \
        or getattr(inner, "gradient_checkpointing_enable", None)
    if enable is None or not getattr(inner, "supports_gradient_checkpointing", False):
        raise ModelError(f"train.gradient_checkpointing: {type(inner).__name__} does not "
                         "support activation checkpointing")
    enable({"use_reentrant": False})


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
