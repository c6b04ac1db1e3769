"""Model layer: load any HF vision-language model, the built-in tiny model, LoRA, collation."""

from .collate import collate, encode_sample
from .loading import ModelError, load_vlm, num_lm_layers, resolve_device, resolve_dtype
from .lora import AdapterState, get_adapter_state, lora_target_regex, set_adapter_state, wrap_lora

__all__ = ["AdapterState", "ModelError", "collate", "encode_sample", "get_adapter_state",
           "load_vlm", "lora_target_regex", "num_lm_layers", "resolve_device", "resolve_dtype",
           "set_adapter_state", "wrap_lora"]
