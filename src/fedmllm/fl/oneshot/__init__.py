"""One-shot merges of the clients' single LoRA uploads.

- :mod:`.keys`: :func:`lora_role`, :func:`lora_module`, :func:`lora_pairs`,
  :func:`client_weights`.
- :mod:`.factor`: :func:`merge_lora_uploads`, factor by factor with separate rules for ``A``,
  ``B`` and other keys (:data:`UPLOAD_RULES`; YOCO's server step); :func:`rule_params`, the
  adaptive rules' one-shot first step (research or textbook).
- :mod:`.product`: :func:`merge_lora_products` on the products ``B_i A_i`` (exact, task
  arithmetic, TIES, DARE; :data:`PRODUCT_METHODS`), :func:`factorize`, :func:`refactorize`.
- :mod:`.registry`: the merge rules, each registered where it is defined
  (:func:`register_merge`, :func:`get_merge`, :func:`merge_names`).
"""

from __future__ import annotations

from .factor import (
    ADAPTIVE_RULES,
    FEDOPT_STEPS,
    UPLOAD_RULES,
    merge_lora_uploads,
    rule_params,
    upload_rules,
)
from .keys import client_weights, lora_module, lora_pairs, lora_role
from .product import (
    PRODUCT_METHODS,
    factorize,
    merge_lora_products,
    product_methods,
    refactorize,
)
from .registry import get_merge, merge_names, register_merge

__all__ = [
    "ADAPTIVE_RULES",
    "FEDOPT_STEPS",
    "PRODUCT_METHODS",
    "UPLOAD_RULES",
    "client_weights",
    "factorize",
    "get_merge",
    "lora_module",
    "lora_pairs",
    "lora_role",
    "merge_lora_products",
    "merge_lora_uploads",
    "merge_names",
    "product_methods",
    "refactorize",
    "register_merge",
    "rule_params",
    "upload_rules",
]
