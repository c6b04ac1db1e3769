"""YOCO ("You Only Communicate Once", NeurIPS 2025): one-shot federated LoRA, as tensor math.

"The paper" below is the YOCO paper; "the released code" its public research code.

Every client starts from the same SVD factors of the frozen weight, trains once with a soft-sign
penalty pulling ``lora_B`` to the shared sign pattern and a sparsity (paper) or orthogonality
(released code) penalty on ``lora_A``, and uploads once; the server merges ``B`` with a plain
rule and ``A`` by principal-component-weighted aggregation.

- :mod:`.init`: :func:`svd_init` (+ :func:`svd_residual`), :func:`code_init`.
- :mod:`.schedules`: :func:`gamma_schedule` (soft-sign sharpness), :func:`orthogonal_lambda`.
- :mod:`.penalties`: :func:`sign_penalty`, :func:`l1_penalty`, :func:`orthogonal_penalty`.
- :mod:`.objective`: the client objective :class:`YocoObjective` (variants
  :data:`YOCO_VARIANTS`).
- :mod:`.pca`: :func:`pca_weighted_merge` (the server's merge of ``A``); the whole-upload merge
  with separate rules per key group is :func:`fedmllm.fl.oneshot.merge_lora_uploads`.
- :mod:`.diagnostics`: :func:`sign_conflict`, :func:`conflict_matrix`, :func:`conflict_report`;
  communication: :func:`upload_units`.

Conventions: peft's layout, ``lora_A``: r x in, ``lora_B``: out x r, ``W``: out x in; LoRA keys are
recognised by a ``lora_A`` / ``lora_B`` path segment (see
:func:`fedmllm.fl.oneshot.keys.lora_role`).
"""

from __future__ import annotations

from .diagnostics import (
    conflict_matrix,
    conflict_report,
    sign_conflict,
    spectral_gap,
    upload_units,
)
from .init import code_init, svd_init, svd_residual
from .objective import A_PENALTIES, YOCO_VARIANTS, YocoObjective
from .pca import PCA_WEIGHTINGS, pca_weighted_merge
from .penalties import l1_penalty, orthogonal_penalty, sign_penalty
from .schedules import gamma_schedule, orthogonal_lambda

__all__ = [
    "A_PENALTIES",
    "PCA_WEIGHTINGS",
    "YOCO_VARIANTS",
    "YocoObjective",
    "code_init",
    "conflict_matrix",
    "conflict_report",
    "gamma_schedule",
    "l1_penalty",
    "orthogonal_lambda",
    "orthogonal_penalty",
    "pca_weighted_merge",
    "sign_conflict",
    "sign_penalty",
    "spectral_gap",
    "svd_init",
    "svd_residual",
    "upload_units",
]
