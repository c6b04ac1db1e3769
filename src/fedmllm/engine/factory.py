"""From a configuration to the pieces of a run, checked before anything is loaded.

:func:`plan_run` validates the whole configuration — algorithm, strategy parameters, client
objective, optimizer, one-shot method and its rules, model name, dataset keys, and for a
Flower run what a federation cannot do — and resolves every ``auto`` value, the model's
included (:class:`ModelPlan`: base source, device, dtype, autocast, quantization), without
loading a model or data and without touching the output folder. A mistake is one
:class:`~fedmllm.config.ConfigError` naming the key (with a "did you mean" for a misspelt name)
within about a second; ``fedmllm config show`` runs the same checks. A process plans its run
once and passes the plan along.

:func:`build_strategy` and :func:`build_objective` then make the server strategy and the client
objective of a plan; every driver (multi-round simulation, one-shot run) gets them from here.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import AttackConfig, Config, ConfigError, LoraConfig
from ..files import local_model_problem, looks_local
from .privacy import PrivacyPlan, plan_privacy, private_strategy

if TYPE_CHECKING:
    import torch

#: ``fl.algorithm`` values that run the one-shot driver (``oneshot`` is an alias of ``yoco``).
ONESHOT_ALGORITHMS = ("yoco", "oneshot")

#: Default client learning rate per optimizer (``train.lr = None``).
DEFAULT_LR = {"adamw": 5e-3, "sgd": 0.5}

#: ``fl.max_update_norm = auto``: reject ``||y - x|| > AUTO_NORM_FACTOR * max(||x||, 1)``.
AUTO_NORM_FACTOR = 100.0

#: The YOCO paper's LoRA targets (Sec. 5): rank 8, alpha 8, dropout 0.05, last layer's q_proj.
PAPER_TARGETS = {"r": 8, "alpha": 8.0, "dropout": 0.05, "modules": ["q_proj"], "layers": [-1],
                 "target_regex": None}

#: One-shot methods that merge LoRA factors with a server rule (the others merge products,
#: ensemble, or keep the clients' own adapters).
FACTOR_METHODS = ("yoco", "fedavg", "mean", "fedavgm", "fedadam", "fedadagrad", "fedyogi",
                  "combine")


def suggest(name: str, choices: tuple[str, ...] | list[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest choice (case-insensitive), or ``""``."""
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(str(name).lower(), list(lowered), n=1, cutoff=0.6)
    return f"; did you mean {lowered[close[0]]!r}?" if close else ""


@dataclass(frozen=True)
class ModelPlan:
    """The model a run loads, resolved on this machine; :func:`~fedmllm.engine.bundle.build_bundle`
    builds it in one pass."""

    source: str
    """The folder or hub id to load (a built-in preset's cache folder, built on first load)."""
    preset: tuple[str, bool] | None
    """``(preset, pretrained)`` when :attr:`source` is a built-in preset's folder, else ``None``."""
    device: torch.device
    """``train.device`` resolved (``auto``: CUDA when available, else the CPU)."""
    dtype: torch.dtype
    """``model.dtype`` resolved: the base weights' dtype."""
    autocast: torch.dtype | None
    """``train.autocast`` resolved: the forward passes' autocast dtype, or ``None``."""
    quantization: str
    """``model.quantization``: ``none``, ``4bit`` or ``8bit`` (checked against this machine)."""
    trust_remote_code: bool
    modules_to_save: tuple[str, ...]
    gradient_checkpointing: bool
    seed: int
    """The run's seed (the LoRA draw's key)."""

    @property
    def input_dtype(self) -> torch.dtype:
        """The dtype pixels and other float inputs are passed in: :attr:`dtype`, or float32 for
        a quantized base (prepared as peft's ``prepare_model_for_kbit_training`` does: layer
        norms and other unquantized weights in float32)."""
        import torch

        return torch.float32 if self.quantization != "none" else self.dtype


