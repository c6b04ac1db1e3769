"""SCAFFOLD, client side: gradient correction and the control-variate update."""

from __future__ import annotations

import torch

from ..aggregation import compute_dtype
from ..types import ClientObjective, Extras, StateDict


class ScaffoldObjective(ClientObjective):
    """``scaffold`` client side (Karimireddy et al., 2020, option II control update).

    Keeps a control variate ``c_i`` per ``client_id`` (zeros at first). With the server control
    ``c = server_extras["control"]`` (absent keys = 0) and the round's start point ``x``:

    - every local step uses ``grad <- grad + c - c_i`` (:meth:`correct_gradients`), i.e.
      ``y <- y - lr * (g(y) - c_i + c)``;
    - after ``K = num_steps`` steps with step size ``lr``::

          c_i+ = c_i - c + (x - y_i) / (K * lr)
          extras = {"control_delta": c_i+ - c_i}

    With a varying step size pass the mean, so that ``K * lr`` equals the summed step sizes.
    No config keys.
    """

    name = "scaffold"

    def __init__(self) -> None:
        self._controls: dict[int, StateDict] = {}
        self._x: StateDict = {}
        self._c: StateDict = {}
        self._correction: StateDict = {}
        self._client: int | None = None

    def begin(self, global_state: StateDict, server_extras: Extras, client_id: int) -> None:
        if isinstance(client_id, bool) or not isinstance(client_id, int) or client_id < 0:
            raise ValueError(f"scaffold needs a client_id >= 0, got {client_id!r}")
        server_c = server_extras.get("control", {})
        own = self._controls.get(client_id, {})
        self._client = client_id
        self._x, self._c, self._correction = {}, {}, {}
        for key, x in global_state.items():
            if not x.is_floating_point():
                continue
            cd = compute_dtype(x.dtype)
            self._x[key] = x.detach().to(cd, copy=True)
            c = server_c.get(key)
            c = torch.zeros_like(self._x[key]) if c is None else c.to(self._x[key])
            self._c[key] = c
            ci = own.get(key)
            corr = c if ci is None else c - ci.to(c)
            if bool(corr.any()):
                self._correction[key] = corr

    def correct_gradients(self, params: StateDict) -> None:
        if self._client is None:
            raise RuntimeError("objective 'scaffold': correct_gradients() called before begin()")
        with torch.no_grad():
            for key, corr in self._correction.items():
                p = params.get(key)
                if p is not None and p.grad is not None:
                    p.grad.add_(corr.to(device=p.grad.device, dtype=p.grad.dtype))

    def end(self, params: StateDict, num_steps: int, lr: float) -> Extras:
        if self._client is None:
            raise RuntimeError("objective 'scaffold': end() called before begin()")
        if num_steps < 1 or not lr > 0:
            raise ValueError(f"scaffold needs num_steps >= 1 and lr > 0, got {num_steps}, {lr}")
        own = self._controls.setdefault(self._client, {})
        delta: StateDict = {}
        with torch.no_grad():
            for key, p in params.items():
                x = self._x.get(key)
                if x is None:
                    continue
                # dc = c_i+ - c_i = (x - y) / (K lr) - c
                dc = (x - p.detach().to(x)).div_(num_steps * lr).sub_(self._c[key])
                old = own.get(key)
                own[key] = dc.clone() if old is None else old.to(dc) + dc
                delta[key] = dc
        self._x, self._c, self._correction, self._client = {}, {}, {}, None
        return {"control_delta": delta}

    def client_control(self, client_id: int) -> StateDict:
        """``c_i`` of one client (empty before its first round)."""
        return dict(self._controls.get(client_id, {}))

    def state_dict(self) -> StateDict:
        return {f"{cid}/{k}": t for cid, d in self._controls.items() for k, t in d.items()}

    def load_state_dict(self, state: StateDict) -> None:
        controls: dict[int, StateDict] = {}
        for full, t in state.items():
            cid, sep, key = full.partition("/")
            if not sep or not cid.isdigit():
                raise ValueError(f"objective 'scaffold': unexpected state key {full!r}")
            controls.setdefault(int(cid), {})[key] = t.detach().clone()
        self._controls = controls
