"""Load any Hugging Face vision-language model and its processor, the same way for all of them.

Real checkpoints (SmolVLM, Qwen2-VL, LLaVA, ... from the hub or a local folder) and the built-in
tiny model (a local folder in the cache) go through :func:`load_vlm`:
``AutoModelForImageTextToText`` + ``AutoProcessor``. :func:`load_base` is a run's way in: the
base a run wraps with LoRA, prepared for training if quantized.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from ..errors import ModelError
from ..files import local_model_problem, looks_local


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
    """Whether ``device`` is a CUDA device that computes in bfloat16 (one torch cannot ask, as
    a build without CUDA kernels, does not)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    try:
        return torch.cuda.is_bf16_supported()
    except (AssertionError, RuntimeError):  # "Torch not compiled with CUDA enabled"
        return False


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


BNB_CPU_MIN = (0, 50)
"""The oldest bitsandbytes release this project has trained QLoRA with on the CPU (0.50.2:
4-bit NF4 with double quantization and 8-bit LLM.int8 on the built-in tiny model,
``tests/test_qlora_cpu.py``). Its CPU backend quantizes, dequantizes and trains both (8-bit
training goes through ``MatMul8bitFp``, a float32 matmul); older releases are refused on the
CPU rather than guessed at."""


def _bnb_version() -> tuple[int, int] | None:
    """The installed bitsandbytes' ``(major, minor)`` from its metadata (no import), or
    ``None`` when it is not installed."""
    import importlib.metadata
    import importlib.util
    import re

    if importlib.util.find_spec("bitsandbytes") is None:
        return None
    try:
        version = importlib.metadata.version("bitsandbytes")
    except importlib.metadata.PackageNotFoundError:
        return (0, 0)
    m = re.match(r"(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def quantization_problem(mode: str, device: torch.device | str) -> str | None:
    """Why ``model.quantization = mode`` cannot run on ``device`` here (one line), or
    ``None``. bitsandbytes must be installed; a CUDA device takes any supported release, the
    CPU one whose CPU backend trains (:data:`BNB_CPU_MIN`, read from the package metadata);
    other devices are refused."""
    if mode == "none":
        return None
    device = torch.device(device)
    version = _bnb_version()
    if device.type == "cuda" and torch.cuda.is_available():
        if version is None:
            return (f"model.quantization: {mode} needs bitsandbytes, which is not installed: "
                    f"pip install 'fedmllm[qlora]'")
        return None
    if device.type != "cpu":
        return (f"model.quantization: {mode} needs a CUDA GPU or the CPU (bitsandbytes); this "
                f"run's device is {device.type} — use model.quantization=none on this machine")
    need = ".".join(map(str, BNB_CPU_MIN))
    if version is None:
        return (f"model.quantization: {mode} needs bitsandbytes, which is not installed: "
                f"pip install 'fedmllm[qlora]' (on the CPU: bitsandbytes>={need})")
    if version < BNB_CPU_MIN:
        have = ".".join(map(str, version))
        return (f"model.quantization: {mode} on the CPU needs bitsandbytes>={need} (installed: "
                f"{have}) — upgrade it, or use model.quantization=none on this machine")
    return None


def quantization_compute_dtype(device: torch.device | None, dtype: torch.dtype) -> torch.dtype:
    """The dtype a quantized layer computes in: the model's ``dtype`` on a GPU, float32 on the
    CPU, where bitsandbytes' training path dequantizes the weight and multiplies in the
    compute dtype (float32 keeps CPU runs in the float32 numbers the rest of a CPU run uses)."""
    return dtype if device is not None and device.type != "cpu" else torch.float32


#: Seconds :func:`hub_model_problem` waits for the hub's answer (one request, no retries).
HUB_TIMEOUT = 10.0


def hub_model_problem(name: str, *, ask_hub: bool = True) -> str | None:
    """Why the hub id ``name`` cannot be loaded on this machine (one line, to follow the name),
    or ``None``; ``None`` too for a name that :func:`~fedmllm.files.looks_local`.

    A model whose ``config.json`` is in the local Hugging Face cache loads. Otherwise, with
    ``HF_HUB_OFFLINE=1`` it is refused without a request; online (``ask_hub``) the hub is
    asked once whether it holds the model (``model_info``: one request, :data:`HUB_TIMEOUT`,
    none of the download's retries), and a model it does not hold, or a hub that cannot be
    reached, is refused. A gated model exists: its download says what access it needs.
    """
    if looks_local(name):
        return None
    import huggingface_hub
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        RepositoryNotFoundError,
    )

    try:
        cached = huggingface_hub.try_to_load_from_cache(name, "config.json")
    except HFValidationError:
        return "no such model folder, and not a Hugging Face hub id (name or org/name)"
    if isinstance(cached, str):
        return None
    if huggingface_hub.is_offline_mode():
        return ("no such model folder, and not in the Hugging Face cache (HF_HUB_OFFLINE=1 "
                "downloads nothing: download it first, or give the model folder's path)")
    if not ask_hub:
        return None
    try:
        huggingface_hub.HfApi().model_info(name, timeout=HUB_TIMEOUT)
    except GatedRepoError:
        return None
    except RepositoryNotFoundError:
        return ("no such model folder, and no such model on the Hugging Face hub (a private "
                "one needs `hf auth login`)")
    except Exception as e:  # noqa: BLE001 - no network, a proxy, a timeout: not reachable
        return (f"no such model folder, not in the Hugging Face cache, and the hub cannot "
                f"be reached ({_first_line(e)})")
    return None