@dataclass(frozen=True)
class RunPlan:
    """What a configuration resolves to (every ``auto`` decided), before anything is loaded."""

    driver: str
    """``multiround`` (the simulation) or ``oneshot``."""
    algorithm: str
    strategy_params: dict[str, Any]
    objective: str
    """The client objective (``fl.client.objective`` resolved; ``yoco``/``ce`` one-shot)."""
    objective_params: dict[str, Any]
    optimizer: str
    lr: float
    max_update_norm: float | str | None
    """An absolute bound, ``"auto"`` (relative, see :func:`update_norm_bound`) or ``None``."""
    lora: LoraConfig
    """The LoRA targets the run uses (one-shot runs may take the paper's)."""
    init: str
    """The adapter's initialisation (``lora.init``, or ``fl.yoco.init`` resolved)."""
    model: ModelPlan
    """The model: what to load, where and in which precision."""
    notes: list[str] = field(default_factory=list)
    """What ``auto`` resolved to, as ``key = value`` lines for the run header."""
    privacy: PrivacyPlan | None = None
    """``fl.privacy`` resolved (``None``: no DP mechanism)."""

    @property
    def oneshot(self) -> bool:
        return self.driver == "oneshot"


def update_norm_bound(setting: float | str | None, global_norm: float) -> float | None:
    """The bound on ``||y - x||`` for one round: ``setting`` as given, or for ``"auto"``
    ``AUTO_NORM_FACTOR * max(||x||, 1)``; ``None`` = no bound."""
    if setting is None or setting == "none":
        return None
    if setting == "auto":
        return AUTO_NORM_FACTOR * max(float(global_norm), 1.0)
    return float(setting)


# ----------------------------------------------------------------------------- the checks

def plan_run(cfg: Config, *, over_flower: bool = False,
             supernodes: int | None = None) -> RunPlan:
    """Validate ``cfg`` as a whole and resolve it; raise :class:`ConfigError` naming the key.

    ``over_flower``: the clients train on a Flower federation's nodes (the ServerApp);
    ``supernodes``: ``fedmllm flower local`` starts that many nodes (implies ``over_flower``).
    A process calls this once for its run and passes the plan along."""
    algo = _check_algorithm(cfg)
    if over_flower or supernodes is not None:
        _check_flower(cfg, supernodes)
    if cfg.fl.secure_aggregation:
        _check_secure_aggregation(cfg, over_flower or supernodes is not None)
    _check_fl_numbers(cfg)
    _check_output(cfg)
    _check_model(cfg)
    oneshot = algo in ONESHOT_ALGORITHMS
    init_key, init = ("fl.yoco.init", oneshot_init(cfg)) if oneshot else ("lora.init",
                                                                          cfg.lora.init)
    model = _plan_model(cfg, init_key, init)
    _check_data(cfg)
    if cfg.eval.threshold == "calibrated" and (oneshot or not cfg.eval.client_holdout):
        raise ConfigError("eval.threshold: 'calibrated' is chosen on the clients' held-out "
                          "samples: " + ("multi-round runs only (one-shot runs hold out none)"
                                         if oneshot else "set eval.client_holdout > 0 (e.g. "
                                         "0.2)"))
    if oneshot:
        if cfg.fl.attack.kind != "none":
            raise ConfigError("fl.attack.kind: attacks are for multi-round runs, not one-shot "
                              f"fl.algorithm={algo}")
        return _plan_oneshot(cfg, model)
    return _plan_multiround(cfg, model)


def _check_algorithm(cfg: Config) -> str:
    """``fl.algorithm``, a known name (case-insensitive: ``FedAvg``; normalised in ``cfg``)."""
    from ..fl import ALGORITHMS

    algo = cfg.fl.algorithm
    known = (*ALGORITHMS, *ONESHOT_ALGORITHMS)
    if algo not in known and isinstance(algo, str) and algo.lower() in known:
        algo = cfg.fl.algorithm = algo.lower()  # names are case-insensitive: "FedAvg"
    if algo not in known:
        raise ConfigError(f"fl.algorithm: unknown algorithm {algo!r}{suggest(algo, known)} "
                          f"choices: {', '.join(known)}")
    return algo


