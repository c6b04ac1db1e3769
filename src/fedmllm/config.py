"""The typed configuration tree, declared once.

One tree drives every command and every driver (the multi-round simulation and the one-shot
run). It is loaded from a TOML or YAML file and overridden by dotted ``key=value`` arguments
(values parsed as YAML scalars/lists):

    fedmllm run --config exp.toml fl.rounds=20 fl.clients_per_round=4

Each key is declared here and nowhere else: its type (choices as a ``Literal``), its default, its
bounds and its one-line doc, as dataclass field metadata written by :func:`key`. Everything else
is derived from these declarations: the ``fedmllm config show --doc`` table (:func:`doc_table`),
the Flower app table (``runtime/flower/appconfig.py``), the defaults of ``fedmllm eval`` and
``fedmllm prepare``, and the table-valued keys (:data:`TABLE_KEYS`, :func:`flatten`).

Why dataclasses with field metadata rather than pydantic models: the tree is passed around as
plain dataclasses (``dataclasses.replace``, ``dataclasses.asdict``, attribute assignment by the
drivers), and a value that bypassed :func:`load_config` must still reach the checks of
``plan_run`` instead of failing where it is built (a pydantic model or pydantic dataclass
validates on construction). pydantic still does the type checking: :func:`load_config`
validates the merged tree with a :class:`pydantic.TypeAdapter` over these dataclasses (pydantic
reads its ``Field`` arguments, ``description`` and the bounds, from
``dataclasses.field(metadata=...)``), in strict mode (an integer is not a float written
``2.0``, a boolean not ``1``; an integer widens to a float), and its errors are mapped to one
:class:`ConfigError` line naming the key (and file). The keys whose choices a registry holds
(``data.dataset``: the datasets; ``fl.yoco.method``: with the product merges) are checked
against the names registered at that moment.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import inspect
import json
import re
import textwrap
import tomllib
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import ConfigDict, TypeAdapter, ValidationError, WrapValidator, with_config

from .data.partition import PARTITIONS
from .data.prompts import STRATEGIES as PROMPT_STRATEGIES
from .data.scenarios import SCENARIOS
from .data.synth import TASKS


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key (and file)."""


# ----------------------------------------------------------------------------- declaring keys

def _lenient_choice(value: Any, handler: Any) -> Any:
    """A choice as people and YAML write it: names are case-insensitive (``"FedAvg"``), and
    YAML 1.1's bare ``off`` / ``on`` (read as booleans) are the words where they are choices."""
    try:
        return handler(value)
    except ValidationError:
        if isinstance(value, bool):
            return handler("on" if value else "off")
        if isinstance(value, str) and value != value.lower():
            return handler(value.lower())
        raise


#: Marks a ``Literal`` key as read by :func:`_lenient_choice`:
#: ``Annotated[Literal["a", "b"], Lenient]``.
Lenient = WrapValidator(_lenient_choice)


#: The bounds a key may declare (pydantic's names), and how its error message writes them.
BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def key(default: Any, doc: str, choices: Callable[[], tuple[str, ...]] | None = None,
        **bounds: float) -> Any:
    """A configuration key: its default, its one-line doc, its bounds (``ge``, ``gt``, ``le``,
    ``lt``; checked by pydantic) and, for a name a registry holds, ``choices``: a function
    giving the names registered when the configuration is checked. A list or table default is
    copied for every instance."""
    assert set(bounds) <= set(BOUNDS), bounds
    meta = {"description": " ".join(doc.split()), **bounds}
    if choices is not None:
        meta["choices"] = choices
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _buildable_datasets() -> tuple[str, ...]:
    # importing it loads the fedmllm.data package first, which registers the built-in datasets
    from .data.registry import dataset_names

    return dataset_names("build")


def _oneshot_methods() -> tuple[str, ...]:
    # the product merges are the ones registered (fedmllm.fl.oneshot, which imports torch)
    from .fl.oneshot import merge_names

    return ("yoco", "fedavg", "mean", "fedavgm", "fedadam", "fedadagrad", "fedyogi", "combine",
            "exact", *merge_names("product"), "ensemble", "local")


def section(cls: type, doc: str) -> Any:
    """A table of keys (a nested dataclass) with its one-line doc."""
    return dataclasses.field(default_factory=cls, metadata={"description": doc})


@typing.dataclass_transform(field_specifiers=(key, section))
def table(cls: type) -> type:
    """A table of keys: a dataclass whose unknown keys pydantic refuses (``extra="forbid"``)."""
    return with_config(ConfigDict(extra="forbid"))(dataclass(cls))


@table
class ModelConfig:
    preset: Annotated[Literal["tiny", "small", "tiny-structured", "deep"], Lenient] = key(
        "tiny", """
        Built-in offline model (ignored when ``name`` is set). ``tiny`` by default: within the
        demo's 120 s on 2 CPU cores it learns the synthetic task's joint image+text rule, which
        ``small`` (about 3x slower per step) does not reach in that budget. ``deep``: tiny's
        width with 8 language-model layers (a middle for ``adaptive_prox``).""")
    name: str | None = key(None, "Hugging Face hub id or local folder of a vision-language model.")
    dtype: Annotated[Literal["auto", "float32", "bfloat16", "float16"], Lenient] = key("auto", """
        ``auto``: bf16 on CUDA where supported, else float32.""")
    quantization: Annotated[Literal["none", "4bit", "8bit"], Lenient] = key("none", """
        Load the frozen base quantized with bitsandbytes (QLoRA): ``4bit`` (NF4, double
        quantization, bf16 compute) or ``8bit`` (LLM.int8); the LoRA adapters stay in full
        precision. On CUDA, or on the CPU with bitsandbytes >= 0.50 (float32 compute there);
        needs ``pip install 'fedmllm[qlora]'``; not with a PiSSA or ``code`` initialisation
        (they read the full-precision weights).""")
    modules_to_save: list[str] = key([], """
        Extra modules trained in full and communicated (e.g. ``multi_modal_projector``).""")
    pretrain: bool = key(True, """
        Built-in presets only: start from the short deterministic pre-training (not random).""")
    trust_remote_code: bool = key(False, """
        Run the Python code a checkpoint ships for classes transformers lacks (``auto_map`` in
        its ``config.json``), as ``from_pretrained(trust_remote_code=True)``; read that code
        first. Off: such a checkpoint is refused in one line.""")


