"""SCAFFOLD, client side: gradient correction and the control-variate update."""

from __future__ import annotations

import torch

from ..aggregation import compute_dtype
from ..types import ClientObjective, Extras, ObjectiveResult, StateDict


class ScaffoldObjective(ClientObjective):
    """``scaffold`` client side (Karimireddy et al., "SCAFFOLD: Stochastic Controlled Averaging
    for Federated Learning", ICML 2020, Algorithm 1 with the option II control update).

    The client's own control variate ``c_i`` comes in as ``client_state`` (absent keys = 0; the
    driver stores it per client), the server's ``c`` as ``server_extras["control"]`` (absent
    keys = 0), ``x`` = the global state the round starts from. Then:

    - every local step uses ``grad <- grad + c - c_i`` (:meth:`correct_gradients`, after
      clipping), i.e. ``y <- y - lr_k * (g(y) - c_i + c)``, for *every* trainable tensor: one
      the loss did not reach (``grad is None``) has a zero gradient and gets ``c - c_i``
      (tensors whose ``c - c_i`` is exactly zero are left alone);
    - after the local run, with ``lr_sum = sum_k lr_k`` (``K * lr`` for a constant rate)::

          c_i+ = c_i - c + (x - y_i) / lr_sum
          extras = {"control_delta": c_i+ - c_i},   client_state = c_i+

    ``c_i+`` is returned in full, in the compute dtype; nothing is kept here (the driver keeps
    ``c_i+`` only when the server accepts the update).

    Option II assumes plain SGD steps: then ``(x - y_i) / lr_sum`` is the step-size-weighted mean
    of the corrected gradients, and ``c_i+`` the mean of the local gradients. With AdamW the
    steps are Adam's normalised directions ``m_hat / (sqrt(v_hat) + eps)`` (plus weight decay),
    so ``c_i+`` estimates the client's mean *Adam step* (about unit scale per coordinate), not
    its mean gradient, and the correction ``c - c_i`` added to raw gradients is in those units:
    an approximation that keeps SCAFFOLD's drift correction in direction, not in scale.
    No config keys.
    """

    name = "scaffold"

    def __init__(self) -> None:
        self._x: StateDict = {}
        self._c: StateDict = {}
        self._ci: StateDict = {}
        self._correction: StateDict = {}
        self._started = False

    def begin(
        self, global_state: StateDict, server_extras: Extras, client_state: StateDict
    ) -> None:
        server_c = server_extras.get("control", {})
        for key, t in client_state.items():
            x = global_state.get(key)
            if x is None or tuple(t.shape) != tuple(x.shape):
                raise ValueError(
                    f"objective 'scaffold': client state {key!r} does not match the global "
                    "state (unknown key or wrong shape)"
                )
        self._x, self._c, self._ci, self._correction = {}, {}, {}, {}
        for key, x in global_state.items():
            if not x.is_floating_point():
                continue
            cd = compute_dtype(x.dtype)
            self._x[key] = x.detach().to(cd, copy=True)
            c = server_c.get(key)
            c = torch.zeros_like(self._x[key]) if c is None else c.detach().to(self._x[key])
            self._c[key] = c
            ci = client_state.get(key)
            if ci is not None:
                self._ci[key] = ci.detach().to(self._x[key])
            corr = c if ci is None else c - self._ci[key]
            if bool(corr.any()):
                self._correction[key] = corr
        self._started = True

    def correct_gradients(self, params: StateDict) -> None:
        if not self._started:
            raise RuntimeError("objective 'scaffold': correct_gradients() called before begin()")
        with torch.no_grad():
            for key, corr in self._correction.items():
                p = params.get(key)
                if p is None or not p.requires_grad:
                    continue
                if p.grad is None:  # not reached by the loss: a zero gradient, corrected
                    p.grad = corr.to(device=p.device, dtype=p.dtype, copy=True)
                else:
                    p.grad.add_(corr.to(device=p.grad.device, dtype=p.grad.dtype))

    def end(self, params: StateDict, lr_sum: float) -> ObjectiveResult:
        if not self._started:
            raise RuntimeError("objective 'scaffold': end() called before begin()")
        lr_sum = float(lr_sum)
        if not lr_sum > 0:
            raise ValueError(f"scaffold needs lr_sum > 0 (the summed step sizes), got {lr_sum}")
        delta: StateDict = {}
        new_ci: StateDict = dict(self._ci)  # keys this client did not train keep their c_i
        with torch.no_grad():
            for key, p in params.items():
                x = self._x.get(key)
                if x is None:
                    continue
                # dc = c_i+ - c_i = (x - y) / lr_sum - c
                dc = (x - p.detach().to(x)).div_(lr_sum).sub_(self._c[key])
                old = self._ci.get(key)
                new_ci[key] = dc.clone() if old is None else old + dc
                delta[key] = dc
        self._x, self._c, self._ci, self._correction = {}, {}, {}, {}
        self._started = False
        return ObjectiveResult(extras={"control_delta": delta}, client_state=new_ci)