def _check_flower(cfg: Config, supernodes: int | None) -> None:
    """What a run over a Flower federation cannot do (every node is one client and holds its
    own data)."""
    if cfg.fl.algorithm == "centralized":
        raise ConfigError("fl.algorithm: centralized pools every client's data in one process; "
                          "it runs in the simulator (fedmllm run), not over Flower")
    if supernodes is not None and cfg.fl.num_clients != supernodes:
        raise ConfigError(f"fl.num_clients: {cfg.fl.num_clients}, but --supernodes "
                          f"{supernodes}: every SuperNode is one client (partition)")


#: The rules secure aggregation can run: their server step needs only the clients' mean delta.
SUMMABLE_RULES = ("fedavg", "fedavgm", "fedprox", "fedadagrad", "fedadam", "fedyogi")

#: Why the other rules cannot run on the mean delta alone.
_NEEDS_EACH_UPDATE = {
    "median": "the coordinate-wise median of the individual updates",
    "trimmed_mean": "the coordinate-wise order of the individual updates",
    "krum": "the distances between individual updates",
    "multikrum": "the distances between individual updates",
    "bulyan": "the distances between and the order of individual updates",
    "scaffold": "each client's own control-variate update c_i",
    "local": "each client's own adapter (nothing is aggregated)",
    "centralized": "every client's data in one process",
    "zeroshot": "no training at all",
}


def _check_secure_aggregation(cfg: Config, over_flower: bool) -> None:
    """``fl.secure_aggregation``: Flower's SecAgg+ gives the server the clients' mean delta
    only, so only a multi-round rule whose step needs nothing else runs with it, without
    server-side clipping (it scales each update) or central differential privacy (issue 24:
    not supported yet); and the protocol's parameters must make sense."""
    algo, fl = cfg.fl.algorithm, cfg.fl
    if not over_flower:
        raise ConfigError("fl.secure_aggregation: SecAgg+ runs over Flower, not in the "
                          "in-process simulation; run it with fedmllm flower local (see "
                          "docs/flower.md, Secure aggregation)")
    if algo in ONESHOT_ALGORITHMS:
        raise ConfigError(f"fl.secure_aggregation: {algo} is one-shot; its merge needs each "
                          "client's upload, secure aggregation gives only their sum")
    if algo not in SUMMABLE_RULES:
        raise ConfigError(f"fl.secure_aggregation: {algo} needs {_NEEDS_EACH_UPDATE[algo]}; "
                          f"secure aggregation gives the server only the mean update "
                          f"(rules that run with it: {', '.join(SUMMABLE_RULES)})")
    if fl.strategy.get("clip_norm") is not None:
        raise ConfigError("fl.strategy.clip_norm: server-side clipping scales each update, "
                          "which secure aggregation masks; unset it")
    mechanism = fl.privacy.mechanism
    if mechanism not in ("none", "local"):
        raise ConfigError(f"fl.privacy.mechanism: {mechanism} with fl.secure_aggregation is "
                          "not supported yet (none or local are)")
    _check_secagg_numbers(cfg)


def _check_secagg_numbers(cfg: Config) -> None:
    """SecAgg+'s own constraints (Flower's ``SecAggPlusWorkflow`` checks) before a run."""
    sa, per_round = cfg.fl.secagg, min(cfg.fl.clients_per_round, cfg.fl.num_clients)
    shares, threshold = sa.num_shares, sa.reconstruction_threshold
    if per_round < 2:
        raise ConfigError("fl.clients_per_round: secure aggregation needs at least 2 clients "
                          "per round")
    if isinstance(shares, float) and not 0 < shares <= 1 or \
            isinstance(shares, int) and not 2 < shares <= per_round:
        raise ConfigError(f"fl.secagg.num_shares: a fraction in (0, 1] or an integer from 3 "
                          f"to fl.clients_per_round ({per_round}); got {shares}")
    if isinstance(threshold, float) and not 0 < threshold <= 1 or \
            isinstance(threshold, int) and not (threshold >= 2 and (
                isinstance(shares, float) or threshold < shares)):
        raise ConfigError(f"fl.secagg.reconstruction_threshold: a fraction in (0, 1] or an "
                          f"integer from 2 to below fl.secagg.num_shares; got {threshold}")
    if sa.modulus_range & (sa.modulus_range - 1) or sa.modulus_range > 2**32:
        raise ConfigError(f"fl.secagg.modulus_range: a power of 2 up to 2**32; got "
                          f"{sa.modulus_range}")
    if per_round * sa.quantization_range >= sa.modulus_range:
        raise ConfigError(f"fl.secagg.quantization_range: {per_round} clients x "
                          f"{sa.quantization_range} reaches fl.secagg.modulus_range "
                          f"({sa.modulus_range}): the masked sum would wrap around")