@table
class LoraConfig:
    r: int = key(8, "LoRA rank r (A is r x in, B is out x r).", ge=1)
    alpha: float = key(16.0, "LoRA scaling numerator: the update is ``(alpha / r) B A``.")
    dropout: float = key(0.05, """
        Dropout on the LoRA input (drawn per client and round from the run's seed).""", ge=0, lt=1)
    modules: list[str] = key(["q_proj", "k_proj", "v_proj", "o_proj"], """
        Projection names inside the language model's attention blocks.""")
    layers: list[int] | None = key(None, """
        Language-model layer indices to adapt (negative = from the end); ``None`` = all.""")
    target_regex: str | None = key(None, """
        Overrides ``modules``/``layers`` with a full peft ``target_modules`` regex.""")
    init: Annotated[Literal["default", "gaussian", "pissa"], Lenient] = key("default", """
        peft's ``init_lora_weights`` for multi-round runs: ``default`` (Kaiming-uniform A, zero
        B), ``gaussian``, ``pissa`` (top-r SVD factors of the frozen weight, residual base; the
        initial model equals the base model and the saved adapter is converted to load on the
        original base). One-shot runs take ``fl.yoco.init``.""")


def _data_default(name: str) -> Any:
    """The data layer's default for ``data.<name>``, written once there: in the signature of
    :func:`fedmllm.data.build.federated_data`, or as an option the ``synth`` dataset declares
    (``task``, ``train_size``, ``test_size``)."""
    from .data.build import federated_data
    from .data.registry import get_dataset

    for opt in get_dataset("synth").options:
        if opt.name == name:
            return opt.default
    return inspect.signature(federated_data).parameters[name].default


@table
class DataConfig:
    dataset: str = key(_data_default("dataset"), """
        ``synth`` (built-in, offline), ``hateful_memes``, ``crisismmd`` or ``medical`` (VQA-RAD
        + SLAKE + MedAlpaca) in their published layouts under ``data_dir``; any dataset
        registered with ``fedmllm.data.register_dataset``.""", choices=_buildable_datasets)
    task: Annotated[Literal[TASKS], Lenient] = key(_data_default("task"), """
        Synthetic benchmark task (``synth`` only).""")
    data_dir: str | None = key(None, """
        The dataset's folder (real datasets; see docs/datasets.md).""")
    prepared: str | None = key(None, """
        A folder written by ``fedmllm prepare`` (overrides the options below).""")
    scenario: Annotated[Literal[SCENARIOS], Lenient] = key(_data_default("scenario"), """
        Modality scenario: ``aligned`` (every sample image+text), ``missing`` (each sample loses
        image or text with rate ``missing_rate``), ``cross`` (``image_clients`` clients
        image-only, the rest text-only), ``hybrid`` (each client holds each modality with
        probability ``presence``).""")
    missing_rate: float = key(_data_default("missing_rate"), """
        ``missing``: the rate beta at which a sample loses one modality.""", ge=0, le=1)
    image_clients: int = key(_data_default("image_clients"),
                             "``cross``: how many clients hold images only.")
    presence: float = key(_data_default("presence"), """
        ``hybrid``: the probability p that a client holds each modality.""", ge=0, le=1)
    prompt_strategy: Annotated[Literal[PROMPT_STRATEGIES], Lenient] = key(
        _data_default("prompt_strategy"), """
        ``plain`` prompts, or ``agnostic`` (FedMLLM's modality-agnostic prompt: ", without
        considering the modality").""")
    partition: Annotated[Literal[PARTITIONS], Lenient] = key(_data_default("partition"), """
        Label skew over clients: ``dirichlet`` (concentration ``alpha``) or ``iid``.""")
    alpha: float = key(_data_default("alpha"),
                       "Dirichlet concentration (smaller = more skewed).", gt=0)
    min_per_client: int = key(_data_default("min_per_client"),
                              "Fewest training samples a client may get from the partition.")
    train_size: int = key(_data_default("train_size"),
                          "``synth``: training samples generated (shared over the clients).")
    test_size: int = key(_data_default("test_size"), "``synth``: test samples generated.")
    skip_bad_samples: bool = key(False, """
        Drop the samples whose image is bad (missing, empty, truncated, not an image, a
        decompression bomb, a folder, an unsupported mode) instead of refusing the data; the
        count and each file are recorded in the data manifest (``skipped``).""")


@table
class ClientConfig:
    objective: str = key("auto", """
        The client objective: ``auto`` = the algorithm's own client side (``prox`` for fedprox,
        ``scaffold`` for scaffold, ``ce`` otherwise), or ``ce``, ``prox``, ``adaptive_prox``,
        ``scaffold``.""")
    prox_mu: float = key(0.01, "mu of the proximal term (``prox``, ``adaptive_prox``).")
    mu_w: float = key(0.1, "``adaptive_prox``: weight of the proximal term on the middle layers.")
    s_layer: int = key(4, "``adaptive_prox``: layers ``s_layer .. L-1-s_layer`` are regularised.")


