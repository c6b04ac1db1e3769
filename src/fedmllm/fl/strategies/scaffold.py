"""SCAFFOLD, server side: model step plus the server control variate ``c``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..aggregation import cast_like, compute_dtype, weighted_sums
from ..checks import positive, positive_int
from ..types import ClientUpdate, Extras, StateDict
from .base import DeltaStrategy, StatefulMixin


class Scaffold(StatefulMixin, DeltaStrategy):
    """SCAFFOLD server (Karimireddy et al., "SCAFFOLD: Stochastic Controlled Averaging for
    Federated Learning", ICML 2020, Algorithm 1).

    The server keeps the control variate ``c`` (zeros at start) and sends it to clients as
    ``server_extras() == {"control": c}``. Each client ``i`` in ``S`` returns its model ``y_i`` and
    ``extras["control_delta"] = c_i+ - c_i`` (see the ``scaffold`` client objective). Then::

        x <- x + eta_g * (1/|S|) sum_{i in S} s_i (y_i - x)
        c <- c + (|S| / N) * (1/|S|) sum_{i in S} (c_i+ - c_i)  =  c + (1/N) sum_i dc_i

    with ``N = num_clients`` (all clients, sampled or not). Per key, ``S`` is the set of clients
    that returned that key. Unweighted, as in the paper.

    Config keys: ``num_clients`` (required), ``server_lr`` (eta_g, default 1.0), ``clip_norm``
    (clips model deltas only).
    """

    name = "scaffold"
    weighted = False
    default_objective = "scaffold"
    allowed_objectives = ("scaffold",)

    def __init__(
        self, *, num_clients: int, server_lr: float = 1.0, clip_norm: float | None = None
    ) -> None:
        super().__init__(clip_norm=clip_norm)
        self.num_clients = positive_int("num_clients", num_clients)
        self.server_lr = positive("server_lr", server_lr)
        self._slots = {"control": {}}

    def _check_extras(self, global_state: StateDict, updates: list[ClientUpdate]) -> None:
        if len(updates) > self.num_clients:
            raise ValueError(
                f"scaffold: {len(updates)} updates but num_clients={self.num_clients}"
            )
        for u in updates:
            dc = u.extras.get("control_delta")
            if dc is None:
                raise ValueError(
                    f"scaffold: client {u.client_id} sent no extras['control_delta']; "
                    "train clients with make_objective('scaffold')"
                )
            for key, t in dc.items():
                g = global_state.get(key)
                if g is None or t.shape != g.shape:
                    raise ValueError(
                        f"scaffold: client {u.client_id} control_delta {key!r} does not match "
                        "the global state (unknown key or wrong shape)"
                    )

    def _step(
        self, keys: list[str], xs: list[Tensor], deltas: list[Tensor], round: int
    ) -> list[Tensor]:
        return torch._foreach_add(xs, deltas, alpha=self.server_lr)

    def _finish_round(self, global_state: StateDict, updates: list[ClientUpdate]) -> None:
        sources = [u.extras["control_delta"] for u in updates]
        keys = [
            k
            for k, x in global_state.items()
            if x.is_floating_point() and any(k in src for src in sources)
        ]
        if not keys:
            return
        sums = weighted_sums(keys, sources, [1.0 / self.num_clients] * len(sources), global_state)
        control = self._slots["control"]
        for k in keys:
            old = control.get(k)
            # a new tensor, never in place: ``c`` may still be held by clients of this round
            control[k] = sums[k] if old is None else cast_like(old, sums[k]) + sums[k]

    def server_extras(self, global_state: StateDict | None = None) -> Extras:
        """``{"control": c}``. Pass ``global_state`` to materialise zeros for unseen keys;
        without it, keys never updated are absent and clients treat them as zero."""
        control = self._slots["control"]
        if global_state is not None:
            for key, x in global_state.items():
                if x.is_floating_point() and key not in control:
                    control[key] = torch.zeros(
                        x.shape, dtype=compute_dtype(x.dtype), device=x.device
                    )
        return {"control": dict(control)}

    def config(self) -> dict[str, Any]:
        return {"num_clients": self.num_clients, "server_lr": self.server_lr, **super().config()}