def _check_fl_numbers(cfg: Config) -> None:
    mun = cfg.fl.max_update_norm
    if isinstance(mun, float) and not (mun > 0 and math.isfinite(mun)):
        raise ConfigError(f"fl.max_update_norm: must be a positive number, 'auto' or 'none', "
                          f"got {mun!r}")


def _check_output(cfg: Config) -> None:
    if cfg.output.tensorboard:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise ConfigError("output.tensorboard: needs the tensorboard package: "
                              "pip install 'fedmllm[tensorboard]'")


def _check_model(cfg: Config) -> None:
    name = cfg.model.name
    if not name:
        return
    if name.startswith("fedmllm-preset:"):  # a built-in preset by the name adapters record
        from ..errors import ModelError
        from ..model.names import parse_preset_name

        try:
            parse_preset_name(name)
        except ModelError as e:
            raise ConfigError(f"model.name: {e}") from None
        return
    problem = local_model_problem(name)
    if problem:
        raise ConfigError(f"model.name: {name}: {problem}")
    if looks_local(name):
        from ..errors import ModelError
        from ..model.loading import check_remote_code

        try:
            check_remote_code(Path(name).expanduser(), cfg.model.trust_remote_code)
        except ModelError as e:
            raise ConfigError(f"model.name: {e}") from None


def check_model_source(model: ModelPlan) -> None:
    """The planned model can be had on this machine, checked when a run starts (after
    :func:`plan_run`, before its folder is written): a built-in preset's folder is built when
    first loaded and a local folder was checked by the plan; a hub id must be in the local
    Hugging Face cache, or, online, on the hub (one request, no retries; with
    ``HF_HUB_OFFLINE=1`` none: :func:`~fedmllm.model.loading.hub_model_problem`). A refusal is
    one :class:`ConfigError` naming ``model.name``."""
    if model.preset is not None:
        return
    from ..model.loading import hub_model_problem

    problem = hub_model_problem(model.source)
    if problem:
        raise ConfigError(f"model.name: {model.source}: {problem}")


def _plan_model(cfg: Config, init_key: str, init: str) -> ModelPlan:
    """``model.*`` and ``train.device``/``autocast`` resolved on this machine, with
    ``model.quantization`` and ``train.autocast`` checked against it and against the adapter's
    initialisation (``init_key = init``), before anything loads."""
    from ..errors import ModelError
    from ..model.loading import (
        bf16_supported,
        quantization_problem,
        resolve_autocast,
        resolve_device,
        resolve_dtype,
    )

    m = cfg.model
    try:
        device = resolve_device(cfg.train.device)
    except ModelError as e:
        raise ConfigError(str(e)) from None
    if m.quantization != "none":
        problem = quantization_problem(m.quantization, device)
        if problem:
            raise ConfigError(problem)
        if init in ("pissa", "code"):
            raise ConfigError(f"model.quantization: {m.quantization} cannot start from "
                              f"{init_key} = {init} (it reads the full-precision weights); use "
                              f"{init_key}=default or model.quantization=none")
    if cfg.train.autocast == "bf16" and not bf16_supported(device):
        raise ConfigError(f"train.autocast: bf16 needs a CUDA device that supports bfloat16 "
                          f"(this run's device is {device}); use train.autocast=auto")
    source, preset = base_source(cfg)
    return ModelPlan(source=source, preset=preset, device=device,
                     dtype=resolve_dtype(m.dtype, device),
                     autocast=resolve_autocast(cfg.train.autocast, device),
                     quantization=m.quantization, trust_remote_code=m.trust_remote_code,
                     modules_to_save=tuple(m.modules_to_save or ()),
                     gradient_checkpointing=cfg.train.gradient_checkpointing, seed=cfg.seed)