@table
class AttackConfig:
    """Poisoning attacks by chosen clients (:mod:`fedmllm.fl.attacks`), to measure how a server
    rule holds up. Multi-round runs only; every key but ``kind`` needs ``kind != none``."""

    kind: Annotated[Literal["none", "sign_flip", "scale", "noise", "label_flip"], Lenient] = key(
        "none", """
        ``none``; the malicious clients' updates ``y = x + d`` become: ``sign_flip``
        ``x - flip_factor d``, ``scale`` ``x + scale_factor d``, ``noise`` ``x + N(0,
        noise_std^2 I)``; ``label_flip`` trains them on their own samples with each class ``l``
        of ``K`` relabelled ``K - 1 - l`` (multiple-choice tasks).""")
    fraction: float | None = key(None, """
        Share of ``fl.num_clients`` that is malicious (rounded half up), the clients drawn once
        from the run's seed; or give ``clients``.""", ge=0.0, lt=1.0)
    clients: list[int] | None = key(None, "The malicious clients' ids, instead of ``fraction``.")
    flip_factor: float = key(4.0, """
        ``sign_flip``: ``k`` in ``y = x - k d`` (Li et al. 2019's sign-flipping attack sends
        -4 times the honest message).""", gt=0.0)
    scale_factor: float = key(10.0, """
        ``scale``: ``k`` in ``y = x + k d`` (Bagdasaryan et al. 2020's model replacement boosts
        by ``n / eta``: 10 clients, server rate 1).""", gt=0.0)
    noise_std: float = key(200.0, """
        ``noise``: per-coordinate std of the Gaussian that replaces the update (Blanchard et al.
        2017's Gaussian Byzantine clients, 200); ``fl.max_update_norm`` rejects a large one.""",
        gt=0.0)


@table
class YocoConfig:
    """One-shot federated LoRA (``fl.algorithm = "yoco"`` or ``"oneshot"``), see
    :mod:`fedmllm.runtime.oneshot`. Every client trains once and uploads once; the server merges
    once."""

    method: str = key("yoco", """
        ``yoco`` (the paper); a one-shot baseline: ``fedavg`` (sample-weighted), ``mean``, one
        application of ``fedavgm``/``fedadam``/``fedadagrad``/``fedyogi`` (``fl.strategy``
        params), ``combine`` (B by ``merge_b``, A by ``merge_a``); a product merge of ``B_i
        A_i``:
        ``exact``/``task_arithmetic``/``magnitude_prune``/``ties``/``dare_linear``/``dare_ties``
        (re-factorized to rank ``lora.r``); ``ensemble`` (no merge: averaged option
        probabilities of all client adapters); ``local`` (mean/std of the client models).""",
        choices=_oneshot_methods)
    variant: Annotated[Literal["init", "init_b", "init_ba", "full"], Lenient] = key("full", """
        Paper ablation (method ``yoco``): SVD init; + sign penalty on B; + sparse A; + PCA A.""")
    init: Annotated[Literal["auto", "pissa", "code", "default"], Lenient] = key("auto", """
        ``pissa``: peft PiSSA (SVD factors + residual base: initial model = base model);
        ``code``: released code (B0 from SVD, A0 random, no residual); ``default``: peft's
        zero-B LoRA. ``auto``: ``pissa`` for method ``yoco``, ``default`` for the baselines.""")
    targets: Annotated[Literal["auto", "paper", "lora"], Lenient] = key("auto", """
        ``paper``: r 8, alpha 8, dropout 0.05 on the last LM layer's ``q_proj``; ``lora``: the
        ``lora.*`` keys as given; ``auto``: ``paper`` when every ``lora.*`` key is at its
        default.""")
    a_penalty: Annotated[Literal["l1", "orthogonal"], Lenient] = key("l1", """
        The penalty on A: ``l1`` (the paper's sparsity) or ``orthogonal`` (the released code's).""")
    lam: float = key(1e-3, "Weight of the L1 penalty on A (paper: 1e-4 .. 1e-1).")
    gamma_min: float = key(1.0, """
        Soft-sign sharpness at the first local step (cosine ramp to ``gamma_max``).""")
    gamma_max: float = key(50.0, "Soft-sign sharpness at the last local step.")
    local_epochs: float = key(10.0, "Fixed local epochs (paper 10); no selection on the test set.")
    select_epochs: list[float] | None = key(None, """
        Candidate local epoch counts (e.g. ``[5, 10]``, the paper's pair). Each client holds out
        ``val_fraction`` of its own samples, trains one adapter per candidate from the same
        start (each exactly as a fixed-epoch run would) and uploads the one with the lowest loss
        on its held-out split. ``None``: the fixed ``local_epochs``, all samples trained on.""")
    select_lr: list[float] | None = key(None, """
        Candidate client learning rates (e.g. ``[1e-3, 3e-3, 1e-2]``), crossed with
        ``select_epochs`` (or the fixed ``local_epochs``): each client trains one adapter per
        candidate on all but its held-out ``val_fraction`` and uploads the one with the lowest
        held-out loss, so each client picks its own rate without the test set. ``None``: the
        run's ``train.lr``.""")
    val_fraction: float = key(0.2, """
        Fraction of each client's samples held out for ``select_epochs``/``select_lr`` (at least
        one).""")
    upload_cache: str | None = key(None, """
        A folder where one-shot runs share their clients' uploads: a run whose *training* is the
        same as an earlier one's (every key but the merge's -- ``method`` where it does not
        change the training, ``merge_*``, ``params_*``, ``pca_*``, ``density``,
        ``product_rank``, ``fl.strategy`` -- and ``eval.*``/``output.*``) loads those uploads
        instead of training again, so a study of merges trains once (``fedmllm bench`` sets it
        with ``[bench] share_uploads``). Files are safetensors and JSON, written atomically
        under a lock.""")
    merge_b: str = key("fedavg", """
        Rule for B (and for A in variants ``init``/``init_b``/``init_ba``): fedavg, mean,
        fedavgm, fedadam, fedadagrad, fedyogi (``fl.strategy`` params).""")
    merge_a: str = key("pca", """
        Rule for A in variant ``full`` and in ``combine``: pca, fedavg, mean, fedavgm, ...""")
    fedopt_step: Annotated[Literal["research", "textbook"], Lenient] = key("research", """
        The one-shot step of the adaptive rules (``fedadam``, ``fedyogi``, ``fedadagrad``, as a
        method or a ``merge_*`` rule). ``research`` (default): the YOCO research code's, where
        every momentum buffer equals the delta at round 0: ``m = D`` (the unweighted mean
        delta), ``v`` from ``tau^2`` (FedAdam: ``beta2 tau^2 + (1 - beta2) D^2``), ``x0 + eta m
        / (sqrt(v) + tau)``, no bias correction (the rules' ``fedmllm`` variant, default
        ``eta`` 1e-3); ``textbook``: Flower's first step, ``m = (1 - beta1) D_w = 0.1 D_w``,
        ``v`` from 0, bias-corrected (the ``textbook`` variant, default ``eta`` 0.1). A
        ``variant`` in ``fl.strategy``/``params_*`` must agree.""")
    params_a: dict[str, Any] | None = key(None, """
        Parameters of the rule for A (e.g. ``{momentum: 0.9}``); ``None``: ``fl.strategy``.""")
    params_b: dict[str, Any] | None = key(None, """
        Parameters of the rule for B (and other keys); ``None``: ``fl.strategy``.""")
    pca_k: float | None = key(None, """
        Components kept: None = all, int = count, float in (0, 1) = explained variance.""")
    pca_weighting: Annotated[Literal["energy", "max", "mean"], Lenient] = key("energy", """
        How ``pca`` merges each principal component's coordinates: ``energy`` (clients weighted
        by their share of the component's energy), ``max`` (the most extreme client), ``mean``.""")
    pca_power: float = key(2.0, """
        ``energy`` weighting: a client's weight on a component is ``|coordinate|^pca_power``
        normalised over the clients (2 = its share of the energy).""")
    pca_center: bool = key(True, """
        Centre the clients' A matrices on their (weighted) mean before the decomposition (the
        components describe how the clients differ) or decompose them as they are.""")
    pca_sample_weighted: bool = key(True, """
        Weight the clients by their example counts in the ``pca`` merge (else equally).""")
    density: float = key(0.5, "Kept fraction for ``ties``/``dare_*``/``magnitude_prune``.")
    product_rank: Annotated[Literal["auto", "client", "full"], Lenient] = key("auto", """
        Rank of a product merge's result: ``full`` (method ``exact`` only) keeps the exact
        weighted mean of ``B_i A_i`` as one rank-``N r`` LoRA (lossless); ``client``
        re-factorizes the merged product to the clients' rank ``r`` by truncated SVD; ``auto``:
        ``full`` for ``exact``, ``client`` for the others.""")


