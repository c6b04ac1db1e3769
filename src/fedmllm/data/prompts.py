"""Prompt templates, kept as data so the exact wording is visible and testable.

The wording shared by every task is here; each multiple-choice dataset's question and options
(an :class:`MCTemplate`) are in its file of :mod:`fedmllm.data.datasets` and join
:data:`MC_TEMPLATES` when it is registered (:mod:`fedmllm.data.registry`).

Multiple-choice tasks (Hateful-Memes, CrisisMMD, the synthetic ``binary``/``multiclass`` tasks)
use the template of the FedMLLM code (arXiv 2411.14717): an instruction sentence, the content
text (when present), the task question, the options block and a fixed suffix, one per line::

    Select the best answer to the following multiple-choice question based on the text and image.
    {text}
    Is the content hateful based on the text and image?
    Options:
    (A) not-hateful
    (B) hateful
    Answer with the option's letter from the given choices directly and only give the best
    option. The best answer is:␠

(the last line is one line).

The wording names the modalities present (``the text and image`` / ``the text`` / ``the image`` /
nothing). The *modality-agnostic* strategy of FedMLLM (``prompt_strategy = "agnostic"``) uses
``, without considering the modality`` in both the instruction and the question, for every
modality case. VQA and QA tasks use the raw question (preceded by the content text, if any).

:func:`build_prompt` returns the user text **without** the ``<image>`` marker (the model layer
inserts the image itself); :func:`to_conversation` produces the FedMLLM code's conversation
record, with ``<image>\\n`` in front of the user text when an image is given.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

from .types import Sample

STRATEGIES = ("plain", "agnostic")

INSTRUCTION = "Select the best answer to the following multiple-choice question"
SUFFIX = (
    "Answer with the option's letter from the given choices directly and only give the best "
    "option. The best answer is: "
)
AGNOSTIC = ", without considering the modality"
IMAGE_TOKEN = "<image>"
LETTERS = string.ascii_uppercase

# The phrase naming the modalities present, keyed by (has_image, has_text).
MODALITY_PHRASE = {
    (True, True): "the text and image",
    (False, True): "the text",
    (True, False): "the image",
    (False, False): None,
}


@dataclass(frozen=True)
class MCTemplate:
    """One multiple-choice task's wording.

    ``question`` is the bare question (no modality phrase, no ``?``); ``both_phrase`` is the
    modality phrase the *question* uses when text and image are both present (CrisisMMD's
    question says "the image and text" while its instruction says "the text and image").
    """

    question: str
    options: tuple[str, ...]
    both_phrase: str = "the text and image"


# The synthetic benchmark's options (its generator, :mod:`fedmllm.data.synth`, and the built-in
# model's corpus use them; its templates are in :mod:`fedmllm.data.datasets.synth`).
SYNTH_BINARY_OPTIONS = ("safe", "unsafe")
SYNTH_MULTICLASS_OPTIONS = (
    "warm_round_urgent",
    "warm_round_routine",
    "warm_square_urgent",
    "warm_square_routine",
    "cool_round_urgent",
    "cool_round_routine",
    "cool_square_urgent",
    "cool_square_routine",
)

MC_TEMPLATES: dict[str, MCTemplate] = {}
"""Every multiple-choice template by sample task name, filled by
:func:`fedmllm.data.registry.register_dataset` from the datasets' ``templates`` (registration
order: ``hateful_memes``, ``crisismmd``, ``synth_binary``, ``synth_multiclass``, then any
dataset registered later)."""


def is_multiple_choice(task: str) -> bool:
    return task in MC_TEMPLATES


def options_block(options: tuple[str, ...]) -> str:
    """``"\\n(A) first\\n(B) second"`` (begins with a newline, as in the FedMLLM code)."""
    if len(options) > len(LETTERS):
        raise ValueError(f"too many options ({len(options)})")
    return "".join(f"\n({LETTERS[i]}) {o}" for i, o in enumerate(options))


def mc_answer(options: tuple[str, ...], label: int) -> str:
    """The supervised target of a multiple-choice sample, e.g. ``"(B) hateful"``."""
    return f"({LETTERS[label]}) {options[label]}"


def _check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown prompt strategy {strategy!r} (expected one of {STRATEGIES})")


def mc_prompt(
    task: str, text: str | None, has_image: bool, strategy: str = "plain"
) -> str:
    """The multiple-choice user text for ``task`` with the given modalities present."""
    _check_strategy(strategy)
    tpl = MC_TEMPLATES[task]
    has_text = text is not None
    if strategy == "agnostic":
        instruction = f"{INSTRUCTION}{AGNOSTIC}."
        question = f"{tpl.question}{AGNOSTIC}?"
    else:
        phrase = MODALITY_PHRASE[(has_image, has_text)]
        if phrase is None:
            instruction = f"{INSTRUCTION}."
            question = f"{tpl.question}?"
        else:
            instruction = f"{INSTRUCTION} based on {phrase}."
            q_phrase = tpl.both_phrase if (has_image and has_text) else phrase
            question = f"{tpl.question} based on {q_phrase}?"
    lines = [instruction]
    if has_text:
        lines.append(text)
    lines.append(question)
    lines.append("Options:" + options_block(tpl.options))
    lines.append(SUFFIX)
    return "\n".join(lines)


def build_prompt(sample: Sample, strategy: str = "plain") -> str:
    """The user text for ``sample`` (no ``<image>`` marker).

    Multiple-choice tasks use the template of :data:`MC_TEMPLATES`; all other tasks (VQA, QA,
    pre-training) use the raw question, preceded by the content text on its own line if any.
    """
    if is_multiple_choice(sample.task):
        return mc_prompt(sample.task, sample.text, sample.has_image, strategy)
    _check_strategy(strategy)
    question = "" if sample.question is None else str(sample.question)
    if sample.text is not None:
        return f"{sample.text}\n{question}" if question else sample.text
    return question


def image_ref_string(image) -> str | None:
    """The JSON form of an image reference: an absolute path, or ``None``.

    In-memory images (the synthetic benchmark) have no path; they are written as ``None`` by
    the caller only if it saved them elsewhere -- here they raise, so nothing is lost silently.
    """
    if image is None:
        return None
    if isinstance(image, (str, Path)):
        return str(Path(image).absolute())
    raise TypeError("an in-memory image has no path; save it to a file first")


def to_conversation(sample: Sample, strategy: str = "plain", image_path: str | None = None) -> dict:
    """The FedMLLM code's conversation record for ``sample``.

    ``{"id", "image": absolute path | None, "conversations": [user, assistant]}`` with
    ``<image>\\n`` in front of the user text when an image is given. ``image_path`` overrides
    the sample's image reference (used for in-memory images saved to disk by ``prepare``).
    """
    image = image_path if image_path is not None else image_ref_string(sample.image)
    prompt = build_prompt(sample, strategy)
    user = f"{IMAGE_TOKEN}\n{prompt}" if image is not None else prompt
    return {
        "id": sample.id,
        "image": image,
        "conversations": [
            {"role": "user", "content": user},
            {"role": "assistant", "content": sample.answer},
        ],
    }
