"""YOCO's client objective: sign penalty on ``lora_B`` plus a penalty on ``lora_A``."""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import Tensor

from ..oneshot.keys import lora_role
from ..types import ClientObjective, Extras, ObjectiveResult, StateDict
from .penalties import l1_penalty, orthogonal_penalty, sign_penalty
from .schedules import check_total, gamma_schedule, orthogonal_lambda

YOCO_VARIANTS: tuple[str, ...] = ("init", "init_b", "init_ba", "full")
"""The paper's ablation ladder: SVD init only; + sign penalty on B; + sparse A; + PCA merge of A."""

A_PENALTIES: tuple[str, ...] = ("l1", "orthogonal")
"""``l1`` = the paper's ``R_sparse``; ``orthogonal`` = the released code's A regulariser."""


class YocoObjective(ClientObjective):
    """``yoco`` client objective (YOCO, "You Only Communicate Once", NeurIPS 2025, Algorithm 1):
    ``L = L_task + R_sign + R_A``.

    - ``R_sign = sign_weight * sum_{B keys} sign_penalty(B, sign(B0), gamma(t))`` with
      ``B0`` = the ``lora_B`` tensors of the state passed to :meth:`begin` (the shared initial
      adapter) and ``gamma(t) =`` :func:`gamma_schedule` ``(t, total_steps, gamma_min,
      gamma_max)``.
    - ``R_A = sum_{A keys} lam * ||A||_1`` (``a_penalty="l1"``, the paper) or
      ``sum_{A keys} lam_o(t) ||A A^T - I||_F^2`` (``a_penalty="orthogonal"``, the released
      code; ``lam_o(t) =`` :func:`orthogonal_lambda` ``(t, total_steps, lam_o_start,
      lam_o_end)``).

    ``variant``: ``init`` -> no penalty (:meth:`penalty` returns ``None``); ``init_b`` ->
    ``R_sign``; ``init_ba`` and ``full`` -> ``R_sign + R_A`` (``full`` differs from ``init_ba``
    only on the server: ``A`` is merged by :func:`pca_weighted_merge`).

    Step counter ``t``: reset to 0 by :meth:`begin`; every :meth:`penalty` call uses the current
    ``t`` and then advances it by one call; ``t = calls // calls_per_step`` (set
    ``calls_per_step`` to the gradient-accumulation factor so that ``t`` counts optimizer steps
    as in the released code). :meth:`set_step` pins ``t`` explicitly (the next call uses it).
    ``total_steps`` (``T``, the client's optimizer steps over its local training) may differ per
    client: pass it here or through :meth:`set_total_steps` before the first penalty.

    Keys: tensors whose path contains a ``lora_A`` / ``lora_B`` segment; others get no penalty.
    Config keys: ``variant`` (``full``), ``a_penalty`` (``l1``), ``lam`` (1e-3), ``gamma_min``
    (1), ``gamma_max`` (50), ``total_steps`` (None), ``lam_o_start`` (0.1), ``lam_o_end``
    (0.01), ``sign_weight`` (1), ``eps`` (1e-6), ``calls_per_step`` (1).
    After each :meth:`penalty`, ``last_terms`` holds ``gamma``, ``lam_o`` (orthogonal only) and
    the detached ``r_sign`` / ``r_a`` tensors, for logging.
    """

    name = "yoco"

    def __init__(
        self,
        *,
        variant: str = "full",
        a_penalty: str = "l1",
        lam: float = 1e-3,
        gamma_min: float = 1.0,
        gamma_max: float = 50.0,
        total_steps: int | None = None,
        lam_o_start: float = 0.1,
        lam_o_end: float = 0.01,
        sign_weight: float = 1.0,
        eps: float = 1e-6,
        calls_per_step: int = 1,
    ) -> None:
        if variant not in YOCO_VARIANTS:
            raise ValueError(
                f"unknown YOCO variant {variant!r}; choices: {', '.join(YOCO_VARIANTS)}"
            )
        if a_penalty not in A_PENALTIES:
            raise ValueError(f"unknown a_penalty {a_penalty!r}; choices: {', '.join(A_PENALTIES)}")
        for label, value in (
            ("lam", lam),
            ("lam_o_start", lam_o_start),
            ("lam_o_end", lam_o_end),
            ("sign_weight", sign_weight),
        ):
            if not float(value) >= 0:
                raise ValueError(f"{label} must be >= 0, got {value!r}")
        if not 0 < float(gamma_min) <= float(gamma_max):
            raise ValueError(
                f"need 0 < gamma_min <= gamma_max, got gamma_min={gamma_min!r}, "
                f"gamma_max={gamma_max!r}"
            )
        if not float(eps) > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        if (
            isinstance(calls_per_step, bool)
            or not isinstance(calls_per_step, int)
            or calls_per_step < 1
        ):
            raise ValueError(f"calls_per_step must be an integer >= 1, got {calls_per_step!r}")
        self.variant, self.a_penalty = variant, a_penalty
        self.lam, self.gamma_min, self.gamma_max = float(lam), float(gamma_min), float(gamma_max)
        self.lam_o_start, self.lam_o_end = float(lam_o_start), float(lam_o_end)
        self.sign_weight, self.eps = float(sign_weight), float(eps)
        self.calls_per_step = calls_per_step
        self.total_steps = None if total_steps is None else check_total(total_steps)
        self._signs: StateDict = {}
        self._known: frozenset[str] = frozenset()
        self._calls = 0
        self._started = False
        self.last_terms: dict[str, Any] = {}

    @property
    def uses_sign(self) -> bool:
        return self.variant != "init"

    @property
    def uses_a_penalty(self) -> bool:
        return self.variant in ("init_ba", "full")

    @property
    def step(self) -> int:
        """The step ``t`` the next :meth:`penalty` call uses."""
        return self._calls // self.calls_per_step

    def set_step(self, step: int) -> None:
        """Pin ``t`` (e.g. to the trainer's optimizer step) for the next :meth:`penalty` call."""
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
            raise ValueError(f"step must be an integer >= 0, got {step!r}")
        self._calls = int(step) * self.calls_per_step

    def set_total_steps(self, total_steps: int) -> None:
        """Set ``T`` (this client's optimizer steps over its whole local training)."""
        self.total_steps = check_total(total_steps)

    def gamma(self, step: int | None = None) -> float:
        """``gamma(t)`` at ``step`` (default: the current ``t``)."""
        return gamma_schedule(
            self.step if step is None else step, self._total(), self.gamma_min, self.gamma_max
        )

    def _total(self) -> int:
        if self.total_steps is None:
            raise RuntimeError(
                "objective 'yoco': total_steps is not set; pass total_steps= or call "
                "set_total_steps() before training"
            )
        return self.total_steps

    def begin(
        self, global_state: StateDict, server_extras: Extras, client_state: StateDict
    ) -> None:
        self._signs = {
            k: torch.sign(t.detach())
            for k, t in global_state.items()
            if lora_role(k) == "B" and t.is_floating_point()
        }
        self._known = frozenset(global_state)
        self._calls = 0
        self._started = True
        self.last_terms = {}

    def penalty(self, params: StateDict) -> Tensor | None:
        if not self._started:
            raise RuntimeError("objective 'yoco': penalty() called before begin()")
        for key in params:
            if key not in self._known:
                raise ValueError(f"objective 'yoco': parameter {key!r} is not in the global state")
        if not (self.uses_sign or self.uses_a_penalty):
            self._calls += 1
            return None
        t, total = self.step, self._total()
        gamma = gamma_schedule(t, total, self.gamma_min, self.gamma_max)
        terms: dict[str, Any] = {"gamma": gamma}
        result: Tensor | None = None
        if self.uses_sign and self.sign_weight > 0:
            r_sign: Tensor | None = None
            for key, p in params.items():
                sign = self._signs.get(key)
                if sign is None:
                    continue
                term = sign_penalty(p, sign, gamma, self.eps)
                r_sign = term if r_sign is None else r_sign + term
            if r_sign is not None:
                r_sign = r_sign * self.sign_weight
                terms["r_sign"] = r_sign.detach()
                result = r_sign
        if self.uses_a_penalty:
            if self.a_penalty == "orthogonal":
                lam = orthogonal_lambda(t, total, self.lam_o_start, self.lam_o_end)
                terms["lam_o"] = lam
            else:
                lam = self.lam
            r_a: Tensor | None = None
            if lam > 0:
                for key, p in params.items():
                    if lora_role(key) != "A":
                        continue
                    if self.a_penalty == "orthogonal":
                        term = orthogonal_penalty(p, lam)
                    else:
                        term = l1_penalty(p, lam)
                    r_a = term if r_a is None else r_a + term
            if r_a is not None:
                terms["r_a"] = r_a.detach()
                result = r_a if result is None else result + r_a
        self._calls += 1
        self.last_terms = terms
        return result

    def end(self, params: StateDict, lr_sum: float) -> ObjectiveResult:
        self._signs, self._started = {}, False
        return ObjectiveResult()

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "variant": self.variant,
            "a_penalty": self.a_penalty,
            "lam": self.lam,
            "gamma_min": self.gamma_min,
            "gamma_max": self.gamma_max,
            "total_steps": self.total_steps,
            "sign_weight": self.sign_weight,
            "eps": self.eps,
            "calls_per_step": self.calls_per_step,
        }
        if self.a_penalty == "orthogonal":
            cfg.update(lam_o_start=self.lam_o_start, lam_o_end=self.lam_o_end)
        return cfg
