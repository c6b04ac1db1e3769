"""FedAdam: the adaptive server optimiser with Adam's second moment and bias correction."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from ..aggregation import Layout
from ..types import StateDict
from .fedopt import FedOpt


class FedAdam(FedOpt):
    """FedAdam (Reddi et al., "Adaptive Federated Optimization", ICLR 2021)::

        m <- beta1 m + (1 - beta1) q_m,   v <- beta2 v + (1 - beta2) q^2
        x <- x + eta_t * m / (sqrt(v) + tau)

    with ``q_m = q = D_w`` (textbook) or ``q_m = D_u``, ``q = m`` (fedmllm; see
    :class:`~fedmllm.fl.strategies.fedopt.FedOpt`). Textbook uses Flower 1.42's bias-corrected
    step size, with Flower's exponent ``t + 1``::

        eta_t = eta * sqrt(1 - beta2^(t+1)) / (1 - beta1^(t+1))

    where ``t`` counts the updates of *that key* (the slot ``step``, kept in the state): a key
    first returned in round 5 gets the correction of a first update, as its ``m`` and ``v``
    start there. With every key returned in every round ``t`` is the server round, exactly
    Flower's (round 1 already uses ``t + 1 = 2``). fedmllm uses ``eta`` unchanged (no bias
    correction; the step count is kept all the same).

    Config keys: ``eta`` (textbook 0.1, fedmllm 1e-3), ``tau`` (1e-3), ``beta1`` (0.9),
    ``beta2`` (0.99), ``variant``, ``clip_norm``.
    """

    name = "fedadam"
    _DEFAULTS: ClassVar[dict[str, dict[str, float]]] = {
        "textbook": {"eta": 1e-1, "tau": 1e-3, "beta1": 0.9, "beta2": 0.99},
        "fedmllm": {"eta": 1e-3, "tau": 1e-3, "beta1": 0.9, "beta2": 0.99},
    }

    def _reset_state(self) -> None:
        super()._reset_state()
        self._steps: dict[str, int] = {}

    def _second_moment(self, v: Tensor, q: Tensor, scratch: list[Tensor]) -> None:
        v.mul_(self.beta2).addcmul_(q, q, value=1.0 - self.beta2)

    def _eta_t(self, t: int) -> float:
        if self.variant == "fedmllm":
            return self.eta
        return self.eta * math.sqrt(1.0 - self.beta2 ** (t + 1.0)) / (1.0 - self.beta1 ** (t + 1.0))

    def _lr_runs(self, layout: Layout) -> list[tuple[int, int, float]]:
        runs: list[tuple[int, int, float]] = []
        for key, start, n in zip(layout.keys, layout.offsets, layout.numels, strict=True):
            t = self._steps.get(key, 0) + 1
            self._steps[key] = t
            lr = self._eta_t(t)
            if runs and runs[-1][2] == lr and runs[-1][1] == start:
                runs[-1] = (runs[-1][0], start + n, lr)
            else:
                runs.append((start, start + n, lr))
        return runs

    def state_dict(self) -> StateDict:
        """``m/<key>``, ``v/<key>`` and ``step/<key>`` (0-dim int64: the key's update count)."""
        state = super().state_dict()
        state.update({f"step/{k}": torch.tensor(t, dtype=torch.int64)
                      for k, t in self._steps.items()})
        return state

    def load_state_dict(self, state: StateDict) -> None:
        steps = {k[len("step/"):]: int(t) for k, t in state.items() if k.startswith("step/")}
        super().load_state_dict({k: t for k, t in state.items() if not k.startswith("step/")})
        missing = [k for k in self._slots["m"] if k not in steps]
        if missing:
            raise ValueError(f"strategy 'fedadam': state has m/{missing[0]} "
                             f"but no step/{missing[0]}")
        self._steps = steps
