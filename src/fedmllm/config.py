"""The typed configuration tree.

One tree drives every command and every driver (the multi-round simulation and the one-shot
run). It is loaded from a TOML or YAML
file and overridden by dotted ``key=value`` arguments (values parsed as YAML scalars/lists):

    fedmllm run --config exp.toml fl.rounds=20 fl.clients_per_round=4

Unknown keys and wrongly typed values raise :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key (and file)."""


@dataclass
class ModelConfig:
    preset: Literal["tiny", "small", "tiny-structured"] = "tiny"
    """Built-in offline model (ignored when ``name`` is set). ``tiny`` by default: within the
    demo's 120 s on 2 CPU cores it learns the synthetic task's joint image+text rule, which
    ``small`` (about 3x slower per step) does not reach in that budget."""
    name: str | None = None
    """Hugging Face hub id or local folder of a vision-language model."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """``auto``: bf16 on CUDA where supported, else float32."""
    quantization: Literal["none", "4bit", "8bit"] = "none"
    """Load the frozen base quantized with bitsandbytes (QLoRA): ``4bit`` (NF4, double
    quantization, bf16 compute) or ``8bit`` (LLM.int8); the LoRA adapters stay in full
    precision. On CUDA, or on the CPU with bitsandbytes >= 0.50 (float32 compute there); needs
    ``pip install 'fedmllm[qlora]'``; not with a PiSSA or ``code`` initialisation (they read
    the full-precision weights)."""
    modules_to_save: list[str] = field(default_factory=list)
    """Extra modules trained in full and communicated (e.g. ``multi_modal_projector``)."""
    pretrain: bool = True
    """Built-in presets only: start from the short deterministic pre-training (not random)."""
    trust_remote_code: bool = False
    """Run the Python code a checkpoint ships for classes transformers lacks (``auto_map`` in
    its ``config.json``), as ``from_pretrained(trust_remote_code=True)``; read that code
    first. Off: such a checkpoint is refused in one line."""


@dataclass
class LoraConfig:
    r: int = 8
    """LoRA rank r (A is r x in, B is out x r)."""
    alpha: float = 16.0
    """LoRA scaling numerator: the update is ``(alpha / r) B A``."""
    dropout: float = 0.05
    """Dropout on the LoRA input (drawn per client and round from the run's seed)."""
    modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Projection names inside the language model's attention blocks."""
    layers: list[int] | None = None
    """Language-model layer indices to adapt (negative = from the end); ``None`` = all."""
    target_regex: str | None = None
    """Overrides ``modules``/``layers`` with a full peft ``target_modules`` regex."""
    init: Literal["default", "gaussian", "pissa"] = "default"
    """peft's ``init_lora_weights`` for multi-round runs: ``default`` (Kaiming-uniform A, zero
    B), ``gaussian``, ``pissa`` (top-r SVD factors of the frozen weight, residual base; the
    initial model equals the base model and the saved adapter is converted to load on the
    original base). One-shot runs take ``fl.yoco.init``."""


@dataclass
class DataConfig:
    dataset: Literal["synth", "hateful_memes", "crisismmd", "medical"] = "synth"
    """``synth`` (built-in, offline), ``hateful_memes``, ``crisismmd`` or ``medical`` (VQA-RAD
    + SLAKE + MedAlpaca) in their published layouts under ``data_dir``."""
    task: Literal["binary", "multiclass", "vqa"] = "binary"
    """Synthetic benchmark task (``synth`` only)."""
    data_dir: str | None = None
    """The dataset's folder (real datasets; see the README's Datasets section)."""
    prepared: str | None = None
    """A folder written by ``fedmllm prepare`` (overrides the options below)."""
    scenario: Literal["aligned", "missing", "cross", "hybrid"] = "aligned"
    """Modality scenario: ``aligned`` (every sample image+text), ``missing`` (each sample loses
    image or text with rate ``missing_rate``), ``cross`` (``image_clients`` clients image-only,
    the rest text-only), ``hybrid`` (each client holds each modality with probability
    ``presence``)."""
    missing_rate: float = 0.5
    """``missing``: the rate beta at which a sample loses one modality."""
    image_clients: int = 3
    """``cross``: how many clients hold images only."""
    presence: float = 0.7
    """``hybrid``: the probability p that a client holds each modality."""
    prompt_strategy: Literal["plain", "agnostic"] = "plain"
    """``plain`` prompts, or ``agnostic`` (FedMLLM's modality-agnostic prompt: ", without
    considering the modality")."""
    partition: Literal["dirichlet", "iid"] = "dirichlet"
    """Label skew over clients: ``dirichlet`` (concentration ``alpha``) or ``iid``."""
    alpha: float = 0.5
    """Dirichlet concentration (smaller = more skewed)."""
    min_per_client: int = 2
    """Fewest training samples a client may get from the partition."""
    train_size: int = 2000
    """``synth``: training samples generated (shared over the clients)."""
    test_size: int = 400
    """``synth``: test samples generated."""


@dataclass
class ClientConfig:
    objective: str = "auto"
    """The client objective: ``auto`` = the algorithm's own client side (``prox`` for fedprox,
    ``scaffold`` for scaffold, ``ce`` otherwise), or ``ce``, ``prox``, ``adaptive_prox``,
    ``scaffold``."""
    prox_mu: float = 0.01
    """mu of the proximal term (``prox``, ``adaptive_prox``)."""
    mu_w: float = 0.1
    """``adaptive_prox``: weight of the proximal term on the middle layers."""
    s_layer: int = 4
    """``adaptive_prox``: layers ``s_layer .. L-1-s_layer`` are regularised."""


@dataclass
class YocoConfig:
    """One-shot federated LoRA (``fl.algorithm = "yoco"`` or ``"oneshot"``), see
    :mod:`fedmllm.runtime.oneshot`. Every client trains once and uploads once; the server merges
    once."""

    method: Literal["yoco", "fedavg", "mean", "fedavgm", "fedadam", "fedadagrad", "fedyogi",
                    "combine", "exact", "task_arithmetic", "magnitude_prune", "ties",
                    "dare_linear", "dare_ties", "ensemble", "local"] = "yoco"
    """``yoco`` (the paper); a one-shot baseline: ``fedavg`` (sample-weighted), ``mean``, one
    application of ``fedavgm``/``fedadam``/``fedadagrad``/``fedyogi`` (``fl.strategy`` params),
    ``combine`` (B by ``merge_b``, A by ``merge_a``); a product merge of ``B_i A_i``:
    ``exact``/``task_arithmetic``/``magnitude_prune``/``ties``/``dare_linear``/``dare_ties``
    (re-factorized to rank ``lora.r``); ``ensemble`` (no merge: averaged option probabilities
    of all client adapters); ``local`` (mean/std of the client models)."""
    variant: Literal["init", "init_b", "init_ba", "full"] = "full"
    """Paper ablation (method ``yoco``): SVD init; + sign penalty on B; + sparse A; + PCA A."""
    init: Literal["auto", "pissa", "code", "default"] = "auto"
    """``pissa``: peft PiSSA (SVD factors + residual base: initial model = base model);
    ``code``: released code (B0 from SVD, A0 random, no residual); ``default``: peft's zero-B
    LoRA. ``auto``: ``pissa`` for method ``yoco``, ``default`` for the baselines."""
    targets: Literal["auto", "paper", "lora"] = "auto"
    """``paper``: r 8, alpha 8, dropout 0.05 on the last LM layer's ``q_proj``; ``lora``: the
    ``lora.*`` keys as given; ``auto``: ``paper`` when every ``lora.*`` key is at its default."""
    a_penalty: Literal["l1", "orthogonal"] = "l1"
    """The penalty on A: ``l1`` (the paper's sparsity) or ``orthogonal`` (the released
    code's)."""
    lam: float = 1e-3
    """Weight of the L1 penalty on A (paper: 1e-4 .. 1e-1)."""
    gamma_min: float = 1.0
    """Soft-sign sharpness at the first local step (cosine ramp to ``gamma_max``)."""
    gamma_max: float = 50.0
    """Soft-sign sharpness at the last local step."""
    local_epochs: float = 10.0
    """Fixed local epochs (paper 10); no selection on the test set."""
    select_epochs: list[float] | None = None
    """Candidate local epoch counts (e.g. ``[5, 10]``, the paper's pair). Each client holds out
    ``val_fraction`` of its own samples, trains one adapter per candidate from the same start
    (each exactly as a fixed-epoch run would) and uploads the one with the lowest loss on its
    held-out split. ``None``: the fixed ``local_epochs``, all samples trained on."""
    select_lr: list[float] | None = None
    """Candidate client learning rates (e.g. ``[1e-3, 3e-3, 1e-2]``), crossed with
    ``select_epochs`` (or the fixed ``local_epochs``): each client trains one adapter per
    candidate on all but its held-out ``val_fraction`` and uploads the one with the lowest
    held-out loss, so each client picks its own rate without the test set. ``None``: the
    run's ``train.lr``."""
    val_fraction: float = 0.2
    """Fraction of each client's samples held out for ``select_epochs``/``select_lr`` (at
    least one)."""
    upload_cache: str | None = None
    """A folder where one-shot runs share their clients' uploads: a run whose *training* is
    the same as an earlier one's (every key but the merge's -- ``method`` where it does not
    change the training, ``merge_*``, ``params_*``, ``pca_*``, ``density``, ``product_rank``,
    ``fl.strategy`` -- and ``eval.*``/``output.*``) loads those uploads instead of training
    again, so a study of merges trains once (``fedmllm bench`` sets it with ``[bench]
    share_uploads``). Files are safetensors and JSON, written atomically under a lock."""
    merge_b: str = "fedavg"
    """Rule for B (and for A in variants ``init``/``init_b``/``init_ba``): fedavg, mean,
    fedavgm, fedadam, fedadagrad, fedyogi (``fl.strategy`` params)."""
    merge_a: str = "pca"
    """Rule for A in variant ``full`` and in ``combine``: pca, fedavg, mean, fedavgm, ..."""
    params_a: dict[str, Any] | None = None
    """Parameters of the rule for A (e.g. ``{momentum: 0.9}``); ``None``: ``fl.strategy``."""
    params_b: dict[str, Any] | None = None
    """Parameters of the rule for B (and other keys); ``None``: ``fl.strategy``."""
    pca_k: float | None = None
    """Components kept: None = all, int = count, float in (0, 1) = explained variance."""
    pca_weighting: Literal["energy", "max", "mean"] = "energy"
    """How ``pca`` merges each principal component's coordinates: ``energy`` (clients weighted
    by their share of the component's energy), ``max`` (the most extreme client), ``mean``."""
    pca_power: float = 2.0
    """``energy`` weighting: a client's weight on a component is ``|coordinate|^pca_power``
    normalised over the clients (2 = its share of the energy)."""
    pca_center: bool = True
    """Centre the clients' A matrices on their (weighted) mean before the decomposition (the
    components describe how the clients differ) or decompose them as they are."""
    pca_sample_weighted: bool = True
    """Weight the clients by their example counts in the ``pca`` merge (else equally)."""
    density: float = 0.5
    """Kept fraction for ``ties``/``dare_*``/``magnitude_prune``."""
    product_rank: Literal["auto", "client", "full"] = "auto"
    """Rank of a product merge's result: ``full`` (method ``exact`` only) keeps the exact
    weighted mean of ``B_i A_i`` as one rank-``N r`` LoRA (lossless); ``client`` re-factorizes
    the merged product to the clients' rank ``r`` by truncated SVD; ``auto``: ``full`` for
    ``exact``, ``client`` for the others."""


@dataclass
class FLConfig:
    algorithm: str = "fedavg"
    """Server strategy: fedavg, fedprox, fedavgm, fedadagrad, fedadam, fedyogi, scaffold,
    median, trimmed_mean; the baselines local (local-only), zeroshot and centralized (all
    clients' data pooled, the same optimizer steps and evaluation: the upper bound); or
    yoco / oneshot (one-shot runs, see ``fl.yoco``)."""
    # 24 short rounds: under the default label skew FedAvg needs about 12 rounds to leave the
    # constant answer on the synthetic task, whatever the local steps.
    rounds: int = 24
    """Communication rounds."""
    num_clients: int = 10
    """Clients the training data is partitioned over."""
    clients_per_round: int = 4
    """Clients sampled (without replacement) in every round."""
    local_steps: int = 6
    """Optimizer steps per client per round (ignored when ``local_epochs`` is set)."""
    local_epochs: float | None = None
    """Local epochs per client per round instead of ``local_steps`` (``None``: use
    ``local_steps``)."""
    client: ClientConfig = field(default_factory=ClientConfig)
    """The client objective and its parameters."""
    strategy: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for the server strategy (``eta``, ``momentum`` ...)."""
    max_update_norm: float | Literal["auto", "none"] | None = "auto"
    """Reject a client update ``y`` whose distance to the global adapter ``x`` exceeds this
    bound: a number is an absolute bound on ``||y - x||_2``; ``auto`` (default) is
    ``100 * max(||x||_2, 1)``, far above any update local training gives but below the
    overflow of the server optimizers; ``none`` (or null) checks nothing."""
    min_clients: int = 1
    """Skip the round (global unchanged) when fewer valid updates than this arrive."""
    round_timeout: float = 600.0
    """Flower runs: seconds the server waits for a round's replies; clients that have not
    replied by then are recorded as ``dropped`` and the round goes on without them."""
    checkpoint_every: int = 1
    """Write ``<output.dir>/checkpoint/`` every N rounds (one-shot runs: after every client);
    0 = never. ``fedmllm run --resume DIR`` continues from the last complete checkpoint."""
    yoco: YocoConfig = field(default_factory=YocoConfig)
    """One-shot settings (``fl.algorithm = "yoco"`` / ``"oneshot"``)."""


@dataclass
class TrainConfig:
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1`` ..."""
    batch_size: int = 8
    """Samples per micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    optimizer: Literal["auto", "adamw", "sgd"] = "auto"
    """Client optimizer, fresh for every client in every round: ``auto`` = ``sgd`` for
    scaffold (its control-variate estimate assumes SGD steps, as in the paper), ``adamw``
    otherwise."""
    lr: float | None = None
    """Client learning rate (before the schedules); ``None`` = the optimizer's default:
    ``adamw`` 5e-3, ``sgd`` 0.5."""
    weight_decay: float = 0.0
    """Weight decay of the client optimizer."""
    max_seq_len: int = 256
    """Token length a sample is cut to."""
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    """Round-level schedule: the base rate of each round (see ``fedmllm.fl.round_lr``)."""
    warmup_rounds: int = 1
    """Rounds of linear warm-up of the round-level rate."""
    min_lr_ratio: float = 0.2
    """The round-level cosine ends at ``lr * min_lr_ratio``."""
    local_lr_schedule: Literal["constant", "cosine"] = "constant"
    """Schedule inside each client's local run, applied to the round's rate (see
    ``fedmllm.fl.local_lr``); ``cosine`` with ``local_warmup_ratio=0.01`` is what the FedMLLM
    and YOCO research code do (Hugging Face's cosine schedule in every local run)."""
    local_warmup_ratio: float = 0.0
    """Share of a local run's steps with a linear warm-up."""
    grad_clip: float | None = 1.0
    """Clip the norm of the loss gradient (task + penalties) before the SCAFFOLD correction is
    added; ``None`` = no clipping."""
    gradient_checkpointing: bool = False
    """Recompute each layer's activations in the backward pass instead of keeping them
    (Hugging Face activation checkpointing, non-reentrant, dropout masks replayed): much less
    activation memory for about one more forward pass of compute; the same loss and
    gradients."""
    autocast: Literal["auto", "bf16", "off"] = "auto"
    """Mixed precision of the forward passes (training and evaluation): ``auto`` = bf16
    autocast on a CUDA device that supports bf16, none elsewhere (CPU runs stay float32 and
    bit-reproducible); ``bf16`` = required (an error where unsupported); ``off`` = compute in
    the weights' dtype (``model.dtype``)."""


@dataclass
class EvalConfig:
    every: int = 6
    """Evaluate the global model every N rounds (and always after the last)."""
    batch_size: int = 32
    """Test samples per forward pass."""
    max_samples: int | None = None
    """Evaluate only the first N test samples (``None``: all)."""
    views: list[Literal["image_text", "image_only", "text_only"]] = field(
        default_factory=lambda: ["image_text", "image_only", "text_only"])
    """Modality views of the test set to evaluate (the first one gives the headline numbers)."""
    client_holdout: float = 0.0
    """Client-side evaluation (multi-round simulator runs): hold out this fraction of every
    client's training samples (drawn from the seed; at least one sample stays for training)
    and, whenever the test set is evaluated, score the global model on each client's own
    held-out samples as the client holds them (its modalities), reported per client and as
    mean, std, min and max (``client_eval`` in ``metrics.jsonl`` and ``summary.json``;
    local-only runs: each client's own adapter). 0 = off (all samples train)."""


@dataclass
class OutputConfig:
    dir: str | None = None
    """Output folder; ``None`` = ``runs/<algorithm>-<dataset>-<YYYYmmdd-HHMMSS>`` (new, unique)."""
    plot: bool = True
    """Write ``metrics.png``."""
    progress: bool = True
    """Show the progress bar and the per-round lines."""
    tensorboard: bool = False
    """Also write TensorBoard event files to ``<output.dir>/tensorboard/`` (scalars per round
    and view; needs ``pip install 'fedmllm[tensorboard]'``)."""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    """The base model."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """The LoRA adapter."""
    data: DataConfig = field(default_factory=DataConfig)
    """The dataset, its partition over clients and the modality scenario."""
    fl: FLConfig = field(default_factory=FLConfig)
    """The federation: algorithm, rounds, clients, client objective, one-shot settings."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Local training of each client."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation on the test set."""
    output: OutputConfig = field(default_factory=OutputConfig)
    """Where and how results are written."""
    seed: int = 0
    """Every random draw of the run derives from it (data, LoRA init, batches, dropout,
    sampling)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml())


# ----------------------------------------------------------------------------- type checking

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp`` (int widens to float); raise naming ``key``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {value!r}")
    if origin is Literal:
        options = get_args(tp)
        if value in options:
            return value
        if isinstance(value, bool):  # YAML 1.1 reads a bare off / on as a boolean
            word = "on" if value else "off"
            if word in options:
                return word
        if isinstance(value, str):  # names are case-insensitive: "FedAvg", "Missing"
            same = [o for o in options if isinstance(o, str) and o.lower() == value.lower()]
            if len(same) == 1:
                return same[0]
        choices = ", ".join(repr(a) for a in options)
        close = difflib.get_close_matches(str(value).lower(),
                                          [str(o).lower() for o in options], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{key}: expected one of {choices}, got {value!r}{hint}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_tp,) = get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table/mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table/mapping, got {value!r}")
        return _build(tp, value, key)
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover


def _build(cls: type, data: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            where = f"{prefix}.{k}" if prefix else k
            raise ConfigError(f"unknown config key '{where}'{_key_hint(k, names, prefix)}")
    obj = cls()
    for k, v in data.items():
        where = f"{prefix}.{k}" if prefix else k
        setattr(obj, k, _coerce(v, hints[k], where))
    return obj


def _key_hint(key: str, names: typing.Iterable[str], prefix: str = "") -> str:
    """``"; did you mean 'fl.rounds'?"`` for the closest of the keys beside ``key``, or ``""``."""
    close = difflib.get_close_matches(str(key), sorted(names), n=1)
    if not close:
        return ""
    return f"; did you mean '{prefix + '.' if prefix else ''}{close[0]}'?"


def _merge(base: dict, upd: dict) -> dict:
    out = dict(base)
    for k, v in upd.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "strategy":
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _read_file(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml", ".json"):
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"{path}: config must be .toml, .yaml, .yml or .json")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot parse: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a table/mapping")
    return data


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"fl.rounds=20"`` -> (["fl", "rounds"], 20). Values are YAML scalars or lists."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not of the form key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{item}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string; numbers win here
        for conv in (int, float):
            try:
                value = conv(value)
                break
            except ValueError:
                pass
    return key.split("."), value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> Config:
    """Defaults, then the file (if any), then the overrides, type-checked as a whole."""
    data: dict = Config().to_dict()
    """The dataset, its partition over clients and the modality scenario."""
    if path is not None:
        data = _merge(data, _read_file(Path(path)))
    for item in overrides:
        keys, value = parse_override(item)
        node = data
        for i, k in enumerate(keys[:-1]):
            nxt = node.get(k) if isinstance(node, dict) else None
            if not isinstance(nxt, dict):
                hint = _key_hint(k, node, ".".join(keys[:i])) if isinstance(node, dict) else ""
                raise ConfigError(f"unknown config key '{'.'.join(keys[: i + 1])}'{hint}")
            node = nxt
        node[keys[-1]] = value
    try:
        cfg = _build(Config, data)
    except ConfigError as e:
        if path is not None and "unknown config key" in str(e):
            raise ConfigError(f"{path}: {e}") from None
        raise
    validate(cfg)
    return cfg


def config_from_yaml(text: str, source: str = "configuration") -> Config:
    """A configuration from YAML text (e.g. ``Config.to_yaml()`` sent to a Flower client)."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: cannot parse: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping")
    cfg = _build(Config, _merge(Config().to_dict(), data))
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Cross-field checks that types alone cannot express."""
    checks = [
        (cfg.fl.rounds >= 0, "fl.rounds", "must be >= 0"),
        (cfg.fl.num_clients >= 1, "fl.num_clients", "must be >= 1"),
        (1 <= cfg.fl.clients_per_round, "fl.clients_per_round", "must be >= 1"),
        (cfg.fl.local_steps >= 1, "fl.local_steps", "must be >= 1"),
        (cfg.train.batch_size >= 1, "train.batch_size", "must be >= 1"),
        (cfg.train.grad_accum >= 1, "train.grad_accum", "must be >= 1"),
        (cfg.train.lr is None or cfg.train.lr > 0, "train.lr", "must be > 0"),
        (0.0 <= cfg.train.local_warmup_ratio < 1.0, "train.local_warmup_ratio",
         "must be in [0, 1)"),
        (cfg.fl.checkpoint_every >= 0, "fl.checkpoint_every", "must be >= 0"),
        (cfg.fl.round_timeout > 0, "fl.round_timeout", "must be > 0"),
        (cfg.fl.min_clients >= 1, "fl.min_clients", "must be >= 1"),
        (cfg.lora.r >= 1, "lora.r", "must be >= 1"),
        (0.0 <= cfg.lora.dropout < 1.0, "lora.dropout", "must be in [0, 1)"),
        (0.0 <= cfg.data.missing_rate <= 1.0, "data.missing_rate", "must be in [0, 1]"),
        (0.0 <= cfg.data.presence <= 1.0, "data.presence", "must be in [0, 1]"),
        (cfg.data.alpha > 0, "data.alpha", "must be > 0"),
        (cfg.eval.every >= 1, "eval.every", "must be >= 1"),
        (0.0 <= cfg.eval.client_holdout < 1.0, "eval.client_holdout", "must be in [0, 1)"),
    ]
    for ok, key, msg in checks:
        if not ok:
            raise ConfigError(f"{key}: {msg}")


def config_to_json(cfg: Config) -> str:
    return json.dumps(cfg.to_dict(), indent=2)


# ----------------------------------------------------------------------------- documentation

def field_docs() -> dict[str, str]:
    """``"fl.rounds" -> "Communication rounds."`` for every key of the tree, read from the
    docstrings that follow the fields in this module's source (the reference of
    ``fedmllm config show --doc``)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(__import__(__name__, fromlist=["_"])))
    by_class: dict[str, dict[str, str]] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        docs: dict[str, str] = {}
        body = node.body
        for stmt, nxt in zip(body, [*body[1:], None], strict=True):
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) \
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) \
                    and isinstance(nxt.value.value, str):
                docs[stmt.target.id] = " ".join(nxt.value.value.split())
        by_class[node.name] = docs

    out: dict[str, str] = {}

    def walk(cls: type, prefix: str) -> None:
        for f in dataclasses.fields(cls):
            key = f"{prefix}{f.name}"
            tp = typing.get_type_hints(cls)[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, key + ".")
            else:
                out[key] = by_class.get(cls.__name__, {}).get(f.name, "")

    walk(Config, "")
    return out


def doc_table(cfg: Config | None = None) -> str:
    """Every key with its type, value (``cfg``'s, or the default) and meaning, as Markdown."""
    cfg = cfg or Config()
    values = {}

    def flat(tree: dict, prefix: str = "") -> None:
        for k, v in tree.items():
            if isinstance(v, dict) and k not in ("strategy", "params_a", "params_b"):
                flat(v, f"{prefix}{k}.")
            else:
                values[f"{prefix}{k}"] = v

    flat(cfg.to_dict())
    hints: dict[str, Any] = {}

    def types_of(cls: type, prefix: str) -> None:
        for name, tp in typing.get_type_hints(cls).items():
            if dataclasses.is_dataclass(tp):
                types_of(tp, f"{prefix}{name}.")
            else:
                hints[f"{prefix}{name}"] = tp

    types_of(Config, "")
    def type_text(tp: Any) -> str:
        if get_origin(tp) is Literal:
            return " / ".join(str(a) for a in get_args(tp))
        if get_origin(tp) in (typing.Union, types.UnionType):
            return " or ".join(type_text(a) for a in get_args(tp))
        if tp is type(None):
            return "null"
        return str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")

    rows = ["| key | type | value | meaning |", "|---|---|---|---|"]
    for key, doc in field_docs().items():
        value = json.dumps(values.get(key))
        rows.append(f"| `{key}` | {type_text(hints[key])} | `{value}` | "
                    f"{doc.replace('|', chr(92) + '|')} |")
    return "\n".join(rows)
