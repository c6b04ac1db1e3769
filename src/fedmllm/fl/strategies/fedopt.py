"""The adaptive server optimisers' shared machinery (FedAdagrad, FedAdam, FedYogi)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from ..checks import in_unit, positive
from ..types import StateDict
from .base import DeltaStrategy, StatefulMixin, check_variant


class FedOpt(StatefulMixin, DeltaStrategy):
    """Adaptive server optimisers (Reddi et al., "Adaptive Federated Optimization", ICLR 2021),
    shared machinery; subclasses give the second-moment rule ``v <- rule(v, q^2)``.

    ``variant="textbook"`` (exactly Flower 1.42 ``FedAdagrad``/``FedAdam``/``FedYogi``)::

        m <- beta1 * m + (1 - beta1) * D_w           (m starts at 0)
        v <- rule(v, D_w^2)                          (v starts at 0)
        x <- x + eta_t * m / (sqrt(v) + tau)

    ``variant="fedmllm"`` (FedMLLM research code)::

        m <- beta1 * m + (1 - beta1) * D_u           (m = D_u the first time; Adagrad: m = D_u)
        v <- rule(v, m^2)                            (v starts at tau^2)
        x <- x + eta * m / (sqrt(v) + tau)           (no bias correction)
    """

    _DEFAULTS: ClassVar[dict[str, dict[str, float]]] = {}
    _slots: dict[str, StateDict]

    def __init__(
        self,
        *,
        eta: float | None = None,
        tau: float | None = None,
        beta1: float | None = None,
        beta2: float | None = None,
        variant: str = "textbook",
        clip_norm: float | None = None,
    ) -> None:
        super().__init__(clip_norm=clip_norm)
        self.variant = check_variant(variant)
        defaults = self._DEFAULTS[self.variant]
        self.eta = positive("eta", defaults["eta"] if eta is None else eta)
        self.tau = positive("tau", defaults["tau"] if tau is None else tau)
        self.beta1 = in_unit("beta1", defaults.get("beta1", 0.0) if beta1 is None else beta1)
        self.beta2 = in_unit("beta2", defaults.get("beta2", 0.0) if beta2 is None else beta2)
        self.weighted = self.variant == "textbook"
        self._slots = {"m": {}, "v": {}}
        self._scratch: StateDict = {}  # not state: reused buffers for sqrt(v) + tau

    def _second_moment(self, vs: list[Tensor], qs: list[Tensor]) -> None:
        """Update the second moments ``vs`` in place from ``q^2`` (``q`` = ``D`` or ``m``)."""
        raise NotImplementedError

    def _server_lr(self, round: int) -> float:
        return self.eta

    def _first_moments(self, keys: list[str], deltas: list[Tensor]) -> list[Tensor]:
        """``m`` for every key (stored in the ``m`` slot); may reuse ``deltas`` as storage."""
        slot = self._slots["m"]
        seen = [i for i, k in enumerate(keys) if k in slot]
        fresh = [i for i, k in enumerate(keys) if k not in slot]
        if seen:  # m <- beta1 m + (1 - beta1) D  ==  lerp(m, D, 1 - beta1)
            ms = [slot[keys[i]].to(deltas[i]) for i in seen]
            torch._foreach_lerp_(ms, [deltas[i] for i in seen], 1.0 - self.beta1)
            slot.update((keys[i], m) for i, m in zip(seen, ms, strict=True))
        if fresh:
            ds = [deltas[i] for i in fresh]
            if self.variant == "textbook":  # m starts at 0: m = (1 - beta1) D
                ds = torch._foreach_mul(ds, 1.0 - self.beta1)
            slot.update((keys[i], d) for i, d in zip(fresh, ds, strict=True))
        return [slot[k] for k in keys]

    def _step(
        self, keys: list[str], xs: list[Tensor], deltas: list[Tensor], round: int
    ) -> list[Tensor]:
        ms = self._first_moments(keys, deltas)
        v_slot = self._slots["v"]
        v_init = self.tau**2 if self.variant == "fedmllm" else 0.0
        vs = [
            v_slot[k].to(m) if k in v_slot else torch.full_like(m, v_init)
            for k, m in zip(keys, ms, strict=True)
        ]
        self._second_moment(vs, deltas if self.variant == "textbook" else ms)
        v_slot.update(zip(keys, vs, strict=True))
        # sqrt(v) + tau in reused scratch buffers: fresh allocations page-fault on every round
        denom = []
        for k, v in zip(keys, vs, strict=True):
            buf = self._scratch.get(k)
            if buf is None or buf.shape != v.shape or buf.dtype != v.dtype:
                buf = self._scratch[k] = torch.empty_like(v)
            denom.append(torch.sqrt(v, out=buf))
        torch._foreach_add_(denom, self.tau)
        return torch._foreach_addcdiv(xs, ms, denom, value=self._server_lr(round))

    def config(self) -> dict[str, Any]:
        return {
            "eta": self.eta,
            "tau": self.tau,
            "beta1": self.beta1,
            "beta2": self.beta2,
            "variant": self.variant,
            **super().config(),
        }
