"""The federated tensor core: algorithms over plain ``dict[str, Tensor]`` adapter states.

Torch only (no transformers, no Flower, no file I/O), so the in-process simulator and the
Flower apps drive the very same code.

- Server strategies: :func:`make_strategy` (names in :data:`ALGORITHMS`), each a
  :class:`Strategy` with ``aggregate(global_state, updates, round)``, ``server_extras()``,
  ``state_dict()``/``load_state_dict()``.
- Client objectives: :func:`make_objective` (names in :data:`OBJECTIVES`), each a
  :class:`ClientObjective` with ``begin``/``penalty``/``correct_gradients``/``end``.
- Update checks: :func:`validate_update`, :func:`filter_updates`.
- Client sampling: :func:`sample_clients`; round learning rates: :func:`round_lr`.
- YOCO one-shot LoRA (:mod:`.yoco`): :func:`svd_init`, :class:`YocoObjective`,
  :func:`pca_weighted_merge`, :func:`merge_lora_uploads`, conflict diagnostics,
  :func:`upload_units`; product merges (exact / TIES / DARE / task arithmetic):
  :func:`merge_lora_products` (:mod:`.merge`).
"""

from .aggregation import delta_norm
from .merge import (
    PRODUCT_METHODS,
    factorize,
    lora_pairs,
    merge_lora_products,
    refactorize,
)
from .objectives import (
    OBJECTIVES,
    AdaptiveProx,
    CrossEntropy,
    Prox,
    ScaffoldObjective,
    lm_layer_index,
    make_objective,
    objective_params,
)
from .sampling import sample_clients
from .schedule import SCHEDULES, round_lr
from .strategies import (
    ALGORITHMS,
    VARIANTS,
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
from .types import ClientObjective, ClientUpdate, Extras, StateDict, Strategy
from .validation import filter_updates, validate_update
from .yoco import (
    PCA_WEIGHTINGS,
    UPLOAD_RULES,
    YOCO_VARIANTS,
    YocoObjective,
    code_init,
    conflict_matrix,
    conflict_report,
    gamma_schedule,
    l1_penalty,
    merge_lora_uploads,
    orthogonal_lambda,
    orthogonal_penalty,
    pca_weighted_merge,
    sign_conflict,
    sign_penalty,
    svd_init,
    svd_residual,
    upload_units,
)

__all__ = [
    "ALGORITHMS",
    "OBJECTIVES",
    "PCA_WEIGHTINGS",
    "PRODUCT_METHODS",
    "SCHEDULES",
    "UPLOAD_RULES",
    "VARIANTS",
    "YOCO_VARIANTS",
    "AdaptiveProx",
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
    "Prox",
    "Scaffold",
    "ScaffoldObjective",
    "StateDict",
    "Strategy",
    "TrimmedMean",
    "YocoObjective",
    "ZeroShot",
    "code_init",
    "conflict_matrix",
    "conflict_report",
    "delta_norm",
    "factorize",
    "filter_updates",
    "gamma_schedule",
    "l1_penalty",
    "lm_layer_index",
    "lora_pairs",
    "make_objective",
    "make_strategy",
    "merge_lora_products",
    "merge_lora_uploads",
    "objective_params",
    "orthogonal_lambda",
    "orthogonal_penalty",
    "pca_weighted_merge",
    "refactorize",
    "round_lr",
    "sample_clients",
    "sign_conflict",
    "sign_penalty",
    "strategy_params",
    "svd_init",
    "svd_residual",
    "upload_units",
    "validate_update",
]
