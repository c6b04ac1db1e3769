"""Server aggregation strategies over ``dict[str, Tensor]`` adapter states.

Notation (one round, one parameter key). ``x`` is the global tensor, ``S`` the clients that
returned this key, ``n_i`` their example counts, ``d_i = y_i - x`` their deltas, ``s_i`` the
optional clip factor ``min(1, C / ||d_i||)`` (``clip_norm`` = C, norm over the client's whole
update). Two mean deltas appear below:

    D_w = sum_{i in S} n_i s_i d_i / sum_{i in S} n_i      (example-weighted)
    D_u = (1 / |S|) sum_{i in S} s_i d_i                   (unweighted)

Heterogeneous clients: every rule is applied key by key over the clients that returned the key,
with the weights renormalised among them. A key that no client returned keeps its global value
and its optimizer state is left untouched (no decay of momentum for keys nobody trained).

``variant="textbook"`` follows the papers exactly as Flower 1.42's built-in strategies
(``flwr.serverapp.strategy``) compute them; ``variant="fedmllm"`` reproduces the FedMLLM research
code (OpenFedLLM-style server optimisers; see DESIGN and the reference notes, section 4.5).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from .aggregation import (
    cast_like,
    check_updates,
    clip_scales,
    compute_dtype,
    in_compute_dtype,
    mean_deltas,
    median_delta,
    trimmed_mean_delta,
    weighted_sums,
)
from .types import ClientUpdate, Extras, StateDict, Strategy, build_checked, keyword_params

VARIANTS = ("textbook", "fedmllm")


# ----------------------------------------------------------------------------- parameter checks

def _check_round(round: int) -> None:
    if isinstance(round, bool) or not isinstance(round, numbers.Integral) or round < 1:
        raise ValueError(f"round must be an integer >= 1 (rounds count from 1), got {round!r}")


def _positive(name: str, value: Any) -> float:
    value = float(value)
    if not value > 0 or math.isinf(value):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def _optional_positive(name: str, value: Any) -> float | None:
    return None if value is None else _positive(name, value)


def _in_unit(name: str, value: Any) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must lie in [0, 1), got {value!r}")
    return value


def _variant(value: Any) -> str:
    if value not in VARIANTS:
        raise ValueError(f"unknown variant {value!r}; choices: {', '.join(VARIANTS)}")
    return value


def _split_state_key(full: str, slots: Sequence[str], owner: str) -> tuple[str, str]:
    slot, sep, key = full.partition("/")
    if not sep or slot not in slots:
        raise ValueError(
            f"{owner}: unexpected state key {full!r}; expected '<slot>/<name>' with slot in "
            f"{', '.join(slots)}"
        )
    return slot, key


# ----------------------------------------------------------------------------- base class

class _DeltaStrategy(Strategy):
    """``x_new = step(x, reduce(deltas))`` over the keys some client returned.

    Subclasses define ``_step`` (and ``_reduce`` for non-mean reductions). Both work on lists of
    keys at once so that the arithmetic runs as fused ``torch._foreach`` kernels.
    """

    weighted: bool = True
    """Weight deltas by ``num_examples`` (``D_w``) or not (``D_u``)."""

    def __init__(self, *, clip_norm: float | None = None) -> None:
        self.clip_norm = _optional_positive("clip_norm", clip_norm)

    def aggregate(
        self, global_state: StateDict, updates: list[ClientUpdate], round: int
    ) -> StateDict:
        _check_round(round)
        updates = list(updates)
        check_updates(global_state, updates)
        self._check_extras(global_state, updates)
        new = dict(global_state)
        keys = [
            k
            for k, x in global_state.items()
            if x.is_floating_point() and any(k in u.state for u in updates)
        ]
        if not keys:
            return new
        with torch.no_grad():
            scales = clip_scales(global_state, updates, self.clip_norm)
            deltas = self._reduce(global_state, updates, keys, scales)
            xs = [in_compute_dtype(global_state[k]) for k in keys]  # read-only (may alias input)
            stepped = self._step(keys, xs, [deltas[k] for k in keys], round)
            for k, t in zip(keys, stepped, strict=True):
                new[k] = t.to(global_state[k].dtype)
            self._finish_round(global_state, updates)
        return new

    def _check_extras(self, global_state: StateDict, updates: list[ClientUpdate]) -> None:
        """Hook: validate strategy-specific extras before anything changes."""

    def _reduce(
        self,
        global_state: StateDict,
        updates: list[ClientUpdate],
        keys: list[str],
        scales: list[float],
    ) -> dict[str, Tensor]:
        """Mean delta per key, ``D_w`` (``weighted``) or ``D_u``, in the compute dtype."""
        if self.weighted:
            weights = [float(u.num_examples) for u in updates]
        else:
            weights = [1.0] * len(updates)
        return mean_deltas(global_state, updates, keys, weights, scales)

    def _step(
        self, keys: list[str], xs: list[Tensor], deltas: list[Tensor], round: int
    ) -> list[Tensor]:
        """New values for ``keys`` (default ``x + delta``); must not modify ``xs`` in place."""
        return torch._foreach_add(xs, deltas)

    def _finish_round(self, global_state: StateDict, updates: list[ClientUpdate]) -> None:
        """Hook: update state that does not follow the model keys (SCAFFOLD's ``c``)."""

    def config(self) -> dict[str, Any]:
        return {"clip_norm": self.clip_norm}


class _StatefulMixin:
    """``state_dict``/``load_state_dict`` for per-key optimizer slots ``self._slots[slot][key]``."""

    _slots: dict[str, StateDict]
    name: str

    def state_dict(self) -> StateDict:
        return {f"{slot}/{k}": t for slot, d in self._slots.items() for k, t in d.items()}

    def load_state_dict(self, state: StateDict) -> None:
        slots: dict[str, StateDict] = {slot: {} for slot in self._slots}
        for full, t in state.items():
            slot, key = _split_state_key(full, tuple(self._slots), f"strategy {self.name!r}")
            slots[slot][key] = t.detach().clone()
        self._slots = slots


# ----------------------------------------------------------------------------- strategies

class FedAvg(_DeltaStrategy):
    """FedAvg (McMahan et al., 2017): ``x <- x + D_w`` = example-weighted mean of client states.

    Config keys: ``clip_norm``.
    """

    name = "fedavg"

    def _reduce(
        self,
        global_state: StateDict,
        updates: list[ClientUpdate],
        keys: list[str],
        scales: list[float],
    ) -> dict[str, Tensor]:
        """``x + D_w`` directly: without clipping, ``sum_i n_i y_i / sum_i n_i`` (one pass)."""
        weights = [float(u.num_examples) for u in updates]
        return mean_deltas(global_state, updates, keys, weights, scales, plus_global=True)

    def _step(
        self, keys: list[str], xs: list[Tensor], deltas: list[Tensor], round: int
    ) -> list[Tensor]:
        return deltas  # already x + D_w (see _reduce)


class FedProx(FedAvg):
    """FedProx (Li et al., 2020) server side: identical to :class:`FedAvg` (``x <- x + D_w``).

    The proximal term ``(mu/2) ||theta - x||^2`` is a client objective: combine with
    ``make_objective("prox", prox_mu=...)`` or ``"adaptive_prox"``. Config keys: ``clip_norm``.
    """

    name = "fedprox"


class FedAvgM(_StatefulMixin, _DeltaStrategy):
    """FedAvg with server momentum.

    ``variant="textbook"`` (Hsu et al., 2019; Flower ``FedAvgM``), heavy ball on the
    pseudo-gradient::

        v <- beta * v + D_w          (v = D_w in the first round a key is seen)
        x <- x + eta * v

    ``variant="fedmllm"`` (research code, an exponential moving average)::

        m <- beta * m + (1 - beta) * D_w    (m = D_w in the first round a key is seen)
        x <- x + eta * m                    (the research code has eta = 1)

    Config keys: ``server_lr`` (eta, default 1.0), ``momentum`` (beta, default 0.9),
    ``variant``, ``clip_norm``.
    """

    name = "fedavgm"

    def __init__(
        self,
        *,
        server_lr: float = 1.0,
        momentum: float = 0.9,
        variant: str = "textbook",
        clip_norm: float | None = None,
    ) -> None:
        super().__init__(clip_norm=clip_norm)
        self.server_lr = _positive("server_lr", server_lr)
        self.momentum = _in_unit("momentum", momentum)
        self.variant = _variant(variant)
        self._slots = {"momentum": {}}

    def _step(
        self, keys: list[str], xs: list[Tensor], deltas: list[Tensor], round: int
    ) -> list[Tensor]:
        slot = self._slots["momentum"]
        seen = [i for i, k in enumerate(keys) if k in slot]
        if seen:
            bufs = [slot[keys[i]].to(deltas[i]) for i in seen]
            ds = [deltas[i] for i in seen]
            if self.variant == "textbook":
                torch._foreach_mul_(bufs, self.momentum)
                torch._foreach_add_(bufs, ds)
            else:  # beta m + (1 - beta) D
                torch._foreach_lerp_(bufs, ds, 1.0 - self.momentum)
            for i, b in zip(seen, bufs, strict=True):
                slot[keys[i]] = b
        for k, d in zip(keys, deltas, strict=True):
            slot.setdefault(k, d)  # first round a key is seen: v = m = D_w
        return torch._foreach_add(xs, [slot[k] for k in keys], alpha=self.server_lr)

    def config(self) -> dict[str, Any]:
        return {
            "server_lr": self.server_lr,
            "momentum": self.momentum,
            "variant": self.variant,
            **super().config(),
        }


class _FedOpt(_StatefulMixin, _DeltaStrategy):
    """Adaptive server optimisers (Reddi et al., 2021), shared machinery.

    ``variant="textbook"`` (exactly Flower 1.42 ``FedAdagrad``/``FedAdam``/``FedYogi``)::

        m <- beta1 * m + (1 - beta1) * D_w           (m starts at 0)
        v <- rule(v, D_w^2)                          (v starts at 0)
        x <- x + eta_t * m / (sqrt(v) + tau)

    ``variant="fedmllm"`` (research code)::

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
        self.variant = _variant(variant)
        defaults = self._DEFAULTS[self.variant]
        self.eta = _positive("eta", defaults["eta"] if eta is None else eta)
        self.tau = _positive("tau", defaults["tau"] if tau is None else tau)
        self.beta1 = _in_unit("beta1", defaults.get("beta1", 0.0) if beta1 is None else beta1)
        self.beta2 = _in_unit("beta2", defaults.get("beta2", 0.0) if beta2 is None else beta2)
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


class FedAdagrad(_FedOpt):
    """FedAdagrad: ``v <- v + q`` (``q = D_w^2`` textbook, ``q = m^2`` fedmllm).

    Textbook (Flower ``FedAdagrad``): ``m = beta1 m + (1-beta1) D_w`` with Flower's fixed
    ``beta1 = 0`` by default, so ``m = D_w``; ``x <- x + eta m / (sqrt(v) + tau)``.
    fedmllm: ``m = D_u``, ``v`` starts at ``tau^2``.

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

    def _first_moments(self, keys: list[str], deltas: list[Tensor]) -> list[Tensor]:
        if self.variant == "fedmllm":  # m = D_u every round
            self._slots["m"].update(zip(keys, deltas, strict=True))
            return deltas
        return super()._first_moments(keys, deltas)

    def _second_moment(self, vs: list[Tensor], qs: list[Tensor]) -> None:
        torch._foreach_addcmul_(vs, qs, qs)

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        del cfg["beta2"]
        if self.variant == "fedmllm":
            del cfg["beta1"]
        return cfg


class FedAdam(_FedOpt):
    """FedAdam: ``v <- beta2 v + (1 - beta2) q`` (``q = D_w^2`` textbook, ``m^2`` fedmllm).

    Textbook uses Flower 1.42's bias-corrected step size, with Flower's exponent ``t + 1``
    (``t`` = server round, so round 1 already uses ``t + 1 = 2``)::

        eta_t = eta * sqrt(1 - beta2^(t+1)) / (1 - beta1^(t+1))

    fedmllm uses ``eta`` unchanged (no bias correction).

    Config keys: ``eta`` (textbook 0.1, fedmllm 1e-3), ``tau`` (1e-3), ``beta1`` (0.9),
    ``beta2`` (0.99), ``variant``, ``clip_norm``.
    """

    name = "fedadam"
    _DEFAULTS: ClassVar[dict[str, dict[str, float]]] = {
        "textbook": {"eta": 1e-1, "tau": 1e-3, "beta1": 0.9, "beta2": 0.99},
        "fedmllm": {"eta": 1e-3, "tau": 1e-3, "beta1": 0.9, "beta2": 0.99},
    }

    def _second_moment(self, vs: list[Tensor], qs: list[Tensor]) -> None:
        torch._foreach_mul_(vs, self.beta2)
        torch._foreach_addcmul_(vs, qs, qs, value=1.0 - self.beta2)

    def _server_lr(self, round: int) -> float:
        if self.variant == "fedmllm":
            return self.eta
        t = round + 1.0
        return self.eta * math.sqrt(1.0 - self.beta2**t) / (1.0 - self.beta1**t)


class FedYogi(_FedOpt):
    """FedYogi: ``v <- v - (1 - beta2) q sign(v - q)`` (``q = D_w^2`` textbook, ``m^2`` fedmllm).

    No bias correction in either variant (as in Flower and the research code).

    Config keys: ``eta`` (textbook 1e-2, fedmllm 1e-3), ``tau`` (1e-3), ``beta1`` (0.9),
    ``beta2`` (0.99), ``variant``, ``clip_norm``.
    """

    name = "fedyogi"
    _DEFAULTS: ClassVar[dict[str, dict[str, float]]] = {
        "textbook": {"eta": 1e-2, "tau": 1e-3, "beta1": 0.9, "beta2": 0.99},
        "fedmllm": {"eta": 1e-3, "tau": 1e-3, "beta1": 0.9, "beta2": 0.99},
    }

    def _second_moment(self, vs: list[Tensor], qs: list[Tensor]) -> None:
        sqs = torch._foreach_mul(qs, qs)
        signs = torch._foreach_sub(vs, sqs)
        torch._foreach_sign_(signs)
        torch._foreach_addcmul_(vs, sqs, signs, value=-(1.0 - self.beta2))


class _CoordinateWise(_DeltaStrategy):
    """Robust rules applied per key to the (clipped) deltas of the clients that sent the key;
    unweighted. Subclasses give :meth:`_reduce_key`."""

    weighted = False

    def _reduce_key(self, global_t: Tensor, tensors: list[Tensor], scales: list[float]) -> Tensor:
        raise NotImplementedError

    def _reduce(
        self,
        global_state: StateDict,
        updates: list[ClientUpdate],
        keys: list[str],
        scales: list[float],
    ) -> dict[str, Tensor]:
        out = {}
        for k in keys:
            sent = [(u.state[k], s) for u, s in zip(updates, scales, strict=True) if k in u.state]
            out[k] = self._reduce_key(global_state[k], [t for t, _ in sent], [s for _, s in sent])
        return out


class Median(_CoordinateWise):
    """Coordinate-wise median (Yin et al., 2018): ``x <- x + median_i(s_i d_i)``.

    Unweighted; for an even number of clients the two middle values are averaged.
    Config keys: ``clip_norm``.
    """

    name = "median"

    def _reduce_key(self, global_t: Tensor, tensors: list[Tensor], scales: list[float]) -> Tensor:
        return median_delta(global_t, tensors, scales)


class TrimmedMean(_CoordinateWise):
    """Coordinate-wise trimmed mean (Yin et al., 2018; Flower ``FedTrimmedAvg``).

    Per coordinate, drop the ``k = floor(beta * |S|)`` smallest and ``k`` largest (clipped)
    deltas and average the rest: ``x <- x + mean(sorted(s_i d_i)[k : |S| - k])``. Unweighted.
    Config keys: ``beta`` (fraction cut from each end, in [0, 0.5), default 0.2), ``clip_norm``.
    """

    name = "trimmed_mean"

    def __init__(self, *, beta: float = 0.2, clip_norm: float | None = None) -> None:
        super().__init__(clip_norm=clip_norm)
        beta = float(beta)
        if not 0.0 <= beta < 0.5:
            raise ValueError(f"beta must lie in [0, 0.5), got {beta!r}")
        self.beta = beta

    def _reduce_key(self, global_t: Tensor, tensors: list[Tensor], scales: list[float]) -> Tensor:
        return trimmed_mean_delta(global_t, tensors, scales, self.beta)

    def config(self) -> dict[str, Any]:
        return {"beta": self.beta, **super().config()}


class Scaffold(_StatefulMixin, _DeltaStrategy):
    """SCAFFOLD server (Karimireddy et al., 2020, Algorithm 1).

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

    def __init__(
        self, *, num_clients: int, server_lr: float = 1.0, clip_norm: float | None = None
    ) -> None:
        super().__init__(clip_norm=clip_norm)
        if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
            raise ValueError(f"num_clients must be a positive integer, got {num_clients!r}")
        self.num_clients = num_clients
        self.server_lr = _positive("server_lr", server_lr)
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


class Local(Strategy):
    """Local-only training (no federation): ``aggregate`` returns the global state unchanged.

    ``personalized = True``: the driver keeps each client's own adapter across rounds and
    evaluates it per client; the "global" state stays at its initial value. No config keys.
    """

    name = "local"
    aggregates = False
    personalized = True

    def aggregate(
        self, global_state: StateDict, updates: list[ClientUpdate], round: int
    ) -> StateDict:
        _check_round(round)
        return dict(global_state)


class ZeroShot(Local):
    """Zero-shot baseline: no client trains (``trains_clients = False``); the initial model is
    evaluated. ``aggregate`` returns the global state unchanged. No config keys."""

    name = "zeroshot"
    trains_clients = False
    personalized = False


# ----------------------------------------------------------------------------- registry

_REGISTRY: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        FedAvg,
        FedAvgM,
        FedAdagrad,
        FedAdam,
        FedYogi,
        FedProx,
        Scaffold,
        Local,
        ZeroShot,
        Median,
        TrimmedMean,
    )
}

ALGORITHMS: tuple[str, ...] = tuple(_REGISTRY)
"""Every strategy name accepted by :func:`make_strategy` (exact, case-sensitive)."""


def _lookup(name: str) -> type[Strategy]:
    cls = _REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown strategy {name!r}; choices: {', '.join(ALGORITHMS)}")
    return cls


def strategy_params(name: str) -> tuple[str, ...]:
    """The config keys accepted by strategy ``name`` (for filtering a shared config table)."""
    return tuple(keyword_params(_lookup(name)))


def make_strategy(name: str, **params: Any) -> Strategy:
    """Build the strategy called exactly ``name`` (see :data:`ALGORITHMS`).

    Raises ``ValueError`` naming the problem for an unknown name, an unknown or missing
    parameter, or an out-of-range value.
    """
    return build_checked(_lookup(name), "strategy", name, params)