@table
class SecAggConfig:
    """SecAgg+ (Bell et al., CCS 2020) over Flower, ``fl.secure_aggregation = true``: Flower's
    ``SecAggPlusWorkflow`` parameters, see :mod:`fedmllm.runtime.flower.secagg`."""

    num_shares: int | float = key(1.0, """
        Shares each client's secrets are split into, one per neighbour: an integer > 2, or a
        fraction of the round's clients (1.0: every client is every other's neighbour).""")
    reconstruction_threshold: int | float = key(0.5, """
        Shares that rebuild a secret (at least 2): an integer below ``num_shares``, or a
        fraction of them. A round survives while every client keeps this many live
        neighbours; that many colluding neighbours and the server could unmask a client.""")
    clipping_range: float = key(1.0, """
        Each coordinate of a client's update ``y - x`` is clipped to ``[-c, c]`` before it is
        quantized (a LoRA delta of the tiny model stays below 0.03; a node warns when a
        coordinate is clipped).""", gt=0)
    quantization_range: int = key(4194304, """
        Integers a coordinate is quantized to (2**22): the step is ``2 c / quantization_range``
        (see docs/flower.md for the error of the mean).""", ge=2)
    modulus_range: int = key(4294967296, """
        The masks' modulus (2**32), a power of 2 above ``clients x quantization_range`` so the
        masked sum does not wrap.""", ge=2)
    timeout: float | None = key(None, """
        Seconds the server waits for each of the protocol's four stages (the second includes
        the local training); ``None``: ``fl.round_timeout``.""", gt=0)


