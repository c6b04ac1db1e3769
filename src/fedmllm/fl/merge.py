"""Compatibility module: the LoRA key helpers moved to :mod:`fedmllm.fl.oneshot.keys` and the
product merges to :mod:`fedmllm.fl.oneshot.product`; import from there (or from
:mod:`fedmllm.fl`). This module only re-exports them for code written before the move."""

from __future__ import annotations

from .oneshot.keys import client_weights, lora_module, lora_pairs, lora_role
from .oneshot.product import PRODUCT_METHODS, factorize, merge_lora_products, refactorize

__all__ = [
    "PRODUCT_METHODS",
    "client_weights",
    "factorize",
    "lora_module",
    "lora_pairs",
    "lora_role",
    "merge_lora_products",
    "refactorize",
]
