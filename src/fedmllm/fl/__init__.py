"""The federated tensor core: algorithms over plain ``dict[str, Tensor]`` adapter states.

Torch only (no transformers, no Flower, no file I/O). The in-process simulator drives this code;
it is written so that Flower server and client apps can drive the very same code later.

- :mod:`.types`: :class:`ClientUpdate`, the :class:`Strategy` and :class:`ClientObjective`
  interfaces, :class:`ObjectiveResult`.
- :mod:`.strategies`: server strategies, one per module; :func:`make_strategy` (names in
  :data:`ALGORITHMS`), each with ``aggregate(global_state, updates, round)``,
  ``server_extras()``, ``state_dict()``/``load_state_dict()``.
- :mod:`.objectives`: client objectives, one per module; :func:`make_objective` (names in
  :data:`OBJECTIVES`), each with ``begin``/``penalty``/``correct_gradients``/``end``.
- :mod:`.aggregation`: the reduction kernels the strategies share; :func:`pack_state` lays a
  client upload out in one buffer (what the kernels read fastest).
- :mod:`.validation`: :func:`validate_update`, :func:`filter_updates`.
- :mod:`.sampling`: :func:`sample_clients`; :mod:`.schedule`: :func:`round_lr` (per round),
  :func:`local_lr` (per optimizer step of a local run).
- :mod:`.yoco`: YOCO one-shot LoRA (NeurIPS 2025): :func:`svd_init`, :class:`YocoObjective`,
  :func:`pca_weighted_merge`, conflict diagnostics, :func:`upload_units`.
- :mod:`.oneshot`: one-shot merges of single uploads, factor by factor
  (:func:`merge_lora_uploads`) or on the products (exact / TIES / DARE / task arithmetic:
  :func:`merge_lora_products`).
- :mod:`.checks`: the argument checks every module shares; :mod:`.layers`:
  :func:`lm_layer_index`.
"""

from .aggregation import delta_norm, pack_state
from .layers import lm_layer_index
from .objectives import (
    OBJECTIVES,
    AdaptiveProx,
    CrossEntropy,
    Prox,
    ScaffoldObjective,
    make_objective,
    objective_params,
)
from .oneshot import (
    PRODUCT_METHODS,
    UPLOAD_RULES,
    client_weights,
    factorize,
    lora_module,
    lora_pairs,
    lora_role,
    merge_lora_products,
    merge_lora_uploads,
    refactorize,
)
from .sampling import sample_clients
from .schedule import LOCAL_SCHEDULES, SCHEDULES, local_lr, round_lr
from .strategies import (
    ALGORITHMS,
    VARIANTS,
    Centralized,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    Local,
    Median,
    Scaffold,
    TrimmedMean,
    ZeroShot,
    make_strategy,
    strategy_params,
)
from .types import ClientObjective, ClientUpdate, Extras, ObjectiveResult, StateDict, Strategy
from .validation import filter_updates, validate_update
from .yoco import (
    A_PENALTIES,
    PCA_WEIGHTINGS,
    YOCO_VARIANTS,
    YocoObjective,
    code_init,
    conflict_matrix,
    conflict_report,
    gamma_schedule,
    l1_penalty,
    orthogonal_lambda,
    orthogonal_penalty,
    pca_weighted_merge,
    sign_conflict,
    sign_penalty,
    spectral_gap,
    svd_init,
    svd_residual,
    upload_units,
)

__all__ = [
    "ALGORITHMS",
    "A_PENALTIES",
    "LOCAL_SCHEDULES",
    "OBJECTIVES",
    "PCA_WEIGHTINGS",
    "PRODUCT_METHODS",
    "SCHEDULES",
    "UPLOAD_RULES",
    "VARIANTS",
    "YOCO_VARIANTS",
    "AdaptiveProx",
    "Centralized",
    "ClientObjective",
    "ClientUpdate",
    "CrossEntropy",
    "Extras",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedProx",
    "FedYogi",
    "Local",
    "Median",
    "ObjectiveResult",
    "Prox",
    "Scaffold",
    "ScaffoldObjective",
    "StateDict",
    "Strategy",
    "TrimmedMean",
    "YocoObjective",
    "ZeroShot",
    "client_weights",
    "code_init",
    "conflict_matrix",
    "conflict_report",
    "delta_norm",
    "factorize",
    "filter_updates",
    "gamma_schedule",
    "l1_penalty",
    "lm_layer_index",
    "local_lr",
    "lora_module",
    "lora_pairs",
    "lora_role",
    "make_objective",
    "make_strategy",
    "merge_lora_products",
    "merge_lora_uploads",
    "objective_params",
    "orthogonal_lambda",
    "orthogonal_penalty",
    "pack_state",
    "pca_weighted_merge",
    "refactorize",
    "round_lr",
    "sample_clients",
    "sign_conflict",
    "sign_penalty",
    "spectral_gap",
    "strategy_params",
    "svd_init",
    "svd_residual",
    "upload_units",
    "validate_update",
]
