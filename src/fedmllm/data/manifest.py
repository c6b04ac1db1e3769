"""The manifest: a JSON-able description of a :class:`~fedmllm.data.types.FederatedData`.

:func:`make_manifest` records the format tag (:data:`MANIFEST_FORMAT`), the task, the
parameters and seed that produced the data, the scenario's own record (which clients hold
which modality, ...), the counts per client and per test set (:func:`count_summary`) and the
items skipped as bad input. :mod:`fedmllm.data.prepared` writes it as ``manifest.json``;
:mod:`fedmllm.data.stats` prints the same counts.
"""

from __future__ import annotations

from collections import Counter

from .types import MODALITIES, FederatedData, Sample

MANIFEST_FORMAT = "fedmllm-data/1"

__all__ = ["MANIFEST_FORMAT", "count_summary", "make_manifest"]


def _label_key(s: Sample) -> str:
    if s.options is not None and s.label is not None:
        return s.options[s.label]
    if s.options is not None:
        return "unlabelled"
    return str(s.meta.get("source", s.task))


def count_summary(samples: list[Sample]) -> dict:
    """``{"samples", "labels": {name: n}, "modalities": {image_text, image_only, text_only,
    none}}``; labels are option names (multiple choice) or the source dataset (QA); modality
    is :attr:`Sample.input_modality`."""
    labels = Counter(_label_key(s) for s in samples)
    mods = Counter(s.input_modality for s in samples)
    return {
        "samples": len(samples),
        "labels": dict(sorted(labels.items())),
        "modalities": {m: mods.get(m, 0) for m in MODALITIES},
    }


def make_manifest(data: FederatedData, params: dict, scenario_info: dict,
                  skipped: list[dict]) -> dict:
    """The manifest of ``data``: ``params`` (the arguments and seed that built it), the
    scenario's ``info`` and the ``skipped`` bad items (``{"file", "where", "reason"}``)."""
    return {
        "format": MANIFEST_FORMAT,
        "task": data.task.to_dict(),
        "params": params,
        "num_clients": len(data.clients),
        "scenario": scenario_info,
        "clients": [dict(client=k, **count_summary(c)) for k, c in enumerate(data.clients)],
        "test": count_summary(data.test),
        "extra_tests": {name: count_summary(v) for name, v in data.extra_tests.items()},
        "skipped": {"count": len(skipped), "items": skipped},
    }
