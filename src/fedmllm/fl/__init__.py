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
"""

from .aggregation import delta_norm
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

__all__ = [
    "ALGORITHMS",
    "OBJECTIVES",
    "SCHEDULES",
    "VARIANTS",
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
    "ZeroShot",
    "delta_norm",
    "filter_updates",
    "lm_layer_index",
    "make_objective",
    "make_strategy",
    "objective_params",
    "round_lr",
    "sample_clients",
    "strategy_params",
    "validate_update",
]
