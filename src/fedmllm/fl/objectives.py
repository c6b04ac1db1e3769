"""Client objectives: what a client adds to its task loss or to its gradients.

The driver calls, per sampled client per round (``params`` = the live trainable tensors under the
adapter-state keys)::

    obj.begin(global_state, server_extras, client_id)
    loss = task_loss + obj.penalty(params)      # skipped when it returns None
    loss.backward(); obj.correct_gradients(params); optimizer.step()
    update.extras = obj.end(params, num_steps, lr)

Any objective combines with any server strategy (the ``scaffold`` strategy needs the
``scaffold`` objective, because it requires ``extras["control_delta"]``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .aggregation import compute_dtype, in_compute_dtype
from .types import ClientObjective, Extras, StateDict, build_checked, keyword_params

# Module-name segments that mark a vision/audio/projector sub-model: a ``layers.<i>`` found
# after one of them is not a language-model layer.
_NON_LM_SEGMENTS = frozenset(
    {
        "vision_tower",
        "vision_model",
        "vision_encoder",
        "vision",
        "visual",
        "vpm",
        "vit",
        "image_encoder",
        "audio_tower",
        "resampler",
        "multi_modal_projector",
        "mm_projector",
        "connector",
    }
)
# Module names that directly own the language model's decoder ``layers`` list.
_LM_LAYER_PARENTS = frozenset({"language_model", "text_model", "llm", "model"})


def lm_layer_index(name: str) -> int | None:
    """Language-model decoder layer index in a parameter name, or ``None``.

    The index is the integer after ``layers.`` where ``layers`` is owned by a language-model
    module (``language_model``, ``text_model``, ``llm`` or ``model``; also via ``.model.``), and
    no vision/projector module (``vision_tower``, ``vision_model``, ``visual``, ``vpm``, ...)
    comes earlier in the name. Examples::

        base_model.model.model.language_model.layers.3.self_attn.q_proj.lora_A.weight -> 3
        base_model.model.llm.model.layers.12.self_attn.v_proj.lora_B.weight           -> 12
        base_model.model.model.text_model.layers.0.self_attn.o_proj.lora_A.weight     -> 0
        base_model.model.model.vision_tower.vision_model.encoder.layers.1.mlp.fc1...  -> None
        base_model.model.model.embed_tokens.weight                                    -> None
    """
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part in _NON_LM_SEGMENTS:
            return None
        if (
            part == "layers"
            and 0 < i < len(parts) - 1
            and parts[i - 1] in _LM_LAYER_PARENTS
            and parts[i + 1].isdigit()
        ):
            return int(parts[i + 1])
    return None


def _sq_dist(p: Tensor, ref: Tensor) -> Tensor:
    """``||p - ref||^2`` as a float32/float64 scalar (half precision is upcast)."""
    return in_compute_dtype(p - ref.to(device=p.device, dtype=p.dtype)).square().sum()


class CrossEntropy(ClientObjective):
    """``ce``: the task loss alone (nothing added, nothing sent). No config keys."""

    name = "ce"


class Prox(ClientObjective):
    """``prox`` (FedProx, Li et al., 2020): ``L + (mu/2) * sum_k ||theta_k - x_k||^2``.

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

    def begin(self, global_state: StateDict, server_extras: Extras, client_id: int) -> None:
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

    def end(self, params: StateDict, num_steps: int, lr: float) -> Extras:
        self._ref = {}
        self._started = False
        return {}

    def config(self) -> dict[str, Any]:
        return {"prox_mu": self.prox_mu}


class AdaptiveProx(Prox):
    """``adaptive_prox`` (FedMLLM's layer-restricted proximal term)::

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


_REGISTRY: dict[str, type[ClientObjective]] = {
    cls.name: cls for cls in (CrossEntropy, Prox, AdaptiveProx, ScaffoldObjective)
}

#: objectives defined in modules that import this one (imported on first use)
_LAZY: dict[str, str] = {"yoco": "YocoObjective"}

OBJECTIVES: tuple[str, ...] = (*_REGISTRY, *_LAZY)
"""Every client objective name accepted by :func:`make_objective` (exact, case-sensitive)."""


def _lookup(name: str) -> type[ClientObjective]:
    if name in _LAZY and name not in _REGISTRY:
        from . import yoco

        _REGISTRY[name] = getattr(yoco, _LAZY[name])
    cls = _REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown client objective {name!r}; choices: {', '.join(OBJECTIVES)}")
    return cls


def objective_params(name: str) -> tuple[str, ...]:
    """The config keys accepted by client objective ``name``."""
    return tuple(keyword_params(_lookup(name)))


def make_objective(name: str, **params: Any) -> ClientObjective:
    """Build the client objective called exactly ``name`` (see :data:`OBJECTIVES`).

    Raises ``ValueError`` for an unknown name, an unknown or missing parameter, or a bad value.
    """
    return build_checked(_lookup(name), "client objective", name, params)