@table
class PrivacyConfig:
    """Client-level differential privacy (``fl.privacy``), see :mod:`fedmllm.fl.privacy` and
    docs/algorithms.md."""

    mechanism: Annotated[Literal["none", "central_server", "central_client", "central_adaptive",
                                 "local"], Lenient] = key("none", """
        ``none``; central DP on a mean-based rule with fixed clipping on the server
        (``central_server``) or on the clients (``central_client``), with adaptive clipping
        (``central_adaptive``, Andrew et al. 2021); ``local``: every client clips and noises
        its own update before upload (any multi-round rule).""")
    noise_multiplier: float = key(0.0, """
        sigma: the noise std is ``sigma C / m`` on the mean of the m sampled clients (central)
        or ``sigma C`` on each upload (local). 0 = clipping only (epsilon = inf).""", ge=0)
    clipping_norm: float | None = key(None, """
        C: every update's delta is clipped to this L2 norm over the whole adapter (for
        ``central_adaptive`` the initial C). Needed by every mechanism.""", gt=0)
    delta: float = key(1e-5, "The delta at which epsilon is reported (and solved for).",
                       gt=0, lt=1)
    target_epsilon: float | None = key(None, """
        Solve ``noise_multiplier`` before the run starts so that epsilon after ``fl.rounds``
        rounds is this (dp-accounting's calibration); the solved value is used and recorded.""",
        gt=0)
    sampling: Annotated[Literal["without_replacement", "poisson"], Lenient] = key(
        "without_replacement", """
        The accountant's model of client sampling: ``without_replacement`` (what the sampler
        does; replace-one adjacency, sensitivity 2C) or ``poisson`` (add/remove-one,
        sensitivity C: the DP-FedAvg papers' convention, an approximation here).""")
    target_quantile: float = key(0.5, """
        ``central_adaptive``: the quantile of the update norms C tracks (fraction unclipped).""",
        ge=0, le=1)
    clip_lr: float = key(0.2, "``central_adaptive``: the geometric step of C.", gt=0)
    clipped_count_stddev: float | None = key(None, """
        ``central_adaptive``: std of the noise on the unclipped count; ``None`` = ``m / 20``
        (Flower's and the paper's default) when sigma > 0.""", ge=0)


@table
class FLConfig:
    algorithm: str = key("fedavg", """
        Server strategy: fedavg, fedprox, fedavgm, fedadagrad, fedadam, fedyogi, scaffold,
        median, trimmed_mean, krum, multikrum, bulyan; the baselines local (local-only), zeroshot
        and centralized (all clients' data pooled, the same optimizer steps and evaluation: the
        upper bound); or yoco / oneshot (one-shot runs, see ``fl.yoco``).""")
    # constant answer on the synthetic task, whatever the local steps.
    # 24 short rounds: under the default label skew FedAvg needs about 12 rounds to leave the
    rounds: int = key(24, "Communication rounds.", ge=0)
    num_clients: int = key(10, "Clients the training data is partitioned over.", ge=1)
    clients_per_round: int = key(4, "Clients sampled (without replacement) in every round.", ge=1)
    local_steps: int = key(6, """
        Optimizer steps per client per round (ignored when ``local_epochs`` is set).""", ge=1)
    local_epochs: float | None = key(None, """
        Local epochs per client per round instead of ``local_steps`` (``None``: use
        ``local_steps``).""")
    local_clients: Annotated[Literal["all", "sampled"], Lenient] = key("all", """
        Local-only training (``fl.algorithm = local``): which clients train in a round. ``all``
        (default): every client in every round, as the FedMLLM research code's local baseline
        trains its client in every round; ``sampled``: only the ``clients_per_round`` sampled
        that round (a fraction of the compute: the run header and ``summary.json``'s
        ``compute`` say how much). Only local-only runs take ``sampled``.""")
    client: ClientConfig = section(ClientConfig, "The client objective and its parameters.")
    strategy: dict[str, Any] = key({}, """
        Extra keyword arguments for the server strategy (``eta``, ``momentum`` ...).""")
    max_update_norm: float | Annotated[Literal["auto", "none"], Lenient] | None = key("auto", """
        Reject a client update ``y`` whose distance to the global adapter ``x`` exceeds this
        bound: a number is an absolute bound on ``||y - x||_2``; ``auto`` (default) is ``100 *
        max(||x||_2, 1)``, far above any update local training gives but below the overflow of
        the server optimizers; ``none`` (or null) checks nothing.""")
    attack: AttackConfig = section(AttackConfig, """
        Poisoning attacks by chosen clients (the robustness benchmark).""")
    min_clients: int = key(1, """
        Skip the round (global unchanged) when fewer valid updates than this arrive.""", ge=1)
    round_timeout: float = key(600.0, """
        Flower runs: seconds the server waits for a round's replies; clients that have not
        replied by then are recorded as ``dropped`` and the round goes on without them.""", gt=0)
    secure_aggregation: bool = key(False, """
        Flower runs: aggregate through SecAgg+ (``fl.secagg``); the server sees only the mean
        update of the clients that survived the round, never one client's. Multi-round
        FedAvg-family rules only (see docs/flower.md).""")
    secagg: SecAggConfig = section(SecAggConfig, "SecAgg+ (``fl.secure_aggregation``).")
    checkpoint_every: int = key(1, """
        Write ``<output.dir>/checkpoint/`` every N rounds (one-shot runs: after every client); 0
        = never. ``fedmllm run --resume DIR`` continues from the last complete checkpoint.""", ge=0)
    yoco: YocoConfig = section(YocoConfig, """
        One-shot settings (``fl.algorithm = "yoco"`` / ``"oneshot"``).""")
    privacy: PrivacyConfig = section(PrivacyConfig, """
        Client-level differential privacy and its accountant.""")

    def trained_per_round(self) -> int:
        """How many clients train in each round: every client for local-only training with
        ``local_clients = all`` (the FedMLLM research code's local baseline trains its client
        in every round, ``get_clients_this_round``), else ``clients_per_round`` (at most
        ``num_clients``)."""
        if self.algorithm == "local" and self.local_clients == "all":
            return self.num_clients
        return min(self.clients_per_round, self.num_clients)


