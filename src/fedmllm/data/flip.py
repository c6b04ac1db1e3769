"""Label flipping, the data-poisoning attack of ``fl.attack.kind = "label_flip"``.

Tolpegin et al., "Data Poisoning Attacks Against Federated Learning Systems" (ESORICS 2020):
a malicious participant trains on its own samples with each label mapped to another class.
Here class ``l`` of a task with ``K`` classes becomes ``K - 1 - l`` (0 <-> 1 for a binary
task; the middle class of an odd ``K`` stays), and the supervised answer string is rewritten
to the new option (:func:`~fedmllm.data.prompts.mc_answer`), so every multiple-choice dataset
(the synthetic tasks, Hateful Memes, CrisisMMD) is flipped through the fields it shares. A task
without classes (free-form VQA and QA answers) is refused in one line.
"""

from __future__ import annotations

from dataclasses import replace

from .errors import DataError
from .prompts import mc_answer
from .types import Sample

__all__ = ["flip_labels"]


def flip_labels(samples: list[Sample]) -> list[Sample]:
    """``samples`` with ``label = K - 1 - label`` and the answer of that option
    (``K = len(options)``); a :class:`DataError` for a sample without classes."""
    out = []
    for s in samples:
        if s.options is None or s.label is None:
            raise DataError(f"fl.attack.kind: label_flip needs a task with classes; sample "
                            f"{s.id!r} of task {s.task!r} has a free-form answer")
        label = len(s.options) - 1 - s.label
        out.append(replace(s, label=label, answer=mc_answer(s.options, label)))
    return out
