"""SCAFFOLD, server side: model step plus the server control variate ``c``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..aggregation import Layout, compute_dtype, contributor_groups, weighted_sum
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

    def _step(self, layout: Layout, global_state: StateDict, delta: Tensor, round: int) -> Tensor:
        return torch.add(layout.read(global_state), delta, alpha=self.server_lr, out=delta)

    def _finish_round(self, global_state: StateDict, updates: list[ClientUpdate]) -> None:
        """``c <- c + (1/N) sum_i dc_i`` per key over the clients that sent it."""
        sources = [u.extras["control_delta"] for u in updates]
        control = self._slots["control"]
        alpha = 1.0 / self.num_clients
        for keys, holders in contributor_groups(global_state, sources):
            layout = Layout(keys, global_state)
            flat = weighted_sum(layout, [sources[i] for i in holders], [alpha] * len(holders))
            old = [control.get(k) for k in layout.keys]
            if any(t is not None for t in old):
                keep = [(v, t) for v, t in zip(layout.views(flat), old, strict=True)
                        if t is not None]
                torch._foreach_add_([v for v, _ in keep], [t.to(v) for v, t in keep])
            # new tensors, never in place: clients of this round may still hold the old ``c``
            control.update(zip(layout.keys, layout.views(flat), strict=True))

    def server_extras(self, global_state: StateDict | None = None) -> Extras:
        """``{"control": c}`` (copies). With ``global_state``, every floating key is present,
        zeros (in the compute dtype) for keys ``c`` has never had; without it, only the keys
        ``c`` has (clients treat absent keys as zero). Changes nothing in the strategy."""
        control = self._slots["control"]
        out = {k: t.clone() for k, t in control.items()}
        if global_state is not None:
            for key, x in global_state.items():
                if x.is_floating_point() and key not in out:
                    out[key] = torch.zeros(x.shape, dtype=compute_dtype(x.dtype), device=x.device)
        return {"control": out}

    def config(self) -> dict[str, Any]:
        return {"num_clients": self.num_clients, "server_lr": self.server_lr, **super().config()}