def base_source(cfg: Config) -> tuple[str, tuple[str, bool] | None]:
    """``(folder or hub id, built-in preset or None)`` of the base model: ``model.name`` as
    given, a preset's name (``fedmllm-preset:tiny``) or, without a name, ``model.preset``; a
    preset is its cache folder (:func:`~fedmllm.model.tiny.presets.recipe_dir`), built when
    the model is first loaded."""
    from ..model.names import parse_preset_name
    from ..model.tiny.presets import recipe_dir

    name = cfg.model.name
    preset = parse_preset_name(name) if name else (cfg.model.preset, cfg.model.pretrain)
    if preset is None:
        return name, None
    return str(recipe_dir(*preset)), preset


def _check_data(cfg: Config) -> None:
    d = cfg.data
    if d.prepared:
        folder = Path(d.prepared)
        if not (folder / "manifest.json").is_file():
            raise ConfigError(f"data.prepared: {d.prepared}: not a folder written by "
                              "`fedmllm prepare` (no manifest.json)")
        return
    if d.dataset != "synth":
        if not d.data_dir:
            raise ConfigError(f"data.data_dir: dataset {d.dataset!r} needs its folder")
        if not Path(d.data_dir).is_dir():
            raise ConfigError(f"data.data_dir: {d.data_dir}: no such folder")


def _resolve_training(cfg: Config, objective: str, notes: list[str]) -> tuple[str, float]:
    optimizer = cfg.train.optimizer
    if optimizer == "auto":
        optimizer = "sgd" if objective == "scaffold" else "adamw"
        notes.append(f"train.optimizer = {optimizer}")
    lr = cfg.train.lr
    if lr is None:
        lr = DEFAULT_LR[optimizer]
        notes.append(f"train.lr = {lr:g}")
    return optimizer, lr


def _plan_multiround(cfg: Config, model: ModelPlan) -> RunPlan:
    from ..fl import make_objective, make_strategy

    algo, c = cfg.fl.algorithm, cfg.fl.client
    notes: list[str] = []
    params = dict(cfg.fl.strategy)
    if algo == "scaffold":
        params.setdefault("num_clients", cfg.fl.num_clients)
    try:
        strategy = make_strategy(algo, **params)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"fl.strategy: {e}") from None
    name = _client_objective(cfg, strategy, notes)
    obj_params = _objective_params(cfg, name)
    try:  # the layer count comes from the model: check the rest with a deep placeholder
        probe = dict(obj_params)
        if name == "adaptive_prox":
            probe["num_layers"] = 2 * c.s_layer + 1 if c.s_layer >= 0 else 1
        make_objective(name, **probe)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"fl.client: {e}") from None
    if cfg.fl.rounds == 0 and strategy.trains_clients:
        raise ConfigError("fl.rounds: 0 rounds train nothing; to evaluate the base model use "
                          "fl.algorithm=zeroshot")
    _check_clients_per_round(cfg, strategy, notes)
    privacy = plan_privacy(cfg, algo, notes)
    _check_attack(cfg, strategy, notes)
    optimizer, lr = _resolve_training(cfg, name, notes)
    return RunPlan(driver="multiround", algorithm=algo, strategy_params=params, objective=name,
                   objective_params=obj_params, optimizer=optimizer, lr=lr,
                   max_update_norm=_norm_setting(cfg), lora=cfg.lora, init=cfg.lora.init,
                   model=model, notes=notes, privacy=privacy)


def _client_objective(cfg: Config, strategy, notes: list[str]) -> str:
    """``fl.client.objective`` resolved against the strategy (``auto``: its default)."""
    from ..fl.objectives import objective_names

    objectives = objective_names()
    algo, c = cfg.fl.algorithm, cfg.fl.client
    name = c.objective
    if name not in objectives and isinstance(name, str) and name.lower() in (*objectives,
                                                                             "auto"):
        name = c.objective = name.lower()
    if name == "auto":
        name = strategy.default_objective
        notes.append(f"fl.client.objective = {name}")
    elif name not in objectives:
        raise ConfigError(f"fl.client.objective: unknown objective {name!r}"
                          f"{suggest(name, objectives)} choices: auto, {', '.join(objectives)}")
    if name == "yoco":
        raise ConfigError("fl.client.objective: 'yoco' is one-shot; use fl.algorithm=yoco")
    allowed = strategy.allowed_objectives
    if allowed is None:
        allowed = tuple(o for o in objectives if o not in ("scaffold", "yoco"))
    if name not in allowed:
        raise ConfigError(f"fl.client.objective: {name!r} does not go with fl.algorithm {algo!r} "
                          f"(it takes {', '.join(allowed)}; auto picks "
                          f"{strategy.default_objective!r})")
    return name


