"""Clients' training data, the test set, task info and manifest, for any registered dataset.

:func:`build_federated_data` (from the typed config; loads ``cfg.prepared`` when set) and
:func:`federated_data` (plain arguments) look the dataset up in the registry
(:mod:`fedmllm.data.registry`), let its spec read or generate it, partition the training set
over the clients, apply the modality scenario to the clients (the test set keeps image and
text), and describe the result in a JSON-able manifest (:mod:`fedmllm.data.manifest`).
:func:`prepare` builds the data and writes it as a prepared folder
(:mod:`fedmllm.data.prepared`).

- Multiple-choice datasets (kind ``mc``: ``synth`` binary/multiclass, ``hateful_memes``,
  ``crisismmd``): Dirichlet label skew or IID split, then ``aligned`` / ``missing`` /
  ``cross`` / ``hybrid``.
- Question-answer datasets (kind ``qa``: ``synth`` vqa, ``medical``): the image VQA samples and the
  text-only QA samples are two *datasets*, as in FedMLLM's medical setting (VQA-RAD +
  MedAlpaca, arXiv 2411.14717); ``aligned`` gives every client an equal share of both,
  ``cross``/``hybrid`` decide per client which dataset(s) it holds, ``missing`` is not defined
  (a VQA question without its image is ill-posed).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from .errors import DataError
from .manifest import make_manifest
from .partition import dirichlet_partition, iid_partition
from .prepared import load_prepared, load_prepared_client, write_prepared
from .prompts import MC_TEMPLATES, STRATEGIES
from .registry import Loaded, Source, dataset_options, get_dataset
from .scenarios import (
    SCENARIOS,
    ScenarioResult,
    apply_scenario,
    medical_aligned,
    medical_cross,
    medical_hybrid,
)
from .synth import PendingImage
from .types import FederatedData, Sample, TaskInfo

__all__ = [
    "build_client_data",
    "build_federated_data",
    "build_test_data",
    "federated_data",
    "prepare",
]


# ----------------------------------------------------------------------------- building


def _partition_mc(train: list[Sample], num_clients: int, partition: str, alpha: float,
                  min_per_client: int, seed: int) -> list[list[Sample]]:
    ids = [s.id for s in train]
    try:
        if partition == "dirichlet":
            parts = dirichlet_partition([s.label for s in train], num_clients, alpha, seed,
                                        min_per_client=min_per_client, keys=ids)
        elif partition == "iid":
            parts = iid_partition(len(train), num_clients, seed, min_per_client=min_per_client,
                                  keys=ids)
        else:
            raise DataError(f"data.partition: unknown partition {partition!r}")
    except ValueError as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"partition: {e}") from None
    return [[train[i] for i in p] for p in parts]


def _qa_scenario(image_data, text_data, num_clients, scenario, image_clients, presence, seed):
    if scenario == "aligned":
        return medical_aligned(image_data, text_data, num_clients, seed)
    if scenario == "cross":
        return medical_cross(image_data, text_data, num_clients, image_clients, seed)
    if scenario == "hybrid":
        return medical_hybrid(image_data, text_data, num_clients, presence, seed)
    if scenario == "missing":
        raise DataError(
            "data.scenario: 'missing' is not defined for VQA/QA data "
            "(use aligned, cross or hybrid)"
        )
    raise DataError(f"data.scenario: unknown scenario {scenario!r} (expected {SCENARIOS})")


def _dataset_source(dataset: str, num_clients: int, seed: int, data_dir, scenario: str,
                    prompt_strategy: str, verify_images: bool, skip_bad: bool,
                    skip_hint: str, options: dict[str, Any]) -> tuple:
    """The spec of ``dataset`` and its :class:`Source` (the manifest's first ``params``),
    after the arguments every dataset shares are checked."""
    spec = get_dataset(dataset, "build")
    if scenario not in SCENARIOS:
        raise DataError(f"data.scenario: unknown scenario {scenario!r} (expected {SCENARIOS})")
    if prompt_strategy not in STRATEGIES:
        raise DataError(f"data.prompt_strategy: unknown strategy {prompt_strategy!r}")
    if num_clients < 1:
        raise DataError(f"fl.num_clients: must be >= 1, got {num_clients}")
    known = {o.name for o in dataset_options()}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"federated_data: unknown option {unknown[0]!r} "
                        f"(the datasets' options: {', '.join(sorted(known))})")
    params: dict[str, Any] = {
        "dataset": dataset, "num_clients": num_clients, "seed": seed, "scenario": scenario,
        "prompt_strategy": prompt_strategy, "verify_images": verify_images,
        "skip_bad": skip_bad,
    }
    source = Source(dataset, Path(data_dir) if data_dir else None,
                    spec.with_defaults(options), seed, skip_bad, verify_images, params,
                    skip_hint=skip_hint)
    return spec, source


def _qa_clients(loaded: Loaded, params: dict, num_clients: int, seed: int, scenario: str,
                image_clients: int, presence: float) -> ScenarioResult:
    """Question answering: the image samples and the text-only samples are two datasets
    shared over the clients by the scenario (no label partition)."""
    image_data = [s for s in loaded.train if s.image is not None]
    text_data = [s for s in loaded.train if s.image is None]
    result = _qa_scenario(image_data, text_data, num_clients, scenario, image_clients,
                          presence, seed)
    params["partition"] = "equal"
    return result


def _mc_clients(loaded: Loaded, params: dict, num_clients: int, seed: int, scenario: str, *,
                partition: str, alpha: float, min_per_client: int, missing_rate: float,
                image_clients: int, presence: float, test_only: bool) -> ScenarioResult:
    """Multiple choice: a Dirichlet or IID label partition, then the modality scenario
    (``test_only``: no samples, the scenario's record only)."""
    params.update(partition=partition, min_per_client=min_per_client)
    if partition == "dirichlet":
        params["alpha"] = alpha
    clients = [[] for _ in range(num_clients)] if test_only else _partition_mc(
        loaded.train, num_clients, partition, alpha, min_per_client, seed)
    try:
        return apply_scenario(clients, scenario, seed, missing_rate=missing_rate,
                              image_clients=image_clients, presence=presence)
    except ValueError as e:
        raise DataError(f"data.scenario: {e}") from None


def _clients(loaded: Loaded, params: dict, num_clients: int, seed: int, scenario: str,
             prompt_strategy: str, part, knobs: dict) -> tuple[ScenarioResult, TaskInfo]:
    """The clients' samples (every client's, or only client ``part``'s rendered; none for
    ``"test"``) and the task, by the dataset's kind."""
    if loaded.kind == "qa":
        result = _qa_clients(loaded, params, num_clients, seed, scenario,
                             knobs["image_clients"], knobs["presence"])
        info = TaskInfo(loaded.task, "vqa", None, prompt_strategy)
    else:
        result = _mc_clients(loaded, params, num_clients, seed, scenario,
                             test_only=part == "test", **knobs)
        info = TaskInfo(loaded.task, "mc", MC_TEMPLATES[loaded.task].options, prompt_strategy)
    if part == "test":
        result.clients = []
    elif part != "all":
        own = _rendered(result.clients[part])
        result.clients = [[] for _ in range(num_clients)]
        result.clients[part] = own
    return result, info


def _rendered(samples: list[Sample]) -> list[Sample]:
    """``samples`` with their pending images rendered
    (:class:`~fedmllm.data.synth.PendingImage`)."""
    return [replace(s, image=s.image()) if isinstance(s.image, PendingImage) else s
            for s in samples]


def federated_data(
    dataset: str = "synth",
    num_clients: int = 10,
    seed: int = 0,
    *,
    data_dir: str | Path | None = None,
    scenario: str = "aligned",
    missing_rate: float = 0.5,
    image_clients: int = 3,
    presence: float = 0.7,
    prompt_strategy: str = "plain",
    partition: str = "dirichlet",
    alpha: float = 0.5,
    min_per_client: int = 2,
    verify_images: bool = True,
    skip_bad: bool = False,
    skip_hint: str = "skip_bad=True",
    part: str | int = "all",
    **options: Any,
) -> FederatedData:
    """Build the federated data with plain arguments (see :func:`build_federated_data`).

    ``dataset`` is a registered name (:func:`~fedmllm.data.registry.dataset_names`), built by
    its spec; ``options`` are the datasets' own (``synth``: ``task``, ``train_size``,
    ``test_size``, ``synth_params``; ``medical``: ``vqa_rad_dir``, ``medalpaca_dir``,
    ``slake_dir``; ``None`` means the default), and one another dataset declares is ignored.
    ``verify_images`` decodes every image file in full, once
    (:func:`~fedmllm.data.reading.image_problem`; generated images need no check);
    ``skip_bad`` skips bad items (counted in ``manifest["skipped"]``) instead of raising
    :class:`DataError`: one error that lists every bad row and image and names ``skip_hint``, the
    option that skips them (``--skip-bad`` for ``fedmllm prepare``).
    ``part``: ``"all"``; ``"test"``: the test sets, the task and a manifest whose ``clients``
    are empty, no training sample built; a client index ``k``: only ``clients[k]`` (the
    partition drawn from the training labels, the others' images never rendered), no test set.
    """
    if part not in ("all", "test") and not (isinstance(part, int) and 0 <= part < num_clients):
        raise DataError(f"client {part}: not one of the {num_clients} clients")
    spec, source = _dataset_source(dataset, num_clients, seed, data_dir, scenario,
                                   prompt_strategy, verify_images, skip_bad, skip_hint, options)
    params, source.part = source.params, part if part in ("all", "test") else "train"
    params.update({"missing": {"missing_rate": missing_rate},
                   "cross": {"image_clients": image_clients},
                   "hybrid": {"presence": presence}}.get(scenario, {}))
    loaded = spec.build(source)
    source.finish()
    if part == "test":
        loaded.train = []
    knobs = {"partition": partition, "alpha": alpha, "min_per_client": min_per_client,
             "missing_rate": missing_rate, "image_clients": image_clients, "presence": presence}
    result, info = _clients(loaded, params, num_clients, seed, scenario, prompt_strategy, part,
                            knobs)
    data = FederatedData(result.clients, list(loaded.test), info, {}, loaded.extra_tests)
    data.manifest = make_manifest(data, params, result.info, source.skipped)
    if part != "all":
        data.manifest.update(num_clients=num_clients, clients=[])
    return data


def _from_config(cfg: Any, num_clients: int, seed: int, verify_images: bool,
                 part: str | int) -> FederatedData:
    """:func:`federated_data` of the config's ``data`` table."""
    return federated_data(
        cfg.dataset, num_clients, seed, task=cfg.task, data_dir=cfg.data_dir,
        scenario=cfg.scenario, missing_rate=cfg.missing_rate, image_clients=cfg.image_clients,
        presence=cfg.presence, prompt_strategy=cfg.prompt_strategy, partition=cfg.partition,
        alpha=cfg.alpha, min_per_client=cfg.min_per_client, train_size=cfg.train_size,
        test_size=cfg.test_size, verify_images=verify_images, skip_bad=cfg.skip_bad_samples,
        skip_hint="data.skip_bad_samples=true", part=part,
    )


def _check_prepared(cfg: Any, n: int, num_clients: int) -> None:
    if n != num_clients:
        raise DataError(f"{cfg.prepared}: prepared for {n} clients but "
                        f"fl.num_clients = {num_clients}")


def build_federated_data(cfg: Any, num_clients: int, seed: int, *,
                         verify_images: bool = True) -> FederatedData:
    """The runtime's entry point: ``cfg`` is the config's ``data`` table
    (``fedmllm.config.DataConfig``; the data layer does not import the config, which reads its
    defaults from here).

    ``cfg.prepared`` set: load that folder (written by :func:`prepare`;
    its client count must equal ``num_clients``). Otherwise build from ``cfg.dataset``: every
    bad row and image is in one :class:`DataError`, unless ``cfg.skip_bad_samples`` skips them (and
    the manifest counts them).
    """
    if cfg.prepared:
        data = load_prepared(cfg.prepared)
        _check_prepared(cfg, len(data.clients), num_clients)
        return data
    return _from_config(cfg, num_clients, seed, verify_images, "all")


def build_client_data(cfg: Any, num_clients: int, seed: int, k: int, *,
                      verify_images: bool = True) -> list[Sample]:
    """Client ``k``'s training samples, equal to ``build_federated_data(cfg, num_clients,
    seed).clients[k]``, as one federation site builds them: the partition is drawn from the
    training labels (a generator's draws, a folder's annotations), then only client ``k``'s
    samples take their modality scenario and have their images rendered; no test set. With
    ``cfg.prepared``: that folder's ``client_<k>.json`` (the folder may hold only it)."""
    if cfg.prepared:
        return load_prepared_client(cfg.prepared, k)
    return _from_config(cfg, num_clients, seed, verify_images, k).clients[k]


def build_test_data(cfg: Any, num_clients: int, seed: int, *,
                    verify_images: bool = True) -> FederatedData:
    """What the server of a federation holds: the test set(s), the task and the manifest of
    :func:`build_federated_data` without any client's samples (``clients`` is empty, and so
    is the manifest's ``clients``, which the nodes' reports fill; its ``skipped`` lists the
    bad test items only). No training sample is built or read (a prepared folder's client
    files are not opened; it needs ``manifest.json``)."""
    if cfg.prepared:
        data = load_prepared(cfg.prepared, clients=False)
        _check_prepared(cfg, int(data.manifest.get("num_clients", 0)), num_clients)
        data.manifest = {**data.manifest, "clients": []}
        return data
    return _from_config(cfg, num_clients, seed, verify_images, "test")


def prepare(
    out: str | Path,
    dataset: str = "synth",
    data_dir: str | Path | None = None,
    *,
    num_clients: int = 10,
    seed: int = 0,
    overwrite: bool = False,
    **options: Any,
) -> dict:
    """Build the federated data (same options as :func:`federated_data`: ``scenario``,
    ``missing_rate``, ``image_clients``, ``presence``, ``prompt_strategy``, ``partition``,
    ``alpha``, ``min_per_client``, ``verify_images``, ``skip_bad`` and the datasets' own
    options, e.g. ``task``, ``train_size``, ``test_size``, ``vqa_rad_dir``,
    ``medalpaca_dir``, ``slake_dir``) and write it to ``out``
    (:func:`~fedmllm.data.prepared.write_prepared`). Returns the manifest."""
    data = federated_data(dataset, num_clients, seed, data_dir=data_dir, **options)
    write_prepared(data, out, overwrite=overwrite)
    return data.manifest
