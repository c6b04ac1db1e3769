"""The dataset registry: a dataset is one file plus one registration line.

In the style of peft's ``register_peft_method``: a module describes its dataset with a frozen
:class:`DatasetSpec` (its name, kind, reader, default test split, prompt templates, options and
how to build its federated train/test data) and one line registers it::

    # src/fedmllm/data/datasets/hateful_memes.py: the reader, the template and
    SPEC = DatasetSpec(name="hateful_memes", kind="mc", doc="...", read=..., build=...,
                       test_split="test_seen", templates={"hateful_memes": TEMPLATE})

    # src/fedmllm/data/datasets/__init__.py
    register_dataset(hateful_memes.SPEC)

(:func:`mc_folder_spec` writes that spec for a multiple-choice dataset in one folder with a
``train`` and a test split: ``mc_folder_spec("hateful_memes", "...", read, TEMPLATE,
"test_seen")``.)

How callers use it:

- **choices** (``data.dataset``, ``fedmllm prepare --dataset``): :func:`dataset_names`
  ``("build")``; ``fedmllm eval --dataset``: :func:`dataset_names` ``("eval")``.
- **a dataset's own options** (``synth``'s ``task``/``train_size``/``test_size``,
  ``medical``'s ``vqa_rad_dir``/``medalpaca_dir``/``slake_dir``): :func:`dataset_options`
  lists every registered dataset's :class:`DatasetOption` once (``flag``, ``type``,
  ``default``, ``choices``, ``help``; ``cli=False`` ones get no flag); pass the values as
  keywords to :func:`fedmllm.data.build.prepare` / :func:`~fedmllm.data.build.federated_data`
  (``None`` values are dropped there, so an unset flag means the option's default).
- **building** (``prepare``, ``data.dataset``): :func:`fedmllm.data.build.federated_data`
  looks the name up and calls ``spec.build(source)`` with a :class:`Source`; the spec returns a
  :class:`Loaded` (training samples, test set, extra test sets, task name and kind), which the
  build layer partitions and gives its modality scenario.
- **reading one split** (``fedmllm eval --dataset X --data-dir D --split S``):
  :func:`read_split` (``S`` of ``None``/``"test"`` is the spec's :attr:`~DatasetSpec.test_split`;
  images are checked); :attr:`DatasetSpec.reads_folder` says whether ``--data-dir`` is needed.
- **prompts**: a multiple-choice dataset's :attr:`~DatasetSpec.templates` are added to
  :data:`fedmllm.data.prompts.MC_TEMPLATES` on registration (by sample task name), so
  :func:`~fedmllm.data.prompts.build_prompt` and prepared folders find them.

Unknown names are one line with a "did you mean" and the known names (:func:`get_dataset`);
registering a name twice is refused (:func:`register_dataset`); tests remove what they added
with :func:`unregister_dataset`. The built-in datasets are registered when
:mod:`fedmllm.data` is imported (by :mod:`fedmllm.data.datasets`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DataError
from .prompts import MC_TEMPLATES, MCTemplate
from .reading import ReadResult, bad_samples_message, check_images
from .types import Sample

KINDS = ("mc", "qa")
"""Multiple choice (scored on the options) or question answering (free-form answers)."""

PURPOSES = ("build", "eval")

__all__ = [
    "KINDS",
    "DatasetOption",
    "DatasetSpec",
    "Loaded",
    "Source",
    "dataset_names",
    "dataset_options",
    "get_dataset",
    "mc_folder_spec",
    "read_split",
    "register_dataset",
    "train_test_build",
    "unregister_dataset",
]


@dataclass(frozen=True)
class DatasetOption:
    """An option of one dataset: a keyword of ``federated_data``/``prepare`` and a CLI flag.

    ``type`` converts a flag's string (``str``, ``int``, ``float``); ``default`` applies when
    the option is not given; ``cli=False`` keeps it a Python-only keyword (no flag).
    """

    name: str
    help: str
    type: type = str
    default: Any = None
    choices: tuple | None = None
    cli: bool = True

    @property
    def flag(self) -> str:
        """``--vqa-rad-dir`` for ``vqa_rad_dir``."""
        return "--" + self.name.replace("_", "-")


@dataclass
class Source:
    """What a dataset's ``build``/``read`` gets: its folder, its options (defaults filled),
    the seed, the bad-item policy (``skip_bad``, and ``skip_hint``: the option that sets it,
    named in the error), the ``part`` a build needs (``"all"``; ``"train"``: the training
    samples only, a generator's images left :class:`~fedmllm.data.synth.PendingImage`;
    ``"test"``: the test sets only; a build may ignore it and return everything); and what
    building collects: the manifest ``params`` the dataset adds
    to, the ``skipped`` bad items, and the bad images not skipped (raised by :meth:`finish`)."""

    dataset: str
    data_dir: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    skip_bad: bool = False
    verify_images: bool = True
    params: dict[str, Any] = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)
    skip_hint: str | None = "skip_bad=True"
    bad: list[dict] = field(default_factory=list)
    decoded: dict[str, str | None] = field(default_factory=dict)
    part: str = "all"

    def wants(self, part: str) -> bool:
        """Whether the build needs the ``train`` or the ``test`` part."""
        return self.part in ("all", part)

    def root(self) -> Path:
        """The data folder, which must exist (``data.data_dir`` is named otherwise)."""
        if not self.data_dir:
            raise DataError(f"data.data_dir: required for dataset {self.dataset!r}")
        p = Path(self.data_dir)
        if not p.is_dir():
            raise DataError(f"{p}: data directory not found")
        return p

    def take(self, result: ReadResult) -> list[Sample]:
        """A reader's samples. Its bad items (the built-in datasets read with ``skip_bad=True``,
        so a file's every bad item is there) go to ``skipped`` with ``skip_bad``, else to
        ``bad`` for :meth:`finish`; items it passed over by design (``"passed_over"``, e.g.
        MedAlpaca's incomplete cards) to ``skipped``."""
        for item in result.skipped:
            keep = self.skip_bad or item.get("passed_over", False)
            (self.skipped if keep else self.bad).append(item)
        return result.samples

    def checked(self, samples: list[Sample], part: str) -> list[Sample]:
        """``samples`` whose image files decode in full (unless ``verify_images`` is off); bad
        ones are dropped and collected, tagged with ``part`` (the dataset, or the part of a
        composite: ``vqa_rad``, ``slake``): in ``skipped`` with ``skip_bad``, else in ``bad``
        for :meth:`finish`. Each image file is decoded once per source (``decoded``)."""
        if not self.verify_images:
            return samples
        kept, bad = check_images(samples, skip_bad=True, source=part, decoded=self.decoded)
        (self.skipped if self.skip_bad else self.bad).extend(bad)
        return kept

    def finish(self) -> None:
        """Raise one :class:`DataError` listing every bad item and image :meth:`take` and
        :meth:`checked` collected (over all splits and parts) and naming ``skip_hint``;
        nothing when there is none."""
        if self.bad:
            raise DataError(bad_samples_message(self.bad, self.skip_hint))


@dataclass
class Loaded:
    """What a dataset's ``build`` returns: the training samples (for ``qa``, the image VQA
    samples and the text-only QA samples, told apart by ``image``), the test set, further
    test sets by name, the task name (:class:`~fedmllm.data.types.TaskInfo`'s ``name``; for
    ``mc`` the key of its template) and the kind (``mc`` or ``qa``)."""

    task: str
    kind: str
    train: list[Sample]
    test: list[Sample]
    extra_tests: dict[str, list[Sample]] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class DatasetSpec:
    """One dataset, as the config, the CLI and the build layer see it.

    - ``name``: the config / CLI name (``data.dataset``, ``--dataset``);
    - ``kind``: ``"mc"`` or ``"qa"``, or a function of the options giving it (``synth``'s
      ``task``);
    - ``doc``: one line for help texts and docs;
    - ``build(source) -> Loaded``: the federated train/test data (``None``: not buildable on
      its own, e.g. MedAlpaca, a part of ``medical``);
    - ``read(source, split) -> ReadResult``: one split's samples (``None``: no split reader);
    - ``test_split``: the split a plain ``test`` means (Hateful Memes: ``test_seen``);
    - ``templates``: multiple-choice prompt templates by sample task name;
    - ``options``: the dataset's own options (:class:`DatasetOption`);
    - ``reads_folder``: whether it needs ``data_dir``;
    - ``eval``: whether ``fedmllm eval --dataset`` offers it (it needs ``read``).
    """

    name: str
    kind: str | Callable[[Mapping[str, Any]], str]
    doc: str
    build: Callable[[Source], Loaded] | None = None
    read: Callable[[Source, str], ReadResult] | None = None
    test_split: str = "test"
    templates: Mapping[str, MCTemplate] = field(default_factory=dict)
    options: tuple[DatasetOption, ...] = ()
    reads_folder: bool = True
    eval: bool = True

    def kind_of(self, options: Mapping[str, Any]) -> str:
        """``mc`` or ``qa`` for these options."""
        return self.kind(options) if callable(self.kind) else self.kind

    def with_defaults(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Its own options from ``options`` (unset or ``None``: the default)."""
        return {o.name: o.default if options.get(o.name) is None else options[o.name]
                for o in self.options}

    def supports(self, purpose: str) -> bool:
        """Whether it can be built (``build``) or read by ``fedmllm eval`` (``eval``)."""
        if purpose == "build":
            return self.build is not None
        return self.read is not None and self.eval


def train_test_build(read: Callable[[Source, str], ReadResult], test_split: str = "test",
                     kind: str = "mc") -> Callable[[Source], Loaded]:
    """The ``build`` of a dataset read from one folder with a ``train`` split and a test split:
    both read with ``read``, images checked, ``data_dir`` and ``test_split`` recorded; the task
    name is the dataset's name."""
    def build(source: Source) -> Loaded:
        root = source.root()
        source.params.update(data_dir=str(root.absolute()), test_split=test_split)
        train = source.take(read(source, "train")) if source.wants("train") else []
        test = source.take(read(source, test_split)) if source.wants("test") else []
        return Loaded(source.dataset, kind, source.checked(train, source.dataset),
                      source.checked(test, source.dataset))

    return build


def mc_folder_spec(name: str, doc: str, read: Callable[[Source, str], ReadResult],
                   template: MCTemplate, test_split: str = "test") -> DatasetSpec:
    """The spec of a multiple-choice dataset read from one folder with a ``train`` split and
    a test split (CrisisMMD, Hateful Memes): built by :func:`train_test_build` with the same
    ``test_split`` the spec records, its prompt template under its own name."""
    return DatasetSpec(name=name, kind="mc", doc=doc, read=read,
                       build=train_test_build(read, test_split), test_split=test_split,
                       templates={name: template})


_DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` (and its prompt templates); a name or template already taken is refused."""
    if spec.name in _DATASETS:
        raise ValueError(f"dataset {spec.name!r} is already registered")
    taken = [t for t in spec.templates if t in MC_TEMPLATES]
    if taken:
        raise ValueError(f"dataset {spec.name!r}: prompt template {taken[0]!r} already exists")
    if not callable(spec.kind) and spec.kind not in KINDS:
        raise ValueError(f"dataset {spec.name!r}: kind must be one of {KINDS}, got {spec.kind!r}")
    _DATASETS[spec.name] = spec
    MC_TEMPLATES.update(spec.templates)
    return spec


def unregister_dataset(name: str) -> DatasetSpec:
    """Remove dataset ``name`` and its prompt templates (tests that registered one)."""
    spec = get_dataset(name)
    del _DATASETS[name]
    for task in spec.templates:
        MC_TEMPLATES.pop(task, None)
    return spec


def get_dataset(name: str, purpose: str | None = None) -> DatasetSpec:
    """The spec registered as ``name`` (and, with ``purpose``, accepted for it: see
    :func:`dataset_names`); otherwise a one-line :class:`DataError` with the closest name and
    the known ones."""
    names = dataset_names(purpose)
    if isinstance(name, str) and name in names:
        return _DATASETS[name]
    close = difflib.get_close_matches(str(name), list(names), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    what = (f"unknown dataset {name!r}" if name not in _DATASETS
            else f"dataset {name!r} is not offered for {purpose}")
    raise DataError(f"data.dataset: {what}{hint} (choices: {', '.join(names)})")


def dataset_names(purpose: str | None = None) -> tuple[str, ...]:
    """Registered names in registration order: all, or those that ``purpose`` accepts
    (``"build"``: ``data.dataset`` and ``prepare``; ``"eval"``: ``fedmllm eval --dataset``)."""
    if purpose is not None and purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
    return tuple(n for n, s in _DATASETS.items() if purpose is None or s.supports(purpose))


def dataset_options(purpose: str | None = None) -> tuple[DatasetOption, ...]:
    """Every option declared by the datasets of :func:`dataset_names` ``(purpose)``, once by
    name (first declaration wins), in registration order."""
    seen: dict[str, DatasetOption] = {}
    for name in dataset_names(purpose):
        for opt in _DATASETS[name].options:
            seen.setdefault(opt.name, opt)
    return tuple(seen.values())


def read_split(name: str, data_dir: str | Path | None = None, split: str | None = None, *,
               seed: int = 0, skip_bad: bool = False, check: bool = True,
               skip_hint: str | None = None, **options: Any) -> list[Sample]:
    """The samples of one split of dataset ``name`` (``None`` or ``"test"``: its
    :attr:`~DatasetSpec.test_split`), images checked unless ``check=False``; every bad row
    and image in one :class:`DataError` (naming ``skip_hint``, the option that skips them,
    if the caller has one), or dropped with ``skip_bad``; ``options`` are the dataset's own
    (``synth``: ``task``, ``test_size``)."""
    spec = get_dataset(name)
    if spec.read is None:
        raise DataError(f"dataset {name!r} has no split reader")
    if split is None or split == "test":
        split = spec.test_split
    source = Source(name, Path(data_dir) if data_dir else None, spec.with_defaults(options),
                    seed, skip_bad, skip_hint=skip_hint)
    samples = source.take(spec.read(source, split))
    if check:
        samples = source.checked(samples, name)
    source.finish()
    return samples