@table
class TrainConfig:
    device: str = key("auto", "``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1`` ...")
    batch_size: int = key(8, "Samples per micro-batch.", ge=1)
    grad_accum: int = key(1, "Micro-batches per optimizer step.", ge=1)
    optimizer: Annotated[Literal["auto", "adamw", "sgd"], Lenient] = key("auto", """
        Client optimizer, fresh for every client in every round: ``auto`` = ``sgd`` for scaffold
        (its control-variate estimate assumes SGD steps, as in the paper), ``adamw`` otherwise.""")
    lr: float | None = key(None, """
        Client learning rate (before the schedules); ``None`` = the optimizer's default:
        ``adamw`` 5e-3, ``sgd`` 0.5.""", gt=0)
    weight_decay: float = key(0.0, "Weight decay of the client optimizer.")
    max_seq_len: int = key(256, "Token length a sample is cut to.")
    lr_schedule: Annotated[Literal["constant", "cosine"], Lenient] = key("cosine", """
        Round-level schedule: the base rate of each round (see ``fedmllm.fl.round_lr``).""")
    warmup_rounds: int = key(1, "Rounds of linear warm-up of the round-level rate.")
    min_lr_ratio: float = key(0.2, "The round-level cosine ends at ``lr * min_lr_ratio``.")
    local_lr_schedule: Annotated[Literal["constant", "cosine"], Lenient] = key("constant", """
        Schedule inside each client's local run, applied to the round's rate (see
        ``fedmllm.fl.local_lr``); ``cosine`` with ``local_warmup_ratio=0.01`` is what the
        FedMLLM and YOCO research code do (Hugging Face's cosine schedule in every local run).""")
    local_warmup_ratio: float = key(
        0.0, "Share of a local run's steps with a linear warm-up.", ge=0, lt=1)
    grad_clip: float | None = key(1.0, """
        Clip the norm of the loss gradient (task + penalties) before the SCAFFOLD correction is
        added; ``None`` = no clipping.""")
    gradient_checkpointing: bool = key(False, """
        Recompute each layer's activations in the backward pass instead of keeping them (Hugging
        Face activation checkpointing, non-reentrant, dropout masks replayed): much less
        activation memory for about one more forward pass of compute; the same loss and
        gradients.""")
    autocast: Annotated[Literal["auto", "bf16", "off"], Lenient] = key("auto", """
        Mixed precision of the forward passes (training and evaluation): ``auto`` = bf16
        autocast on a CUDA device that supports bf16, none elsewhere (CPU runs stay float32 and
        bit-reproducible); ``bf16`` = required (an error where unsupported); ``off`` = compute
        in the weights' dtype (``model.dtype``).""")


@table
class EvalConfig:
    every: int = key(
        6, "Evaluate the global model every N rounds (and always after the last).", ge=1)
    batch_size: int = key(32, "Test samples per forward pass.")
    max_samples: int | None = key(None, "Evaluate only the first N test samples (``None``: all).")
    views: list[Annotated[Literal["image_text", "image_only", "text_only"], Lenient]] = key(
        ["image_text", "image_only", "text_only"], """
        Modality views of the test set to evaluate (the first one gives the headline numbers).""")
    client_holdout: float = key(0.0, """
        Client-side evaluation (multi-round runs, simulated or over Flower, where each node
        holds out and scores its own samples): hold out this fraction of every
        client's training samples (drawn from the seed; at least one sample stays for training)
        and, whenever the test set is evaluated, score the global model on each client's own
        held-out samples as the client holds them (its modalities), reported per client and as
        mean, std, min and max (``client_eval`` in ``metrics.jsonl`` and ``summary.json``;
        local-only runs: each client's own adapter). 0 = off (all samples train).""", ge=0, lt=1)
    threshold: Annotated[Literal["fixed", "calibrated"], Lenient] = key("fixed", """
        The binary decision beside the fixed one (class 1 when its option probability is the
        larger): ``calibrated`` also reports ``accuracy_calibrated`` at the threshold ``t`` on
        ``p1 / (p0 + p1)`` with the most correct answers on the clients' held-out samples
        (``eval.client_holdout`` > 0; each client sends counts per candidate, never a
        sample; ties go to the candidate nearest 0.5), and ``threshold``, in ``metrics.jsonl``
        and ``summary.json`` (local-only: each client's own). Multi-round runs, binary tasks
        scored by option probabilities; the fixed figures are unchanged.""")


@table
class OutputConfig:
    dir: str | None = key(None, """
        Output folder; ``None`` = ``runs/<algorithm>-<dataset>-<YYYYmmdd-HHMMSS>`` (new,
        unique).""")
    plot: bool = key(True, "Write ``metrics.png``.")
    progress: bool = key(True, "Show the progress bar and the per-round lines.")
    tensorboard: bool = key(False, """
        Also write TensorBoard event files to ``<output.dir>/tensorboard/`` (scalars per round
        and view; needs ``pip install 'fedmllm[tensorboard]'``).""")


@table
class Config:
    model: ModelConfig = section(ModelConfig, "The base model.")
    lora: LoraConfig = section(LoraConfig, "The LoRA adapter.")
    data: DataConfig = section(DataConfig, """
        The dataset, its partition over clients and the modality scenario.""")
    fl: FLConfig = section(FLConfig, """
        The federation: algorithm, rounds, clients, client objective, one-shot settings.""")
    train: TrainConfig = section(TrainConfig, "Local training of each client.")
    eval: EvalConfig = section(EvalConfig, "Evaluation on the test set.")
    output: OutputConfig = section(OutputConfig, "Where and how results are written.")
    seed: int = key(0, """
        Every random draw of the run derives from it (data, LoRA init, batches, dropout,
        sampling).""")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml())


