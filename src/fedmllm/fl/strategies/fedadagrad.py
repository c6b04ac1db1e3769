"""FedAdagrad: the adaptive server optimiser with Adagrad's second moment."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from .fedopt import FedOpt


class FedAdagrad(FedOpt):
    """FedAdagrad (Reddi et al., "Adaptive Federated Optimization", ICLR 2021)::

        v <- v + q^2     (q = D_w textbook, q = m fedmllm)
        x <- x + eta * m / (sqrt(v) + tau)

    Textbook (Flower ``FedAdagrad``): ``m = beta1 m + (1-beta1) D_w`` with Flower's fixed
    ``beta1 = 0`` by default, so ``m = D_w``; ``v`` starts at 0. fedmllm (FedMLLM research
    code): ``m = D_u``, ``v`` starts at ``tau^2``. No bias correction in either.

    Config keys: ``eta`` (textbook 0.1, fedmllm 1e-3), ``tau`` (1e-3), ``beta1`` (textbook only,
    default 0.0), ``variant``, ``clip_norm``.
    """

    name = "fedadagrad"
    _DEFAULTS: ClassVar[dict[str, dict[str, float]]] = {
        "textbook": {"eta": 1e-1, "tau": 1e-3, "beta1": 0.0},
        "fedmllm": {"eta": 1e-3, "tau": 1e-3},
    }

    def __init__(
        self,
        *,
        eta: float | None = None,
        tau: float | None = None,
        beta1: float | None = None,
        variant: str = "textbook",
        clip_norm: float | None = None,
    ) -> None:
        if variant == "fedmllm" and beta1 is not None:
            raise ValueError("beta1 is not used by fedadagrad variant 'fedmllm' (there m = D_u)")
        super().__init__(
            eta=eta, tau=tau, beta1=beta1, beta2=None, variant=variant, clip_norm=clip_norm
        )

    def _first_moment(self, m: Tensor, d: Tensor) -> None:
        if self.variant == "fedmllm":  # m = D_u every round
            m.copy_(d)
        else:
            super()._first_moment(m, d)

    def _second_moment(self, v: Tensor, q: Tensor, scratch: list[Tensor]) -> None:
        v.addcmul_(q, q)

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        del cfg["beta2"]
        if self.variant == "fedmllm":
            del cfg["beta1"]
        return cfg
