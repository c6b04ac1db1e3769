"""The built-in synthetic benchmark as a dataset: templates and spec (the generator is
:mod:`fedmllm.data.synth`).

Its options: ``task`` (``binary`` and ``multiclass`` are multiple choice, ``vqa`` is question
answering: image VQA plus text-only QA), ``train_size``, ``test_size`` and, from Python only,
``synth_params`` (the generator's parameters, e.g. ``single_ceiling``). No folder is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import DataError
from ..prompts import SYNTH_BINARY_OPTIONS, SYNTH_MULTICLASS_OPTIONS, MCTemplate
from ..reading import ReadResult
from ..registry import DatasetOption, DatasetSpec, Loaded, Source
from ..synth import TASK_NAMES, TASKS, make_synth

TEMPLATES = {
    "synth_binary": MCTemplate("Is the content unsafe", SYNTH_BINARY_OPTIONS),
    "synth_multiclass": MCTemplate(
        "What is the scene category", SYNTH_MULTICLASS_OPTIONS, both_phrase="the image and text"
    ),
}

__all__ = ["SPEC", "TEMPLATES"]


def _kind(options: Mapping[str, Any]) -> str:
    return "qa" if options.get("task") == "vqa" else "mc"


def _build(source: Source) -> Loaded:
    o = source.options
    task, extra = o["task"], o["synth_params"]
    source.params.update(task=task, train_size=o["train_size"], test_size=o["test_size"])
    if extra:
        source.params["synth_params"] = dict(extra)
    try:
        train, test = make_synth(
            task, o["train_size"] if source.wants("train") else 0,
            o["test_size"] if source.wants("test") else 0, source.seed,
            lazy=source.part == "train", **(extra or {}))
    except ValueError as e:
        raise DataError(f"data.task: {e}") from None
    return Loaded(TASK_NAMES[task], _kind(o), train, test)


def _read(source: Source, split: str) -> ReadResult:
    """The test set of ``task`` (``test_size`` samples of ``seed``; ``split`` is ignored)."""
    o = source.options
    return ReadResult(make_synth(o["task"], 0, o["test_size"], source.seed)[1])


SPEC = DatasetSpec(
    name="synth", kind=_kind, doc="the built-in synthetic benchmark (offline)",
    build=_build, read=_read, templates=TEMPLATES, reads_folder=False,
    options=(
        DatasetOption("task", "synth task", default="binary", choices=TASKS),
        DatasetOption("train_size", "synth only", type=int, default=2000),
        DatasetOption("test_size", "synth only", type=int, default=400),
        DatasetOption("synth_params", "the generator's parameters", type=dict, cli=False),
    ),
)