def _check_source(name: str, device, trust_remote_code: bool, quantization: str) -> None:
    """Before anything loads: a local path is a model folder, a hub id is in the cache when
    offline (:func:`hub_model_problem`, without asking the hub), the quantization can run
    here, and a checkpoint's own code is run only when allowed (:func:`check_remote_code`)."""
    local = Path(name).expanduser()
    problem = local_model_problem(name) or hub_model_problem(name, ask_hub=False)
    if problem:
        raise ModelError(f"{local}: {problem}")
    if quantization != "none":
        problem = quantization_problem(quantization, device or "cpu")
        if problem:
            raise ModelError(problem)
    if local.is_dir():
        check_remote_code(local, trust_remote_code)


def load_vlm(name_or_path: str | os.PathLike, device: torch.device | None = None,
             dtype: torch.dtype = torch.float32, trust_remote_code: bool = False,
             quantization: str = "none"):
    """Load ``(model, processor)`` from a hub id or a local folder.

    The model is put in eval mode on ``device`` with every base weight frozen; LoRA wrapping
    (:mod:`fedmllm.model.lora`) decides what trains. ``trust_remote_code`` lets a checkpoint
    whose classes are not in transformers run the Python files it ships (``auto_map`` in its
    ``config.json``), as ``from_pretrained(..., trust_remote_code=True)`` does. With
    ``quantization`` (``4bit``/``8bit``, :func:`quantization_config`) bitsandbytes quantizes
    the linear layers while they are loaded straight onto ``device`` (a CUDA device, or the
    CPU with a recent bitsandbytes; :func:`quantization_problem` says why not). Every failure
    is a one-line :class:`ModelError` naming what is missing.
    """
    from transformers import AutoConfig, AutoModelForImageTextToText

    name = str(name_or_path)
    _check_source(name, device, trust_remote_code, quantization)
    kwargs = {"trust_remote_code": True} if trust_remote_code else {}
    try:  # the config first: an unknown model type or a broken file is named as such
        AutoConfig.from_pretrained(name, **kwargs)
    except (OSError, ValueError, KeyError, ImportError, AttributeError, TypeError) as e:
        raise ModelError(f"{name}: cannot read its config: {_first_line(e)}") from None
    processor = load_processor(name, trust_remote_code)
    load_kwargs: dict = {"dtype": dtype, **kwargs}
    if quantization != "none":
        compute = quantization_compute_dtype(device, dtype)
        load_kwargs.update(quantization_config=quantization_config(quantization, compute),
                           device_map={"": device or "cpu"})
    try:
        model = AutoModelForImageTextToText.from_pretrained(name, **load_kwargs)
    except ValueError as e:
        model = _load_remote_model(name, dtype, e) if trust_remote_code else None
        if model is None:
            raise ModelError(f"{name}: cannot load as a vision-language model: "
                             f"{_first_line(e)}") from None
    except (OSError, KeyError, ImportError, AttributeError, TypeError, RuntimeError) as e:
        raise ModelError(f"{name}: cannot load as a vision-language model: "
                         f"{_first_line(e)}") from None
    _check_interface(name, model)
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