#: The strategy parameters that set its fewest clients per round (named when it is not met).
_SIZING_KEYS = ("beta", "num_malicious", "num_to_select")


def _check_clients_per_round(cfg: Config, strategy, notes: list[str]) -> None:
    """Enough clients per round for the strategy and ``fl.min_clients``."""
    algo = cfg.fl.algorithm
    per_round = min(cfg.fl.clients_per_round, cfg.fl.num_clients)
    if cfg.fl.local_clients == "sampled" and algo != "local":
        raise ConfigError(f"fl.local_clients: 'sampled' is for local-only training "
                          f"(fl.algorithm=local); {algo} samples its clients anyway")
    if algo == "local":
        notes.append(f"fl.local_clients = {cfg.fl.local_clients}: " + (
            f"every one of the {cfg.fl.num_clients} clients trains in every round"
            if cfg.fl.local_clients == "all" else
            f"only the {per_round} of {cfg.fl.num_clients} clients sampled each round train"))
    if cfg.fl.clients_per_round > cfg.fl.num_clients:
        notes.append(f"fl.clients_per_round = {per_round}: there are only "
                     f"{cfg.fl.num_clients} clients, so every client trains every round "
                     f"({cfg.fl.clients_per_round} were asked)")
    need, params = strategy.min_updates, strategy.config()
    what = ", ".join(f"fl.strategy.{k}={params[k]}" for k in _SIZING_KEYS if k in params)
    if strategy.aggregates and per_round < need:
        raise ConfigError(f"fl.clients_per_round: {algo} needs at least {need} clients per "
                          f"round to be what it says ({what or algo}); got {per_round}")
    most = per_round - params.get("num_malicious", 0)
    if algo == "multikrum" and params["num_to_select"] > most:
        raise ConfigError(f"fl.strategy.num_to_select: multikrum may select at most "
                          f"fl.clients_per_round - fl.strategy.num_malicious = {most} clients "
                          f"(more always takes in an attacker; {what}); got {per_round} clients")
    if strategy.aggregates and cfg.fl.min_clients > per_round:
        raise ConfigError(f"fl.min_clients: {cfg.fl.min_clients} exceeds the "
                          f"{per_round} clients sampled per round: every round would be skipped")


def _check_attack(cfg: Config, strategy, notes: list[str]) -> None:
    """``fl.attack``: no key without a kind, only the kind's own parameters, a malicious set
    that leaves an honest client, and a rule that aggregates clients' updates."""
    from ..fl.attacks import ATTACK_PARAMS

    a, default = cfg.fl.attack, AttackConfig()
    changed = [f.name for f in dataclasses.fields(a)
               if f.name != "kind" and getattr(a, f.name) != getattr(default, f.name)]
    if a.kind == "none":
        if changed:
            raise ConfigError(f"fl.attack.{changed[0]}: set, but fl.attack.kind = none (give "
                              f"the attack: {', '.join(k for k in ATTACK_PARAMS if k != 'none')})")
        return
    other = [k for k in changed if k not in ("fraction", "clients", *ATTACK_PARAMS[a.kind])]
    if other:
        raise ConfigError(f"fl.attack.{other[0]}: not a parameter of fl.attack.kind = {a.kind} "
                          f"(its own: {', '.join(ATTACK_PARAMS[a.kind]) or 'none'})")
    if not strategy.aggregates:
        raise ConfigError(f"fl.attack.kind: fl.algorithm={cfg.fl.algorithm} aggregates no "
                          "client updates: there is nothing to attack")
    try:
        attack = build_attack(cfg)
    except ValueError as e:
        raise ConfigError(f"fl.attack: {e}") from None
    notes.append(f"fl.attack: {a.kind} by clients {list(attack.malicious)}")


