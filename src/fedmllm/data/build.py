"""The data layer's one dataset switch: clients' training data, the test set, task info, manifest.

:func:`build_federated_data` (from the typed config; loads ``cfg.prepared`` when set) and
:func:`federated_data` (plain arguments) read or generate the dataset, partition the training
set over the clients, apply the modality scenario to the clients (the test set keeps image and
text), and describe the result in a JSON-able manifest (:mod:`fedmllm.data.manifest`).
:func:`prepare` builds the data and writes it as a prepared folder
(:mod:`fedmllm.data.prepared`).

- Multiple-choice datasets (``synth`` binary/multiclass, ``hateful_memes``, ``crisismmd``):
  Dirichlet label skew or IID split, then ``aligned`` / ``missing`` / ``cross`` / ``hybrid``.
- Question-answer datasets (``synth`` vqa, ``medical``): the image VQA samples and the
  text-only QA samples are two *datasets*, as in FedMLLM's medical setting (VQA-RAD +
  MedAlpaca, arXiv 2411.14717); ``aligned`` gives every client an equal share of both,
  ``cross``/``hybrid`` decide per client which dataset(s) it holds, ``missing`` is not defined
  (a VQA question without its image is ill-posed).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import DataError
from .manifest import make_manifest
from .partition import dirichlet_partition, iid_partition
from .prepared import load_prepared, write_prepared
from .prompts import MC_TEMPLATES
from .readers import (
    TEST_SPLITS,
    check_images,
    read_crisismmd,
    read_hateful_memes,
    read_medalpaca,
    read_slake,
    read_vqa_rad,
)
from .scenarios import (
    SCENARIOS,
    apply_scenario,
    medical_aligned,
    medical_cross,
    medical_hybrid,
)
from .synth import TASK_NAMES, make_synth
from .types import DATASETS, FederatedData, Sample, TaskInfo

if TYPE_CHECKING:  # the config module is only needed for the annotation
    from ..config import DataConfig

__all__ = [
    "build_federated_data",
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


def _need_dir(data_dir, dataset: str) -> Path:
    if not data_dir:
        raise DataError(f"data.data_dir: required for dataset {dataset!r}")
    p = Path(data_dir)
    if not p.is_dir():
        raise DataError(f"{p}: data directory not found")
    return p


def federated_data(
    dataset: str = "synth",
    num_clients: int = 10,
    seed: int = 0,
    *,
    task: str = "binary",
    data_dir: str | Path | None = None,
    scenario: str = "aligned",
    missing_rate: float = 0.5,
    image_clients: int = 3,
    presence: float = 0.7,
    prompt_strategy: str = "plain",
    partition: str = "dirichlet",
    alpha: float = 0.5,
    min_per_client: int = 2,
    train_size: int = 2000,
    test_size: int = 400,
    verify_images: bool = True,
    skip_bad: bool = False,
    vqa_rad_dir: str | Path | None = None,
    medalpaca_dir: str | Path | None = None,
    slake_dir: str | Path | None = None,
    synth_params: dict | None = None,
) -> FederatedData:
    """Build the federated data with plain arguments (see :func:`build_federated_data`).

    ``train_size``/``test_size`` and ``task`` apply to ``synth`` only. ``medical`` reads
    ``data_dir/vqa_rad``, ``data_dir/medalpaca`` and, if present, ``data_dir/slake`` (each
    overridable). ``verify_images`` checks every image path's header; ``skip_bad`` skips bad
    items (counted in ``manifest["skipped"]``) instead of raising :class:`DataError`.
    """
    if dataset not in DATASETS:
        raise DataError(f"data.dataset: unknown dataset {dataset!r} (expected {DATASETS})")
    if scenario not in SCENARIOS:
        raise DataError(f"data.scenario: unknown scenario {scenario!r} (expected {SCENARIOS})")
    if prompt_strategy not in ("plain", "agnostic"):
        raise DataError(f"data.prompt_strategy: unknown strategy {prompt_strategy!r}")
    if num_clients < 1:
        raise DataError(f"fl.num_clients: must be >= 1, got {num_clients}")
    params: dict[str, Any] = {
        "dataset": dataset, "num_clients": num_clients, "seed": seed, "scenario": scenario,
        "prompt_strategy": prompt_strategy, "verify_images": verify_images,
        "skip_bad": skip_bad,
    }
    if scenario == "missing":
        params["missing_rate"] = missing_rate
    elif scenario == "cross":
        params["image_clients"] = image_clients
    elif scenario == "hybrid":
        params["presence"] = presence
    skipped: list[dict] = []
    extra: dict[str, list[Sample]] = {}

    def checked(samples: list[Sample], source: str) -> list[Sample]:
        if not verify_images:
            return samples
        kept, bad = check_images(samples, skip_bad=skip_bad, source=source)
        skipped.extend(bad)
        return kept

    qa = dataset == "medical" or (dataset == "synth" and task == "vqa")
    if dataset == "synth":
        params.update(task=task, train_size=train_size, test_size=test_size)
        if synth_params:
            params["synth_params"] = dict(synth_params)
        try:
            train, test = make_synth(task, train_size, test_size, seed, **(synth_params or {}))
        except ValueError as e:
            raise DataError(f"data.task: {e}") from None
        name = TASK_NAMES[task]
        if qa:
            image_data = [s for s in train if s.image is not None]
            text_data = [s for s in train if s.image is None]
    elif dataset in ("hateful_memes", "crisismmd"):
        root = _need_dir(data_dir, dataset)
        params["data_dir"] = str(root.absolute())
        reader = read_hateful_memes if dataset == "hateful_memes" else read_crisismmd
        test_split = TEST_SPLITS[dataset]
        params["test_split"] = test_split
        r_train = reader(root, "train", skip_bad=skip_bad)
        r_test = reader(root, test_split, skip_bad=skip_bad)
        skipped += r_train.skipped + r_test.skipped
        train = checked(r_train.samples, dataset)
        test = checked(r_test.samples, dataset)
        name = dataset
    else:  # medical
        root = Path(data_dir) if data_dir else None
        if root is None and not (vqa_rad_dir and medalpaca_dir):
            raise DataError("data.data_dir: required for dataset 'medical'")
        vdir = Path(vqa_rad_dir) if vqa_rad_dir else root / "vqa_rad"
        mdir = Path(medalpaca_dir) if medalpaca_dir else root / "medalpaca"
        sdir = Path(slake_dir) if slake_dir else (root / "slake" if root else None)
        params.update(vqa_rad_dir=str(vdir.absolute()), medalpaca_dir=str(mdir.absolute()))
        r_v = read_vqa_rad(vdir, "train", skip_bad=skip_bad)
        r_vt = read_vqa_rad(vdir, "test", skip_bad=skip_bad)
        r_m = read_medalpaca(mdir, skip_bad=skip_bad)
        skipped += r_v.skipped + r_vt.skipped + r_m.skipped
        image_data = checked(r_v.samples, "vqa_rad")
        text_data = r_m.samples
        test = checked(r_vt.samples, "vqa_rad")
        if sdir is not None and (sdir / "Slake1.0" / "test.json").is_file():
            params["slake_dir"] = str(sdir.absolute())
            r_s = read_slake(sdir, "test", skip_bad=skip_bad)
            skipped += r_s.skipped
            extra["slake"] = checked(r_s.samples, "slake")
        name = "medical"

    if qa:
        result = _qa_scenario(image_data, text_data, num_clients, scenario, image_clients,
                              presence, seed)
        info = TaskInfo(name, "vqa", None, prompt_strategy)
        params["partition"] = "equal"
    else:
        params.update(partition=partition, min_per_client=min_per_client)
        if partition == "dirichlet":
            params["alpha"] = alpha
        clients = _partition_mc(train, num_clients, partition, alpha, min_per_client, seed)
        try:
            result = apply_scenario(clients, scenario, seed, missing_rate=missing_rate,
                                    image_clients=image_clients, presence=presence)
        except ValueError as e:
            raise DataError(f"data.scenario: {e}") from None
        info = TaskInfo(name, "mc", MC_TEMPLATES[name].options, prompt_strategy)
    data = FederatedData(result.clients, list(test), info, {}, extra)
    data.manifest = make_manifest(data, params, result.info, skipped)
    return data


def build_federated_data(cfg: DataConfig, num_clients: int, seed: int, *, verify_images: bool = True,
                         skip_bad: bool = False) -> FederatedData:
    """The runtime's entry point: ``cfg`` is the config's ``DataConfig``.

    ``cfg.prepared`` set: load that folder (written by :func:`prepare`;
    its client count must equal ``num_clients``). Otherwise build from ``cfg.dataset``.
    """
    if cfg.prepared:
        data = load_prepared(cfg.prepared)
        if len(data.clients) != num_clients:
            raise DataError(
                f"{cfg.prepared}: prepared for {len(data.clients)} clients but "
                f"fl.num_clients = {num_clients}"
            )
        return data
    return federated_data(
        cfg.dataset, num_clients, seed, task=cfg.task, data_dir=cfg.data_dir,
        scenario=cfg.scenario, missing_rate=cfg.missing_rate, image_clients=cfg.image_clients,
        presence=cfg.presence, prompt_strategy=cfg.prompt_strategy, partition=cfg.partition,
        alpha=cfg.alpha, min_per_client=cfg.min_per_client, train_size=cfg.train_size,
        test_size=cfg.test_size, verify_images=verify_images, skip_bad=skip_bad,
    )



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
    """Build the federated data (same options as :func:`federated_data`: ``task``,
    ``scenario``, ``missing_rate``, ``image_clients``, ``presence``, ``prompt_strategy``,
    ``partition``, ``alpha``, ``min_per_client``, ``train_size``, ``test_size``,
    ``verify_images``, ``skip_bad``, ``vqa_rad_dir``, ``medalpaca_dir``, ``slake_dir``) and
    write it to ``out`` (:func:`~fedmllm.data.prepared.write_prepared`). Returns the
    manifest."""
    data = federated_data(dataset, num_clients, seed, data_dir=data_dir, **options)
    write_prepared(data, out, overwrite=overwrite)
    return data.manifest
