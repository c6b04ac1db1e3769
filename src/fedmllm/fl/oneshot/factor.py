"""One-shot merges of single LoRA uploads factor by factor, with separate rules for ``lora_A``,
``lora_B`` and other keys (YOCO's server step and the "combine" baselines).

The rules, for one key, with the clients ``S`` that uploaded it, ``y_i`` their tensors and
``n_i`` their example counts (the first three are the registry's ``key`` merges,
:mod:`.registry`):

- ``"fedavg"``: ``sum_{i in S} n_i y_i / sum_{i in S} n_i``.
- ``"mean"``: ``(1/|S|) sum_{i in S} y_i``.
- ``"pca"``: :func:`pca_weighted_merge` of the ``y_i`` with ``k = pca_k``,
  ``weighting = pca_weighting``, ``power = pca_power``, ``center = pca_center`` and weights
  ``n_i`` (``pca_sample_weighted``) or equal; ``pca_weighting="mean"`` equals ``fedavg``
  (or ``mean``).
- any other server strategy in :data:`UPLOAD_RULES` (``fedavgm``, ``fedadam``,
  ``fedadagrad``, ``fedyogi``, ``median``, ``trimmed_mean``, ``fedprox``): one application,
  ``make_strategy(rule, **params_X).aggregate(initial, updates, round=1)``; the global state
  is ``initial`` (required), the adapter every client started from (the YOCO research code
  stepped from a fresh zero-B adapter instead, which drops the shared initialisation every
  client trained from). E.g. textbook ``fedavgm`` one-shot is
  ``x0 + D_w`` = fedavg; ``fedadam`` moves ``x0`` by ``eta_t m / (sqrt(v) + tau)``.

The adaptive rules (:data:`ADAPTIVE_RULES`) take one of two first steps, ``fedopt_step``
(:func:`rule_params`), with ``D_w`` the example-weighted and ``D_u`` the unweighted mean delta:

- ``"research"``: the YOCO research code's one-shot step (``fed_global.py`` at round 0, where
  every momentum buffer equals the current delta): ``m = D_u`` and, from ``v0 = tau^2``,
  ``fedadam``: ``v = beta2 tau^2 + (1 - beta2) D_u^2``; ``fedyogi``:
  ``v = tau^2 - (1 - beta2) D_u^2 sign(tau^2 - D_u^2)``; ``fedadagrad``: ``v = tau^2 + D_u^2``;
  then ``x = x0 + eta m / (sqrt(v) + tau)``, no bias correction. It is the rule's ``fedmllm``
  variant's first step (default ``eta`` 1e-3). Where ``|D_u| >> tau`` the step is about
  ``eta sign(D_u) / sqrt(1 - beta2)`` (fedadam: ``10 eta``).
- ``"textbook"``: Flower's first step: ``m = (1 - beta1) D_w`` (0.1 ``D_w``), ``v`` from 0 with
  ``D_w^2`` (fedadam: ``(1 - beta2) D_w^2``), FedAdam's bias-corrected ``eta_t``; the
  ``textbook`` variant (default ``eta`` 0.1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..aggregation import in_compute_dtype
from ..strategies import ALGORITHMS, make_strategy
from ..types import ClientUpdate, StateDict
from ..yoco.pca import pca_weighted_merge
from .keys import client_weights, lora_role
from .registry import get_merge, merge_names, register_merge


@register_merge("key", "fedavg")
def _fedavg(tensors: list[Tensor], counts: list[float], options: Mapping[str, Any]) -> Tensor:
    """``sum_i n_i y_i / sum_i n_i``."""
    return _weighted_mean(tensors, counts)


@register_merge("key", "mean")
def _mean(tensors: list[Tensor], counts: list[float], options: Mapping[str, Any]) -> Tensor:
    """``(1/|S|) sum_i y_i``."""
    return _weighted_mean(tensors, [1.0] * len(tensors))


@register_merge("key", "pca")
def _pca(tensors: list[Tensor], counts: list[float], options: Mapping[str, Any]) -> Tensor:
    """:func:`~fedmllm.fl.yoco.pca.pca_weighted_merge` with the ``pca_*`` options."""
    return pca_weighted_merge(
        tensors, counts if options["pca_sample_weighted"] else None, k=options["pca_k"],
        center=options["pca_center"], weighting=options["pca_weighting"],
        power=options["pca_power"],
    )


def _weighted_mean(tensors: list[Tensor], weights: list[float]) -> Tensor:
    total = sum(weights)
    acc = sum(c / total * in_compute_dtype(t) for c, t in zip(weights, tensors, strict=True))
    return acc.to(tensors[0].dtype)


def upload_rules() -> tuple[str, ...]:
    """Rules accepted by :func:`merge_lora_uploads` for each key group: the ``key`` merges of
    the registry (:mod:`.registry`), then the server strategies applied once."""
    return merge_names("key") + tuple(
        n for n in ALGORITHMS if n not in ("fedavg", "local", "zeroshot", "scaffold")
    )


UPLOAD_RULES: tuple[str, ...] = upload_rules()
"""The built-in rules of :func:`upload_rules`."""

#: The adaptive server rules whose one-shot first step ``fedopt_step`` chooses.
ADAPTIVE_RULES = ("fedadam", "fedyogi", "fedadagrad")

#: ``fedopt_step`` -> the strategy variant whose first step it is.
FEDOPT_STEPS = {"research": "fedmllm", "textbook": "textbook"}


def rule_params(rule: str, params: Mapping[str, Any] | None,
                fedopt_step: str | None) -> dict:
    """The parameters server rule ``rule`` is made with in a one-shot merge: ``params``, and
    for an adaptive rule (:data:`ADAPTIVE_RULES`) with ``fedopt_step`` given, the ``variant``
    whose first step it is (:data:`FEDOPT_STEPS`; module docstring). A ``variant`` in
    ``params`` that names the other step is refused; ``fedopt_step=None`` keeps ``params``."""
    out = dict(params or {})
    if fedopt_step is None or rule not in ADAPTIVE_RULES:
        return out
    if fedopt_step not in FEDOPT_STEPS:
        raise ValueError(f"unknown fedopt_step {fedopt_step!r}; choices: "
                         f"{', '.join(FEDOPT_STEPS)}")
    variant = FEDOPT_STEPS[fedopt_step]
    if out.get("variant", variant) != variant:
        raise ValueError(f"rule {rule!r}: variant {out['variant']!r} contradicts "
                         f"fedopt_step {fedopt_step!r} (the {variant!r} variant's first step); "
                         f"choose the step by fedopt_step alone")
    out["variant"] = variant
    return out


def _group(key: str) -> str:
    role = lora_role(key)
    return "other" if role is None else role


def merge_lora_uploads(
    states: Sequence[StateDict],
    num_examples: Sequence[int],
    *,
    rule_B: str = "fedavg",
    rule_A: str = "pca",
    rule_other: str = "fedavg",
    initial: StateDict | None = None,
    params_A: Mapping[str, Any] | None = None,
    params_B: Mapping[str, Any] | None = None,
    params_other: Mapping[str, Any] | None = None,
    pca_k: float | None = None,
    pca_weighting: str = "energy",
    pca_power: float = 2.0,
    pca_center: bool = True,
    pca_sample_weighted: bool = True,
    fedopt_step: str | None = None,
) -> StateDict:
    """YOCO's one-shot server merge of single uploads, with separate rules per key group.

    Groups: ``lora_B`` keys (``rule_B``), ``lora_A`` keys (``rule_A``), every other key, e.g.
    ``modules_to_save`` copies (``rule_other``); each rule is one of :data:`UPLOAD_RULES`
    (formulas in the module docstring), ``params_X`` a strategy rule's parameters, ``pca_*``
    the ``pca`` rule's options, ``fedopt_step`` the adaptive rules' first step
    (:func:`rule_params`: ``research``, ``textbook``, or ``None``: as ``params_X`` say).

    ``rule_A != rule_B`` is the paper's "combine" baseline (e.g. ``rule_B="mean"``,
    ``rule_A="fedavgm"``). The YOCO variants ``init``/``init_b``/``init_ba`` merge ``A`` with a
    plain rule, ``full`` with ``"pca"``. Keys of ``initial`` that no client uploaded keep their
    initial value; non-floating tensors keep client 0's (or the initial) value.
    """
    states = list(states)
    if len(states) != len(num_examples):
        raise ValueError(f"{len(states)} states but {len(num_examples)} example counts")
    client_weights(num_examples)  # validates the counts
    counts = [int(n) for n in num_examples]
    rules = {"A": rule_A, "B": rule_B, "other": rule_other}
    params = {"A": dict(params_A or {}), "B": dict(params_B or {}),
              "other": dict(params_other or {})}
    _check_rules(rules, params)
    params = {g: rule_params(rules[g], p, fedopt_step) for g, p in params.items()}
    keys = _checked_keys(states, initial)
    options = {"pca_k": pca_k, "pca_weighting": pca_weighting, "pca_power": pca_power,
               "pca_center": pca_center, "pca_sample_weighted": pca_sample_weighted}
    out: StateDict = dict(initial) if initial is not None else {}
    by_group: dict[str, list[str]] = {"A": [], "B": [], "other": []}
    for key in keys:
        by_group[_group(key)].append(key)
    with torch.no_grad():
        for group, gkeys in by_group.items():
            if not gkeys:
                continue
            if rules[group] in merge_names("key"):
                for key in gkeys:
                    out[key] = _key_merge(rules[group], key, states, counts, initial, options)
            else:
                out.update(_strategy_merge(rules[group], params[group], gkeys, states, counts,
                                           initial))
    return out


def _check_rules(rules: dict[str, str], params: dict[str, dict]) -> None:
    for group, rule in rules.items():
        if rule not in upload_rules():
            raise ValueError(
                f"unknown rule {rule!r} for {group} keys; choices: {', '.join(upload_rules())}"
            )
        if params[group] and rule in merge_names("key"):
            raise ValueError(f"rule {rule!r} takes no params (got {sorted(params[group])})")


def _checked_keys(states: list[StateDict], initial: StateDict | None) -> list[str]:
    """Every uploaded key in first-seen order, once each client's tensor (and the initial
    one) has the shape of the first upload."""
    keys: list[str] = []
    for st in states:
        keys.extend(k for k in st if k not in keys)
    for key in keys:
        ref = next(st[key] for st in states if key in st)
        for i, st in enumerate(states):
            if key in st and st[key].shape != ref.shape:
                raise ValueError(
                    f"client {i}: {key!r} has shape {tuple(st[key].shape)}, expected "
                    f"{tuple(ref.shape)}"
                )
        if initial is not None and key in initial and initial[key].shape != ref.shape:
            raise ValueError(f"initial {key!r} has shape {tuple(initial[key].shape)}")
    return keys


def _key_merge(rule: str, key: str, states: list[StateDict], counts: list[int],
               initial: StateDict | None, options: Mapping[str, Any]) -> Tensor:
    """One key by a registered ``key`` rule over the clients that uploaded it (non-floating
    tensors: the initial value, else the first upload)."""
    holders = [i for i, st in enumerate(states) if key in st]
    tensors = [states[i][key] for i in holders]
    if not tensors[0].is_floating_point():
        return initial[key] if initial is not None and key in initial else tensors[0]
    return get_merge("key", rule)(tensors, [float(counts[i]) for i in holders], options)


def _strategy_merge(rule: str, params: dict, gkeys: list[str], states: list[StateDict],
                    counts: list[int], initial: StateDict | None) -> StateDict:
    """One application of server strategy ``rule`` to the keys ``gkeys``, from ``initial``."""
    if initial is None:
        raise ValueError(
            f"rule {rule!r} steps from the initial adapter: pass initial= (the state "
            "every client started from)"
        )
    missing = [k for k in gkeys if k not in initial]
    if missing:
        raise ValueError(f"initial state lacks {missing[0]!r} (rule {rule!r})")
    strategy = make_strategy(rule, **params)
    glob = {k: initial[k] for k in gkeys}
    updates = [
        ClientUpdate(state={k: st[k] for k in gkeys if k in st}, num_examples=n, client_id=i)
        for i, (st, n) in enumerate(zip(states, counts, strict=True))
    ]
    return strategy.aggregate(glob, updates, 1)
