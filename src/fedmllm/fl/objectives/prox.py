"""Proximal client objectives: FedProx's term and FedMLLM's layer-restricted variant."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..aggregation import in_compute_dtype
from ..layers import lm_layer_index
from ..types import ClientObjective, Extras, ObjectiveResult, StateDict


def _sq_dist(p: Tensor, ref: Tensor) -> Tensor:
    """``||p - ref||^2`` as a float32/float64 scalar (half precision is upcast)."""
    return in_compute_dtype(p - ref.to(device=p.device, dtype=p.dtype)).square().sum()


class Prox(ClientObjective):
    """``prox``, FedProx's client objective (Li et al., "Federated Optimization in
    Heterogeneous Networks", MLSys 2020)::

        L + (mu/2) * sum_k ||theta_k - x_k||^2

    The sum runs over every trainable adapter tensor ``k`` (``x`` = the global state the client
    started the round from); its gradient is ``mu * (theta_k - x_k)``.
    Config keys: ``prox_mu`` (mu, default 0.01).
    """

    name = "prox"

    def __init__(self, *, prox_mu: float = 0.01) -> None:
        prox_mu = float(prox_mu)
        if not prox_mu >= 0:
            raise ValueError(f"prox_mu must be >= 0, got {prox_mu!r}")
        self.prox_mu = prox_mu
        self._ref: StateDict = {}
        self._known: frozenset[str] = frozenset()
        self._started = False

    def _coefficient(self) -> float:
        return self.prox_mu / 2

    def _selected(self, key: str) -> bool:
        return True

    def begin(
        self, global_state: StateDict, server_extras: Extras, client_state: StateDict
    ) -> None:
        # Detached copies: the reference must not follow the live weights during training.
        self._ref = {
            k: t.detach().clone()
            for k, t in global_state.items()
            if t.is_floating_point() and self._selected(k)
        }
        self._known = frozenset(global_state)
        self._started = True

    @property
    def selected_keys(self) -> tuple[str, ...]:
        """The keys regularised in the current round (after :meth:`begin`)."""
        return tuple(self._ref)

    def penalty(self, params: StateDict) -> Tensor | None:
        if not self._started:
            raise RuntimeError(f"objective {self.name!r}: penalty() called before begin()")
        coef = self._coefficient()
        if coef == 0 or not self._ref:
            return None
        total: Tensor | None = None
        for key, p in params.items():
            ref = self._ref.get(key)
            if ref is None:
                if key not in self._known:
                    raise ValueError(
                        f"objective {self.name!r}: parameter {key!r} is not in the global state"
                    )
                continue  # not regularised
            sq = _sq_dist(p, ref)
            total = sq if total is None else total + sq
        return None if total is None else total * coef

    def end(self, params: StateDict, lr_sum: float) -> ObjectiveResult:
        self._ref = {}
        self._started = False
        return ObjectiveResult()

    def config(self) -> dict[str, Any]:
        return {"prox_mu": self.prox_mu}


class AdaptiveProx(Prox):
    """``adaptive_prox``: FedMLLM's layer-restricted proximal term (FedMLLM, arXiv 2411.14717,
    and its research code)::

        L + (mu * mu_w / 2) * sum_{k : s <= l(k) <= L-1-s} ||theta_k - x_k||^2

    ``l(k)`` is the language-model layer index parsed from the tensor name (see
    :func:`lm_layer_index`); tensors without one (vision tower, projector, embeddings) are not
    regularised. ``L = num_layers`` comes from the model config (the research code hard-coded 27
    and took the first integer in the name).
    Config keys: ``prox_mu`` (0.01), ``mu_w`` (0.1), ``s_layer`` (4), ``num_layers`` (required).
    """

    name = "adaptive_prox"

    def __init__(
        self,
        *,
        num_layers: int,
        prox_mu: float = 0.01,
        mu_w: float = 0.1,
        s_layer: int = 4,
    ) -> None:
        super().__init__(prox_mu=prox_mu)
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
        if isinstance(s_layer, bool) or not isinstance(s_layer, int) or s_layer < 0:
            raise ValueError(f"s_layer must be a non-negative integer, got {s_layer!r}")
        if s_layer > num_layers - 1 - s_layer:
            raise ValueError(
                f"s_layer={s_layer} leaves no layer in [s_layer, num_layers-1-s_layer] "
                f"for num_layers={num_layers}"
            )
        mu_w = float(mu_w)
        if not mu_w >= 0:
            raise ValueError(f"mu_w must be >= 0, got {mu_w!r}")
        self.num_layers, self.mu_w, self.s_layer = num_layers, mu_w, s_layer

    def _coefficient(self) -> float:
        return self.prox_mu * self.mu_w / 2

    def _selected(self, key: str) -> bool:
        layer = lm_layer_index(key)
        if layer is None:
            return False
        if layer >= self.num_layers:
            raise ValueError(
                f"objective 'adaptive_prox': {key!r} is in language-model layer {layer} but "
                f"num_layers={self.num_layers}"
            )
        return self.s_layer <= layer <= self.num_layers - 1 - self.s_layer

    def config(self) -> dict[str, Any]:
        return {
            "prox_mu": self.prox_mu,
            "mu_w": self.mu_w,
            "s_layer": self.s_layer,
            "num_layers": self.num_layers,
        }
