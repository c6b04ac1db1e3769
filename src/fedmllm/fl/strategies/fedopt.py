"""The adaptive server optimisers' shared machinery (FedAdagrad, FedAdam, FedYogi)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from ..aggregation import CHUNK, Layout
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

    The step runs over the flat buffers of a key group in chunks of
    :data:`~fedmllm.fl.aggregation.CHUNK` elements, so that ``m``, ``v``, ``x`` and the mean
    state ``x + D`` are each read and written once per round (``D`` is formed per chunk and its
    buffer becomes the new state).
    """

    reduce_plus_global = True
    _DEFAULTS: ClassVar[dict[str, dict[str, float]]] = {}
    _SCRATCH: ClassVar[int] = 0
    """Chunk-sized scratch buffers :meth:`_second_moment` needs."""
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
        self._reset_state()

    def _reset_state(self) -> None:
        """Empty optimizer state (``m`` and ``v`` slots)."""
        self._slots = {"m": {}, "v": {}}

    def _second_moment(self, v: Tensor, q: Tensor, scratch: list[Tensor]) -> None:
        """Update the second moments ``v`` in place from ``q^2`` (``q`` = ``D`` or ``m``)."""
        raise NotImplementedError

    def _first_moment(self, m: Tensor, d: Tensor) -> None:
        """``m <- beta1 m + (1 - beta1) D`` in place (``lerp(m, D, 1 - beta1)``)."""
        m.lerp_(d, 1.0 - self.beta1)

    def _lr_runs(self, layout: Layout) -> list[tuple[int, int, float]]:
        """``(start, end, eta_t)`` runs over the flat buffer of ``layout`` (default: one run
        with ``eta``); called once per round and key group, before the step."""
        return [(0, layout.total, self.eta)]

    def _step(self, layout: Layout, global_state: StateDict, summed: Tensor, round: int) -> Tensor:
        """``summed`` is ``x + D`` (:attr:`reduce_plus_global`); ``D = summed - x`` is formed
        chunk by chunk, then ``m``, ``v`` and the new state, which overwrites ``summed``."""
        textbook = self.variant == "textbook"
        x = layout.read(global_state)
        m, is_delta = self._momentum_flat("m", layout, x, summed, textbook)  # 0, or fedmllm D

        def init_v(i: int, view: Tensor) -> None:  # textbook: 0; fedmllm: tau^2
            view.fill_(0.0 if textbook else self.tau**2)

        v = self._slot_flat("v", layout, init_v)
        runs = self._lr_runs(layout)
        scratch = [summed.new_empty(min(CHUNK, layout.total)) for _ in range(self._SCRATCH)]
        for sl in layout.chunks():
            d, mm, vv = summed[sl], m[sl], v[sl]
            if not is_delta:
                d.sub_(x[sl])  # D = (x + D) - x, while x is in cache
            self._first_moment(mm, d)
            n = d.numel()
            self._second_moment(vv, d if textbook else mm, [s[:n] for s in scratch])
            torch.sqrt(vv, out=d).add_(self.tau)  # D is used up: reuse its memory
            if len(runs) == 1:
                torch.addcdiv(x[sl], mm, d, value=runs[0][2], out=d)
        if len(runs) > 1:
            for start, end, lr in runs:
                out = summed[start:end]
                torch.addcdiv(x[start:end], m[start:end], out, value=lr, out=out)
        return summed

    def config(self) -> dict[str, Any]:
        return {
            "eta": self.eta,
            "tau": self.tau,
            "beta1": self.beta1,
            "beta2": self.beta2,
            "variant": self.variant,
            **super().config(),
        }