class Base(NamedTuple):
    """A run's frozen base model, ready to be wrapped with LoRA."""

    model: nn.Module
    processor: object
    num_layers: int
    """Decoder layers of the language model (:func:`num_lm_layers`)."""


def load_base(source: str, *, device: torch.device, dtype: torch.dtype,
              trust_remote_code: bool = False, quantization: str = "none") -> Base:
    """The base model a run trains LoRA on: ``source`` (a hub id or a folder) loaded by
    :func:`load_vlm` on ``device`` in ``dtype``. A quantized base (``4bit``/``8bit``) is
    prepared as peft's ``prepare_model_for_kbit_training`` does (layer norms and other
    unquantized weights in float32, so inputs are passed in float32), and on the CPU kept on
    bitsandbytes' training path (:func:`keep_4bit_layout`, :func:`quiet_int8_casts`)."""
    model, processor = load_vlm(source, device=device, dtype=dtype,
                                trust_remote_code=trust_remote_code, quantization=quantization)
    if quantization != "none":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        if device.type == "cpu":
            keep_4bit_layout(model)
            quiet_int8_casts()
    return Base(model, processor, num_lm_layers(model))


def keep_4bit_layout(model: nn.Module) -> int:
    """Keep bitsandbytes' 4-bit CPU layers in the layout they train in; the number changed.

    On a CPU with AVX512-BF16, bitsandbytes (0.50) repacks a ``Linear4bit``'s weight into its
    CPU inference layout the first time the layer runs in eval mode without gradients (an
    evaluation), and from then on multiplies through ``bitsandbytes::gemv_4bit``, which has no
    backward: the next round's training would backpropagate through it with silently wrong
    gradients (PyTorch only warns). Turning the repacking off keeps every pass, training and
    evaluation, on the dequantize-and-matmul path in float32."""
    count = 0
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            count += 1
    return count


class _Int8CastFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("MatMul8bitLt: inputs will be cast")


def quiet_int8_casts() -> None:
    """Drop bitsandbytes' per-call warning that an 8-bit layer evaluated on the CPU casts its
    float32 inputs to float16 (LLM.int8's inference path; training on the CPU stays float32):
    one line per layer and batch, hundreds per evaluation. Other bitsandbytes messages stay."""
    log = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _Int8CastFilter) for f in log.filters):
        log.addFilter(_Int8CastFilter())


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def check_remote_code(folder: Path, trust: bool) -> None:
    """A folder whose ``config.json`` maps its classes to Python files it ships (``auto_map``,
    e.g. MiniCPM-V 2.6's ``modeling_minicpmv.MiniCPMV``) runs that code only when the user
    allows it, and only when the files are there."""
    import json

    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{folder / 'config.json'}: not readable as JSON: {_first_line(e)}"
                         ) from None
    auto_map = config.get("auto_map") if isinstance(config, dict) else None
    if not isinstance(auto_map, dict) or not auto_map:
        return
    refs = [v for v in auto_map.values() for v in (v if isinstance(v, list) else [v])
            if isinstance(v, str)]
    # "module.Class" or "repo--module.Class" (code kept in another hub repository)
    modules = sorted({r.split("--")[-1].rsplit(".", 1)[0] for r in refs if "." in r})
    if not trust:
        raise ModelError(f"{folder}: the model's code is not part of transformers (config.json "
                         f"auto_map names {', '.join(modules) or 'custom classes'}); set "
                         "model.trust_remote_code=true to run the Python files shipped with "
                         "the checkpoint (read them first)")
    missing = [f"{m}.py" for m in modules if "--" not in m and not (folder / f"{m}.py").is_file()]
    if missing:
        raise ModelError(f"{folder}: config.json auto_map needs {', '.join(missing)}, which "
                         "is not in the folder (download the whole repository, e.g. "
                         "huggingface-cli download <repo> --local-dir DIR)")