def _norm_setting(cfg: Config) -> float | str | None:
    mun = cfg.fl.max_update_norm
    return None if mun in (None, "none") else mun


def _objective_params(cfg: Config, name: str) -> dict[str, Any]:
    c = cfg.fl.client
    if name == "prox":
        return {"prox_mu": c.prox_mu}
    if name == "adaptive_prox":
        return {"prox_mu": c.prox_mu, "mu_w": c.mu_w, "s_layer": c.s_layer}
    return {}


def oneshot_lora(cfg: Config) -> LoraConfig:
    """A one-shot run's LoRA targets: ``fl.yoco.targets`` = ``paper`` (the YOCO paper's), ``lora``
    (the ``lora.*`` keys) or ``auto`` (``paper`` when every ``lora.*`` key has its default)."""
    mode = cfg.fl.yoco.targets
    if mode == "auto":
        mode = "paper" if cfg.lora == LoraConfig() else "lora"
    if mode == "lora":
        return cfg.lora
    return dataclasses.replace(cfg.lora, **PAPER_TARGETS)


def oneshot_init(cfg: Config) -> str:
    """``fl.yoco.init`` resolved: ``auto`` = ``pissa`` for method ``yoco``, else ``default``."""
    y = cfg.fl.yoco
    if y.init != "auto":
        return y.init
    return "pissa" if y.method == "yoco" else "default"


def _plan_oneshot(cfg: Config, model: ModelPlan) -> RunPlan:
    from ..fl import make_objective

    y = cfg.fl.yoco
    notes: list[str] = []
    _check_oneshot_keys(cfg)
    plan_privacy(cfg, cfg.fl.algorithm, notes)  # refuses any mechanism: one-shot runs
    init = oneshot_init(cfg)
    if y.init == "auto":
        notes.append(f"fl.yoco.init = {init}")
    lora = oneshot_lora(cfg)
    if y.targets == "auto":
        notes.append("fl.yoco.targets = " + (
            "paper (auto: every lora.* key is at its default; the last LM layer's q_proj, "
            "r 8, alpha 8)" if lora != cfg.lora else
            "lora (auto: a lora.* key is set, so the lora.* targets, not the paper's)"))
    objective, obj_params = "ce", {}
    if y.method == "yoco":
        if init == "default" and y.variant != "init":
            raise ConfigError(
                f"fl.yoco.init: 'default' starts LoRA-B at zero, so the sign penalty of variant "
                f"{y.variant!r} has no sign pattern to pull towards (sign(0) = 0); use "
                "fl.yoco.init=pissa or code, or fl.yoco.variant=init")
        objective = "yoco"
        obj_params = {"variant": y.variant, "a_penalty": y.a_penalty, "lam": y.lam,
                      "gamma_min": y.gamma_min, "gamma_max": y.gamma_max,
                      "calls_per_step": cfg.train.grad_accum}
        try:
            make_objective("yoco", **obj_params)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"fl.yoco: {e}") from None
    if y.method in FACTOR_METHODS:
        _check_factor_rules(cfg)
    optimizer, lr = _resolve_training(cfg, objective, notes)
    return RunPlan(driver="oneshot", algorithm=cfg.fl.algorithm, strategy_params=dict(
        cfg.fl.strategy), objective=objective, objective_params=obj_params, optimizer=optimizer,
        lr=lr, max_update_norm=None, lora=lora, init=init, model=model, notes=notes)


