"""The model a run trains: base model + processor, wrapped with LoRA, on its device.

:func:`build_bundle` builds a run's :class:`~fedmllm.engine.factory.RunPlan` top to bottom:
load the base (any Hugging Face vision-language model, or the built-in tiny one) → LoRA on the
language model's attention projections → the adapter's initialisation → the initial state. A
bundle keeps fast access to the adapter tensors (:class:`~fedmllm.model.lora.AdapterState`), so
drivers swap client adapters in and out of one model. :func:`save_adapter` writes an adapter
state in PEFT format.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import torch

from ..files import atomic_dir
from ..model.loading import load_base
from ..model.lora import AdapterState, wrap_lora
from ..model.tiny import ensure_tiny
from ..seeding import torch_seed
from .factory import RunPlan

#: ``lora.init`` -> peft's ``init_lora_weights``.
LORA_INIT = {"default": True, "gaussian": "gaussian", "pissa": "pissa"}

#: Where :func:`build_bundle` takes the frozen base from while set: an object with
#: ``load(plan.model) -> Base`` (a base as :func:`~fedmllm.model.loading.load_base` gives it)
#: and ``adopt(peft_model, plan)`` (told what was wrapped around it), the bench worker's cache
#: of loaded bases (:class:`fedmllm.bench.worker.Bases`). Unset (the default): every run loads
#: its own base.
BASES: ContextVar = ContextVar("fedmllm_bases", default=None)


@dataclass
class ModelBundle:
    model: torch.nn.Module
    """The peft-wrapped model."""
    processor: object
    adapter: AdapterState
    device: torch.device
    dtype: torch.dtype
    num_layers: int
    """Decoder layers of the language model."""
    source: str
    """The folder or hub id the base model came from."""
    init: str = "default"
    """How the adapter was initialised (``lora.init`` / ``fl.yoco.init``)."""
    autocast: torch.dtype | None = None
    """The autocast dtype of the forward passes (``train.autocast``), or ``None``."""
    quantization: str = "none"
    """``model.quantization``: how the frozen base was loaded."""

    def compute(self) -> contextlib.AbstractContextManager:
        """The context every forward pass runs in: ``torch.autocast`` to :attr:`autocast` on
        this device, or nothing. Backward passes run outside it, as PyTorch recommends."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)


def build_bundle(plan: RunPlan) -> ModelBundle:
    """The model of ``plan``, in one pass: load the base
    (:func:`~fedmllm.model.loading.load_base`, on ``plan.model.device`` in its dtype,
    quantized with ``plan.model.quantization``; a built-in preset built first if it is not
    cached, :func:`~fedmllm.model.tiny.ensure_tiny`), wrap its language model with LoRA
    (``plan.lora``'s targets, rank and alpha; gradient checkpointing if asked), initialise the
    adapter (``plan.init``), and return it holding the run's initial adapter state.

    The LoRA draw comes from the run's seed (key ``"lora_init"``; the caller's torch generator
    state is left as it was). ``init`` names peft's initialisation (:data:`LORA_INIT`), or
    ``code`` (:func:`apply_code_init` after peft's default). The base is placed on its device
    once, here; clients' adapters are then swapped into it on the device
    (:class:`~fedmllm.model.lora.AdapterState`). With :data:`BASES` set, the base comes from
    there and is handed back wrapped."""
    m, lora, bases = plan.model, plan.lora, BASES.get()
    if m.preset is not None:  # a built-in preset is built into its cache folder on first use
        ensure_tiny(*m.preset)
    base = bases.load(m) if bases is not None else load_base(
        m.source, device=m.device, dtype=m.dtype, trust_remote_code=m.trust_remote_code,
        quantization=m.quantization)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed(m.seed, "lora_init"))
        model = wrap_lora(base.model, r=lora.r, alpha=lora.alpha, dropout=lora.dropout,
                          modules=lora.modules, layers=lora.layers,
                          target_regex=lora.target_regex, modules_to_save=m.modules_to_save,
                          init_lora_weights=LORA_INIT.get(plan.init, True),
                          gradient_checkpointing=m.gradient_checkpointing)
    if bases is not None:
        bases.adopt(model, plan)
    if m.quantization == "none":  # peft puts the adapters of a quantized layer beside it
        model.to(m.device)
    bundle = ModelBundle(model, base.processor, AdapterState(model), m.device, m.input_dtype,
                         base.num_layers, m.source, plan.init, m.autocast, m.quantization)
    if plan.init == "code":
        apply_code_init(bundle, lora.r, m.seed)
    return bundle


