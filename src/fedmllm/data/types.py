"""The data layer's types: the sample record and the federated-data container.

- :class:`Sample`: one supervised example, shared by every reader, scenario, prompt builder
  and collator; :data:`MODALITIES` names its modality cases and :func:`load_image` opens its
  image reference.
- :class:`TaskInfo`: what the model is asked to do (task name, multiple choice or free-form,
  options, prompt strategy).
- :class:`FederatedData`: the clients' training samples, the test set(s), the task and the
  manifest (see :mod:`fedmllm.data.manifest`).

A :class:`Sample`'s ``image`` and ``text`` are the two modalities of the *content* (a meme's
picture and caption, a tweet's photo and text); either may be ``None`` when a scenario removed
it or the source has none. ``question`` is the task question (for VQA the raw question, for
classification the task's question phrase is supplied by the prompt template), and ``answer``
is the supervised target string. Classification samples also carry ``label`` (class index into
``options``).

Images are referenced, not decoded: ``image`` is a filesystem path (``str``) for real datasets and
may be an in-memory ``PIL.Image.Image`` for the synthetic benchmark. :func:`load_image` opens it
lazily when a batch is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

MODALITIES = ("image_text", "image_only", "text_only", "none")

__all__ = ["MODALITIES", "FederatedData", "Sample", "TaskInfo", "load_image"]


@dataclass(frozen=True)
class Sample:
    id: str
    task: str
    answer: str
    question: str | None = None
    image: Any = None  # str path | PIL.Image.Image | None
    text: str | None = None
    label: int | None = None
    options: tuple[str, ...] | None = None
    answer_type: str | None = None  # "CLOSED" / "OPEN" for VQA
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def has_image(self) -> bool:
        return self.image is not None

    @property
    def has_text(self) -> bool:
        return self.text is not None

    @property
    def modality(self) -> str:
        """One of ``image_text``, ``image_only``, ``text_only``, ``none``."""
        if self.has_image and self.has_text:
            return "image_text"
        if self.has_image:
            return "image_only"
        if self.has_text:
            return "text_only"
        return "none"

    @property
    def input_modality(self) -> str:
        """What the model receives, for counting and per-modality reports.

        Multiple-choice samples (``options`` set): the same as :attr:`modality`. Question-answer
        samples (VQA, text QA, no ``options``): the question is text the model always sees, so
        ``image_text`` when an image is given, else ``text_only``.
        """
        if self.options is not None:
            return self.modality
        return "image_text" if self.has_image else "text_only"

    def with_modality(self, image: bool, text: bool) -> Sample:
        """A copy keeping the image and/or the text (``False`` drops it)."""
        return replace(
            self, image=self.image if image else None, text=self.text if text else None
        )


def load_image(ref: Any):
    """Open an image reference as an RGB ``PIL.Image`` (paths are read only here)."""
    from PIL import Image

    if ref is None:
        return None
    if isinstance(ref, Image.Image):
        return ref.convert("RGB") if ref.mode != "RGB" else ref
    with Image.open(ref) as im:
        return im.convert("RGB")


@dataclass(frozen=True)
class TaskInfo:
    """What the model is asked to do.

    ``name``: ``synth_binary``, ``synth_multiclass``, ``synth_vqa``, ``hateful_memes``,
    ``crisismmd`` or ``medical``; ``kind``: ``"mc"`` (multiple choice, scored on ``options``)
    or ``"vqa"`` (free-form answers); ``prompt_strategy``: ``plain`` or ``agnostic``.
    """

    name: str
    kind: str
    options: tuple[str, ...] | None = None
    prompt_strategy: str = "plain"

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind,
                "options": list(self.options) if self.options is not None else None,
                "prompt_strategy": self.prompt_strategy}

    @classmethod
    def from_dict(cls, d: dict) -> TaskInfo:
        opts = d.get("options")
        return cls(d["name"], d["kind"], tuple(opts) if opts is not None else None,
                   d.get("prompt_strategy", "plain"))


@dataclass
class FederatedData:
    """``clients[k]``: client k's training samples; ``test``: the held-out set (full image and
    text); ``extra_tests``: further evaluation sets by name (``{"slake": [...]}`` for
    ``medical`` when SLAKE is present)."""

    clients: list[list[Sample]]
    test: list[Sample]
    task: TaskInfo
    manifest: dict
    extra_tests: dict[str, list[Sample]] = field(default_factory=dict)