# ----------------------------------------------------------------------------- the keys

@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _leaves(cls: type = Config, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """``(dotted key, field, type)`` for every key under ``cls``, in declaration order."""
    for name, f in _fields(cls).items():
        tp = _hints(cls)[name]
        if dataclasses.is_dataclass(tp):
            yield from _leaves(tp, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", f, tp


@dataclass(frozen=True)
class Declared:
    """One key's declaration, as a command-line option built from it needs it."""

    type: Any
    default: Any
    choices: tuple | None
    """The ``Literal`` choices (of the items, for a list), else ``None``."""
    doc: str


def declared(dotted: str) -> Declared:
    """The declaration of the key ``dotted`` (``"data.alpha"``), for options that mirror it."""
    for name, f, tp in _leaves():
        if name == dotted:
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            return Declared(tp, default, _choices(f, tp), f.metadata["description"])
    raise KeyError(dotted)


def _choices(f: dataclasses.Field, tp: Any) -> tuple | None:
    """The key's choices (its items', for a list): a registry's names now, or its ``Literal``."""
    if "choices" in f.metadata:
        return f.metadata["choices"]()
    item = get_args(tp)[0] if get_origin(tp) is list else tp
    return get_args(item) if get_origin(item) is Literal else None


def _is_table(tp: Any) -> bool:
    return get_origin(tp) is dict or any(get_origin(a) is dict for a in get_args(tp))


#: The keys whose value is a table of free keys (``fl.strategy``, ``fl.yoco.params_a`` ...):
#: a value, not a table of configuration keys.
TABLE_KEYS = frozenset(k for k, _, tp in _leaves() if _is_table(tp))


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"fl": {"rounds": 8}}`` -> ``{"fl.rounds": 8}``: nested tables joined with dots, but
    the table-valued keys (:data:`TABLE_KEYS`) stay whole: they are values."""
    out: dict[str, Any] = {}
    for name, value in tree.items():
        dotted = f"{prefix}.{name}" if prefix else str(name)
        if isinstance(value, Mapping) and dotted not in TABLE_KEYS:
            out.update(flatten(value, dotted))
        else:
            out[dotted] = value
    return out


# ----------------------------------------------------------------------------- type checking

@functools.cache
def _adapter() -> TypeAdapter:
    return TypeAdapter(Config)


def _validated(data: dict) -> Config:
    """``data`` (a full tree) type-checked into a :class:`Config`, or one :class:`ConfigError`.

    pydantic's strict mode reads a table as a nested dataclass only from JSON input, hence the
    JSON text. The first error is reported: an unknown key, else a wrong type, else a bound."""
    try:
        cfg = _adapter().validate_json(json.dumps(data, default=_not_json), strict=True)
    except ValidationError as e:
        first = min(e.errors(), key=lambda x: (x["type"] != "unexpected_keyword_argument",
                                               x["type"] in _BOUND_ERRORS))
        raise _error(first, data) from None
    for name, f, _ in _leaves():  # names a registry holds: checked against it now
        if "choices" in f.metadata:
            *path, leaf = name.split(".")
            node = functools.reduce(getattr, path, cfg)
            options, value = f.metadata["choices"](), getattr(node, leaf)
            same = [o for o in options if o.lower() == value.lower()]
            if not same:
                raise _not_a_choice(name, options, value)
            setattr(node, leaf, same[0] if value not in options else value)
    return cfg


def _not_json(value: Any) -> dict:
    """A YAML value JSON lacks (a date ...): a table, which no scalar key accepts."""
    return {"": repr(value)}


_BOUND_ERRORS = ("greater_than_equal", "greater_than", "less_than_equal", "less_than")


def _error(err: Any, data: dict) -> ConfigError:
    """The existing one-line message for one pydantic error: the key, what it expects, what it
    got (and a "did you mean" for a misspelt key or choice)."""
    cls, tp, value, field, parts = Config, Config, data, None, []
    for item in err["loc"]:  # down the tree; a union member's tag ends the walk
        if isinstance(item, int) and get_origin(tp) is list:
            parts[-1] += f"[{item}]"
            tp, value = get_args(tp)[0], value[item]
        elif dataclasses.is_dataclass(tp) and item in _fields(tp):
            cls, field = tp, _fields(tp)[item]
            parts.append(item)
            tp, value = _hints(cls)[item], value[item]
        else:
            break
    where = ".".join(parts)
    if err["type"] == "unexpected_keyword_argument":
        leaf = err["loc"][-1]
        full = f"{where}.{leaf}" if where else leaf
        return ConfigError(f"unknown config key '{full}'{_key_hint(leaf, _fields(tp), where)}")
    if field is not None and err["type"] in _BOUND_ERRORS:
        return ConfigError(f"{where}: must be {_bounds_text(field.metadata)}")
    if get_origin(tp) is Literal:
        return _not_a_choice(where, get_args(tp), value)
    return ConfigError(f"{where}: expected {_expected(tp)}, got {value!r}")


def _not_a_choice(where: str, options: tuple, value: Any) -> ConfigError:
    close = difflib.get_close_matches(str(value).lower(), [str(o).lower() for o in options], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    choices = ", ".join(repr(o) for o in options)
    return ConfigError(f"{where}: expected one of {choices}, got {value!r}{hint}")


def _expected(tp: Any) -> str:
    """What a value of the declared type ``tp`` is, in words."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        return str(tp).replace("typing.", "")
    if get_origin(tp) is dict or dataclasses.is_dataclass(tp):
        return "a table/mapping"
    words = {list: "a list", float: "a number", int: "an integer", bool: "true/false",
             str: "a string", type(None): "null"}
    return words.get(get_origin(tp) or tp, str(tp))


def _bounds_text(meta: Mapping[str, Any]) -> str:
    """``">= 1"``, ``"> 0"``, ``"in [0, 1)"`` from a key's declared bounds."""
    lo = next(((op, meta[op]) for op in ("ge", "gt") if op in meta), None)
    hi = next(((op, meta[op]) for op in ("le", "lt") if op in meta), None)
    if lo and hi:
        return (f"in {'[' if lo[0] == 'ge' else '('}{lo[1]}, "
                f"{hi[1]}{']' if hi[0] == 'le' else ')'}")
    op, bound = lo or hi
    return f"{BOUNDS[op]} {bound}"


def _key_hint(key: str, names: typing.Iterable[str], prefix: str = "") -> str:
    """``"; did you mean 'fl.rounds'?"`` for the closest of the keys beside ``key``, or ``""``."""
    close = difflib.get_close_matches(str(key), sorted(names), n=1)
    if not close:
        return ""
    return f"; did you mean '{prefix + '.' if prefix else ''}{close[0]}'?"


# ----------------------------------------------------------------------------- loading

class _Loader(yaml.SafeLoader):
    """YAML with 1.2's floats: YAML 1.1 reads ``1e-3`` (no dot, or no exponent sign) as text."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"))


def _merge(base: dict, upd: dict, prefix: str = "") -> dict:
    """``upd`` over ``base``, table by table (a table-valued key is replaced whole)."""
    out = dict(base)
    for k, v in upd.items():
        dotted = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict) and isinstance(out.get(k), dict) and dotted not in TABLE_KEYS:
            out[k] = _merge(out[k], v, dotted)
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
            data = yaml.load(text, Loader=_Loader) or {}
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


def _set(data: dict, keys: list[str], value: Any) -> None:
    """``data[keys[0]][keys[1]]... = value``; a table on the way must exist."""
    node = data
    for i, k in enumerate(keys[:-1]):
        nxt = node.get(k) if isinstance(node, dict) else None
        if not isinstance(nxt, dict):
            hint = _key_hint(k, node, ".".join(keys[:i])) if isinstance(node, dict) else ""
            raise ConfigError(f"unknown config key '{'.'.join(keys[: i + 1])}'{hint}")
        node = nxt
    node[keys[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> Config:
    """Defaults, then the file (if any), then the overrides, type-checked as a whole."""
    data: dict = Config().to_dict()
    if path is not None:
        data = _merge(data, _read_file(Path(path)))
    for item in overrides:
        _set(data, *parse_override(item))
    try:
        return _validated(data)
    except ConfigError as e:
        if path is not None and "unknown config key" in str(e):
            raise ConfigError(f"{path}: {e}") from None
        raise


def config_from_yaml(text: str, source: str = "configuration") -> Config:
    """A configuration from YAML text (e.g. ``Config.to_yaml()`` sent to a Flower client)."""
    try:
        data = yaml.load(text, Loader=_Loader) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: cannot parse: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping")
    return _validated(_merge(Config().to_dict(), data))


# ----------------------------------------------------------------------------- documentation

def field_docs() -> dict[str, str]:
    """``"fl.rounds" -> "Communication rounds."`` for every key of the tree (the reference of
    ``fedmllm config show --doc``)."""
    return {k: f.metadata["description"] for k, f, _ in _leaves()}


def _type_text(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " / ".join(str(a) for a in get_args(tp))
    if get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_text(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    return str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _kind(f: dataclasses.Field, tp: Any) -> str:
    """A key's type as the reference shows it: a registry's names now, else its type."""
    return " / ".join(_choices(f, tp)) if "choices" in f.metadata else _type_text(tp)


def doc_table(cfg: Config | None = None) -> str:
    """Every key with its type, value (``cfg``'s, or the default) and meaning, as Markdown
    (``fedmllm config show --doc --format markdown``, the docs page's reference)."""
    values = flatten((cfg or Config()).to_dict())
    rows = ["| key | type | value | meaning |", "|---|---|---|---|"]
    for key, f, tp in _leaves():
        doc = f.metadata["description"].replace("|", "\\|")
        rows.append(f"| `{key}` | {_kind(f, tp)} | `{json.dumps(values.get(key))}` | {doc} |")
    return "\n".join(rows)


def doc_text(cfg: Config | None = None, width: int = 80) -> str:
    """Every key with its type, value and meaning, for a terminal ``width`` columns wide
    (``fedmllm config show --doc``): a heading per section (``[model]``, ``[fl.client]``;
    keys outside any under ``[top level]``), in declaration order; under it each key as
    ``key = value (default ...)  [type]`` and its doc indented below. No line is longer than
    ``width`` (at least 30): words longer than a line are broken."""
    values, defaults = flatten((cfg or Config()).to_dict()), flatten(Config().to_dict())
    width = max(width, 30)
    head = textwrap.TextWrapper(width, initial_indent="  ", subsequent_indent="      ")
    body = textwrap.TextWrapper(width, initial_indent="      ", subsequent_indent="      ")
    sections: dict[str, list[str]] = {}
    for key, f, tp in _leaves():
        value = json.dumps(values.get(key))
        if values.get(key) != defaults.get(key):
            value += f" (default {json.dumps(defaults.get(key))})"
        doc = f.metadata["description"].replace("``", "")
        lines = head.wrap(f"{key} = {value}  [{_kind(f, tp)}]") + body.wrap(doc)
        sections.setdefault(key.rpartition(".")[0] or "top level", []).extend(lines)
    return "\n\n".join("\n".join([f"[{name}]", *lines]) for name, lines in sections.items())