def apply_code_init(bundle: ModelBundle, r: int, seed: int) -> None:
    """The YOCO release's initialisation: every LoRA module's ``B0`` from the SVD of its frozen
    weight and ``A0`` random (:func:`fedmllm.fl.code_init`; drawn from key ``"code_init"``)."""
    from ..fl import code_init
    from ..fl.oneshot.keys import lora_module, lora_role
    from ..seeding import torch_generator

    gen = torch_generator(seed, "code_init")
    state = bundle.adapter.get()
    for key in sorted(state):
        if lora_role(key) != "A":
            continue
        kb = key.replace("lora_A", "lora_B")
        weight = bundle.model.get_submodule(lora_module(key)).base_layer.weight
        a0, b0 = code_init(weight.detach().float().cpu(), r, generator=gen)
        state[key], state[kb] = a0.to(state[key]), b0.to(state[kb])
    bundle.adapter.set(state)


def base_weights(bundle: ModelBundle,
                 initial: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The pre-trained weight ``W`` of every LoRA-targeted module, by module name: the frozen
    base weight, plus ``s B0 A0`` where PiSSA left a residual there (``initial`` holds
    ``A0``/``B0``)."""
    from ..fl.oneshot.keys import lora_module, lora_role

    out = {}
    for key in sorted(initial):
        if lora_role(key) != "A":
            continue
        name = lora_module(key)
        module = bundle.model.get_submodule(name)
        w = module.base_layer.weight.detach().double()
        if bundle.init == "pissa":
            b0 = initial[key.replace("lora_A", "lora_B")].double().to(w.device)
            w = w + float(module.scaling["default"]) * (b0 @ initial[key].double().to(w.device))
        out[name] = w
    return out


def save_adapter(bundle: ModelBundle, state: dict[str, torch.Tensor], path: Path, meta: dict,
                 pissa_initial: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``state`` in PEFT format to the folder ``path`` (atomically), with ``meta`` as
    ``fedmllm.json``.

    With ``pissa_initial`` (the PiSSA adapter the run started from, whose base weights are the
    residual ``W - s B0 A0``) peft converts the adapter to a plain rank-2r LoRA ``[A; A0]``,
    ``[B, -B0]`` that loads on the *original* base model.

    The base is recorded by a portable name (:func:`fedmllm.model.names.portable_name`): a
    built-in preset as ``fedmllm-preset:<preset>`` instead of its hashed cache folder, in
    ``adapter_config.json`` (``base_model_name_or_path``) and in ``fedmllm.json``
    (``base_model_name``, beside ``base_model``, the folder or hub id this process loaded, and
    for a preset ``base_recipe``, its cache folder's name). peft's empty ``README.md`` template
    is replaced by :func:`fedmllm.report.modelcard.adapter_card` (the full card follows once
    the run's summary exists).
    """
    from ..model.names import portable_name
    from ..report.modelcard import adapter_card

    name = portable_name(bundle.source)
    meta = {**meta, "base_model_name": name}
    if name != str(bundle.source):
        meta["base_recipe"] = Path(bundle.source).name
    with atomic_dir(path) as tmp:
        if pissa_initial is not None:
            with tempfile.TemporaryDirectory() as scratch:
                initial = Path(scratch) / "initial"
                bundle.adapter.set(pissa_initial)
                bundle.model.save_pretrained(initial)
                bundle.adapter.set(state)
                bundle.model.save_pretrained(
                    tmp, path_initial_model_for_weight_conversion=str(initial))
        else:
            bundle.adapter.set(state)
            bundle.model.save_pretrained(tmp)
        config_file = tmp / "adapter_config.json"
        config = json.loads(config_file.read_text())
        config["base_model_name_or_path"] = name
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True))
        (tmp / "fedmllm.json").write_text(json.dumps(meta, indent=2))
        (tmp / "README.md").write_text(adapter_card(meta, path))