def _check_oneshot_keys(cfg: Config) -> None:
    """The ``fl.yoco`` numbers and rule names, and what a one-shot run cannot do."""
    from ..fl.oneshot import upload_rules

    y = cfg.fl.yoco
    if cfg.eval.client_holdout:
        raise ConfigError("eval.client_holdout: client-side evaluation is for multi-round runs "
                          "(one-shot runs hold out their own split, fl.yoco.val_fraction)")
    if y.local_epochs <= 0:
        raise ConfigError("fl.yoco.local_epochs: must be > 0")
    for key, rule in (("merge_b", y.merge_b), ("merge_a", y.merge_a)):
        if rule not in upload_rules():
            raise ConfigError(f"fl.yoco.{key}: unknown rule {rule!r}{suggest(rule, upload_rules())}"
                              f" choices: {', '.join(upload_rules())}")
    if y.merge_b == "pca":
        raise ConfigError("fl.yoco.merge_b: 'pca' is a rule for A (fl.yoco.merge_a)")
    if not 0.0 < y.density <= 1.0:
        raise ConfigError("fl.yoco.density: must lie in (0, 1]")
    if not (y.pca_power > 0 and math.isfinite(y.pca_power)):
        raise ConfigError("fl.yoco.pca_power: must be a positive number")
    if y.select_epochs is not None and (not y.select_epochs
                                        or any(e <= 0 for e in y.select_epochs)):
        raise ConfigError("fl.yoco.select_epochs: give one or more epoch counts > 0")
    if y.select_lr is not None and (not y.select_lr or any(not (lr > 0 and math.isfinite(lr))
                                                             for lr in y.select_lr)):
        raise ConfigError("fl.yoco.select_lr: give one or more learning rates > 0")
    if not 0.0 < y.val_fraction < 1.0:
        raise ConfigError("fl.yoco.val_fraction: must lie in (0, 1)")
    if y.product_rank == "full" and y.method != "exact":
        raise ConfigError("fl.yoco.product_rank: 'full' applies to method 'exact' only")


def _check_factor_rules(cfg: Config) -> None:
    """Build each server rule a factor-wise one-shot merge will apply, with its parameters."""
    from ..fl import make_strategy
    from ..fl.oneshot import merge_names, rule_params

    y = cfg.fl.yoco
    rule_b, rule_a = factor_rules(cfg)
    for rule, own, key in ((rule_b, y.params_b, "params_b"), (rule_a, y.params_a, "params_a")):
        if rule in merge_names("key"):
            if own:
                raise ConfigError(f"fl.yoco.{key}: rule {rule!r} takes no parameters")
            continue
        params = dict(own) if own is not None else dict(cfg.fl.strategy)
        try:
            make_strategy(rule, **rule_params(rule, params, y.fedopt_step))
        except (ValueError, TypeError) as e:
            where = f"fl.yoco.{key}" if own is not None else "fl.strategy"
            raise ConfigError(f"{where}: {e}") from None


def factor_rules(cfg: Config) -> tuple[str, str]:
    """``(rule for B and other keys, rule for A)`` of a factor-wise one-shot method."""
    y = cfg.fl.yoco
    if y.method == "yoco":
        return y.merge_b, (y.merge_a if y.variant == "full" else y.merge_b)
    if y.method == "combine":
        return y.merge_b, y.merge_a
    return y.method, y.method


# ----------------------------------------------------------------------------- the pieces

def build_strategy(plan: RunPlan):
    """The server strategy of a multi-round plan (wrapped by its central DP mechanism)."""
    from ..fl import make_strategy

    return private_strategy(make_strategy(plan.algorithm, **plan.strategy_params), plan.privacy)


def build_objective(plan: RunPlan, num_layers: int):
    """The client objective of ``plan``; ``num_layers`` = the model's language-model depth."""
    from ..fl import make_objective

    params = dict(plan.objective_params)
    if plan.objective == "adaptive_prox":
        params["num_layers"] = num_layers
    try:
        return make_objective(plan.objective, **params)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"fl.client: {e}") from None


def build_attack(cfg: Config):
    """The run's :class:`~fedmllm.fl.attacks.Attack` (``fl.attack``): the same malicious set in
    every process of the run (drawn from ``(seed, "attack", "clients")``), client ``c``'s noise
    in round ``r`` from ``(seed, "attack", r, c)``."""
    from ..fl.attacks import make_attack
    from ..seeding import numpy_rng, torch_generator

    a, seed = cfg.fl.attack, cfg.seed
    return make_attack(a.kind, cfg.fl.num_clients, numpy_rng(seed, "attack", "clients"),
                       fraction=a.fraction, clients=a.clients,
                       noise=lambda r, c: torch_generator(seed, "attack", r, c),
                       flip_factor=a.flip_factor, scale_factor=a.scale_factor,
                       noise_std=a.noise_std)
