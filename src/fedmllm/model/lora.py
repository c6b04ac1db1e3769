"""LoRA on the language model's attention projections, and checked adapter state get/set.

The vision tower of a VLM also has ``q_proj``/``k_proj``/``v_proj`` modules, so targets are
selected by a regex anchored at the language model's own layers (see :func:`lora_target_regex`).
peft only *reports* missing and unexpected keys when a state is loaded; :func:`set_adapter_state`
raises on both, and on shape mismatches.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .loading import ModelError, enable_checkpointing, language_model_prefix, num_lm_layers


def lora_target_regex(model: nn.Module, modules: Sequence[str],
                      layers: Sequence[int] | None = None) -> str:
    """A peft ``target_modules`` regex matching ``modules`` in the chosen LM layers only.

    ``layers`` may be negative (``-1`` = last layer); ``None`` means every layer.
    """
    prefix = language_model_prefix(model)
    depth = num_lm_layers(model)
    if layers is None:
        layer_pat = r"\d+"
    else:
        resolved = []
        for i in layers:
            j = i + depth if i < 0 else i
            if not 0 <= j < depth:
                raise ModelError(f"lora.layers: layer {i} out of range for a {depth}-layer model")
            resolved.append(j)
        layer_pat = "(?:" + "|".join(str(j) for j in sorted(set(resolved))) + ")"
    mods = "|".join(re.escape(m) for m in modules)
    return rf"(?:.*\.)?{re.escape(prefix)}\.layers\.{layer_pat}\.self_attn\.(?:{mods})"


def wrap_lora(model: nn.Module, *, r: int, alpha: float, dropout: float,
              modules: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj"),
              layers: Sequence[int] | None = None, target_regex: str | None = None,
              modules_to_save: Sequence[str] | None = None, init_lora_weights=True,
              gradient_checkpointing: bool = False):
    """Wrap ``model`` in a peft LoRA model; returns the ``PeftModel``.

    Only the LoRA matrices (and ``modules_to_save`` copies) are trainable. With
    ``gradient_checkpointing`` the decoder layers recompute their activations in the backward
    pass (:func:`~fedmllm.model.loading.enable_checkpointing`).
    """
    from peft import LoraConfig, get_peft_model

    regex = target_regex or lora_target_regex(model, modules, layers)
    names = [n for n, _ in model.named_modules() if re.fullmatch(regex, n)]
    if not names:
        raise ModelError(f"lora: target regex {regex!r} matches no module of the model")
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=regex,
                     bias="none", modules_to_save=list(modules_to_save or []) or None,
                     init_lora_weights=init_lora_weights)
    wrapped = get_peft_model(model, cfg)
    if gradient_checkpointing:
        enable_checkpointing(wrapped)
    return wrapped


def get_adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The communicated adapter state: LoRA tensors (+ modules_to_save), detached copies."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def trainable_by_state_key(model: nn.Module) -> dict[str, nn.Parameter]:
    """Live trainable parameters keyed like :func:`get_adapter_state` (for penalties)."""
    from peft import get_peft_model_state_dict

    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    # peft renames "<module>.lora_A.default.weight" -> "<module>.lora_A.weight" and
    # "<m>.modules_to_save.default.<p>" -> "<m>.<p>"; invert that by identity of storage.
    by_ptr = {p.data_ptr(): (n, p) for n, p in params.items()}
    out: dict[str, nn.Parameter] = {}
    for key, t in get_peft_model_state_dict(model).items():
        hit = by_ptr.get(t.data_ptr())
        if hit is not None:
            out[key] = hit[1]
    return out


class AdapterState:
    """Fast, checked access to a peft model's adapter tensors, keyed as peft saves them.

    Built once per model; :meth:`get` and :meth:`set` copy tensors directly (no name rewriting
    per call), which keeps swapping adapters between simulated clients cheap.
    """

    def __init__(self, model: nn.Module):
        self.params = trainable_by_state_key(model)
        from peft import get_peft_model_state_dict

        keys = set(get_peft_model_state_dict(model))
        if keys != set(self.params):
            missing = sorted(keys - set(self.params))
            raise ModelError(f"adapter tensors not trainable or not found: '{missing[0]}'")

    def keys(self) -> list[str]:
        return list(self.params)

    def get(self) -> dict[str, torch.Tensor]:
        """Copies of the adapter tensors, laid end to end in one buffer per dtype and device
        (key order kept): the layout a server reads with one kernel per client."""
        groups: dict[tuple[torch.dtype, torch.device], list[str]] = {}
        for k, p in self.params.items():
            groups.setdefault((p.dtype, p.device), []).append(k)
        out: dict[str, torch.Tensor] = {}
        for (dtype, device), keys in groups.items():
            flat = torch.empty(sum(self.params[k].numel() for k in keys), dtype=dtype,
                               device=device)
            views, offset = [], 0
            for k in keys:
                p = self.params[k]
                views.append(flat[offset:offset + p.numel()].view(p.shape))
                offset += p.numel()
            with torch.no_grad():
                torch._foreach_copy_(views, [self.params[k].detach() for k in keys])
            out.update(zip(keys, views, strict=True))
        return {k: out[k] for k in self.params}

    def set(self, state: Mapping[str, torch.Tensor]) -> None:
        check_state_keys(state, {k: p.shape for k, p in self.params.items()})
        with torch.no_grad():
            for k, p in self.params.items():
                p.copy_(state[k])


def check_state_keys(state: Mapping[str, torch.Tensor], expected: Mapping) -> None:
    """Raise :class:`ModelError` on missing, unexpected or mis-shaped keys."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s), e.g. '{missing[0]}'")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s), e.g. '{unexpected[0]}'")
        raise ModelError("adapter state does not match the model: " + "; ".join(parts))
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k]):
            raise ModelError(f"adapter state key '{k}': shape {tuple(v.shape)} "
                             f"!= expected {tuple(expected[k])}")


def set_adapter_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load an adapter state, raising on missing, unexpected or mis-shaped keys."""
    AdapterState(model).set(state)