def _load_remote_model(name: str, dtype: torch.dtype, first: Exception):
    """A remote-code model that does not register for image-text-to-text: MiniCPM-V 2.x maps
    only ``AutoModel``/``AutoModelForCausalLM``. ``None`` when neither loads it."""
    from transformers import AutoModel, AutoModelForCausalLM

    for auto in (AutoModelForCausalLM, AutoModel):
        try:
            return auto.from_pretrained(name, dtype=dtype, trust_remote_code=True)
        except ValueError:
            continue
        except (OSError, KeyError, ImportError, AttributeError, TypeError, RuntimeError) as e:
            raise ModelError(f"{name}: cannot load its remote code: {_first_line(e)}") from None
    return None


#: what fedmllm passes to every model's forward (plus the processor's vision tensors)
_VLM_INPUTS = ("input_ids", "attention_mask", "labels")


def _check_interface(name: str, model: nn.Module) -> None:
    """The model must take the transformers vision-language inputs fedmllm trains and scores
    with; remote code with its own calling convention (MiniCPM-V 2.6: ``forward(data)``) is
    refused here, in one line, rather than failing inside the first training step."""
    import inspect

    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()) and \
            "input_ids" in params:
        return
    missing = [a for a in _VLM_INPUTS if a not in params]
    if missing:
        raise ModelError(f"{name}: {type(model).__name__}.forward takes "
                         f"({', '.join(list(params)[:3])}, ...), not the transformers "
                         f"vision-language inputs ({', '.join(missing)} missing); fedmllm needs "
                         "a model that does (for MiniCPM-V: a transformers-native checkpoint, "
                         "model type minicpmv4_6)")


def load_processor(name: str, trust_remote_code: bool = False):
    """``AutoProcessor.from_pretrained(name)``, its failures as one-line :class:`ModelError`.

    Processors that have a video part (Qwen2-VL, Qwen2.5-VL, LLaVA-OneVision, SmolVLM,
    MiniCPM-V 4.6) are built by transformers only where torchvision imports, although fedmllm
    never passes videos; without it the error says so and how to install it."""
    from transformers import AutoProcessor

    kwargs = {"trust_remote_code": True} if trust_remote_code else {}
    try:
        return AutoProcessor.from_pretrained(name, **kwargs)
    except (ImportError, AttributeError, ValueError, OSError, KeyError, TypeError) as e:
        needs = torchvision_problem() if _is_video_backend_error(e) else None
        if needs:
            raise ModelError(f"{name}: its processor has a video part, which transformers "
                             f"builds only with torchvision: {needs}") from None
        raise ModelError(f"{name}: cannot load its processor: {_first_line(e)}") from None


def torchvision_problem() -> str | None:
    """Why torchvision cannot be used here (one line with the fix), or ``None`` when it
    imports."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:
        return ("torchvision is not installed; install the torchvision build that matches "
                f"your torch {torch.__version__} (pip install 'fedmllm[video]' beside it)")
    try:
        import torchvision  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any failure to import is the answer
        return (f"torchvision is installed but does not import beside torch "
                f"{torch.__version__} ({_first_line(e)}); install the matching build")
    return None


def _is_video_backend_error(e: BaseException) -> bool:
    """transformers' answers when a processor's video part cannot be built: an ImportError
    naming torchvision, or a lookup of ``BaseVideoProcessor`` / ``VIDEO_PROCESSOR_MAPPING``
    that fails because torchvision-only classes are not registered."""
    text = str(e)
    return ("torchvision" in text.lower() or "VIDEO_PROCESSOR_MAPPING" in text
            or "VideoProcessor" in text or "video processor" in text.lower())


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
    raise ModelError(  # pragma: no cover
        f"{type(inner).__name__}: language model is not a submodule")


def num_lm_layers(model: nn.Module) -> int:
    """Depth L of the language model (read from the model, never hard-coded)."""
    return len(language_model(model).layers)
