"""One collation path for every model: chat template -> processor -> masked labels -> batch.

A sample is encoded by :func:`encode_sample`: the user turn (image placeholder + prompt text)
and the assistant answer are rendered with the processor's chat template and tokenized by the
processor (which expands the image placeholder into the model's image tokens). Prompt tokens get
label -100; only the answer and its end-of-turn token are supervised. Batches (:func:`collate`)
mix image and text-only samples freely: each model family's vision tensors are merged by the same
rule (per-image tensors are concatenated; batch-major tensors are padded with empty images, which
models such as Idefics3 drop).

Training data is encoded per batch, not up front: :class:`EncodedSamples` is a client's
sample list that encodes a sample when it is read, so only the batch being trained holds token
ids and processed pixels (memory grows with the batch, not with the clients or the dataset).
Encoding is deterministic, so a batch is the same tensors whenever it is encoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..data.prompts import build_prompt
from ..data.types import Sample, load_image
from .loading import ModelError

IGNORE_INDEX = -100
#: vision tensors whose first dimension is the batch (padded with zero "images" when merging)
_BATCH_MAJOR_NDIM = {"pixel_values": 5, "pixel_attention_mask": 4}


@dataclass
class Encoded:
    """A tokenized sample: ids, labels (None for prompts) and its per-sample vision tensors."""

    input_ids: torch.Tensor
    labels: torch.Tensor | None
    vision: dict[str, torch.Tensor]
    prompt_len: int


def user_message(prompt: str, has_image: bool) -> dict:
    content: list[dict[str, Any]] = [{"type": "image"}] if has_image else []
    content.append({"type": "text", "text": prompt})
    return {"role": "user", "content": content}


def assistant_message(answer: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": answer}]}


def _tokenize(processor, text: str, image) -> dict[str, torch.Tensor]:
    kwargs: dict[str, Any] = {"text": [text], "return_tensors": "pt"}
    if image is not None:
        kwargs["images"] = [[image]]
    try:
        return dict(processor(**kwargs))
    except (ValueError, TypeError) as e:
        raise ModelError(f"processor failed: {str(e).splitlines()[0]}") from None


def encode_sample(processor, prompt: str, image_ref=None, answer: str | None = None,
                  max_len: int | None = None, sample_id: str = "?") -> Encoded:
    """Encode one sample. With ``answer`` the labels supervise the answer only."""
    image = load_image(image_ref) if image_ref is not None else None
    user = user_message(prompt, image is not None)
    prompt_text = processor.apply_chat_template([user], add_generation_prompt=True, tokenize=False)
    enc_p = _tokenize(processor, prompt_text, image)
    p_ids = enc_p.pop("input_ids")[0]
    enc_p.pop("attention_mask", None)
    if answer is None:
        return Encoded(p_ids, None, enc_p, len(p_ids))

    full_text = processor.apply_chat_template([user, assistant_message(answer)], tokenize=False)
    if not full_text.startswith(prompt_text):
        raise ModelError("chat template: the conversation does not extend the generation prompt")
    enc_f = _tokenize(processor, full_text, image)
    ids = enc_f.pop("input_ids")[0]
    enc_f.pop("attention_mask", None)
    plen = len(p_ids)
    if not torch.equal(ids[:plen], p_ids):
        # Tokens merged across the prompt/answer boundary: supervise from the first difference.
        plen = int((ids[:plen] != p_ids[: len(ids)][:plen]).nonzero()[0])
    labels = ids.clone()
    labels[:plen] = IGNORE_INDEX
    # Trailing whitespace after the end-of-turn token is formatting, not answer.
    tok = getattr(processor, "tokenizer", processor)
    end = len(ids)
    while end > plen and tok.decode(ids[end - 1 : end]).strip() == "":
        end -= 1
    labels[end:] = IGNORE_INDEX
    if max_len is not None and len(ids) > max_len:
        if plen >= max_len:
            raise ModelError(f"sample {sample_id}: prompt ({plen} tokens) does not fit "
                             f"train.max_seq_len={max_len}")
        ids, labels = ids[:max_len], labels[:max_len]
    return Encoded(ids, labels, enc_f, plen)


class EncodedSamples(Sequence[Encoded]):
    """Training samples that are encoded when read: ``items[i]`` (or a slice) runs
    :func:`encode_sample` on the ``Sample`` records, which hold only text and an image
    reference (a path, or the synthetic task's small in-memory image).

    Nothing encoded is kept: a run holds the records of every client and the encoded tensors
    of the batch being trained, instead of every client's token ids and pixels for the whole
    run. The cost is encoding a sample each time it is drawn (once per epoch of a client's
    local run). A sample that cannot be encoded (a prompt longer than ``max_len``) raises
    :class:`ModelError` when its batch is built.
    """

    def __init__(self, processor, samples: Sequence[Sample], prompt_strategy: str = "plain",
                 max_len: int | None = None) -> None:
        self.processor = processor
        self.samples = samples
        self.prompt_strategy = prompt_strategy
        self.max_len = max_len

    def __len__(self) -> int:
        return len(self.samples)

    def encode(self, s: Sample) -> Encoded:
        """``s`` encoded with its answer supervised (prompt masked)."""
        return encode_sample(self.processor, build_prompt(s, self.prompt_strategy), s.image,
                             s.answer, self.max_len, sample_id=s.id)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.encode(s) for s in self.samples[i]]
        return self.encode(self.samples[i])

    def subset(self, indices: Sequence[int]) -> EncodedSamples:
        """The samples at ``indices`` (in that order), still encoded when read."""
        return EncodedSamples(self.processor, [self.samples[i] for i in indices],
                              self.prompt_strategy, self.max_len)


def _merge_vision(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    keys = sorted({k for it in items for k in it})
    out: dict[str, torch.Tensor] = {}
    for k in keys:
        present = [it[k] for it in items if k in it]
        ref = present[0]
        if _BATCH_MAJOR_NDIM.get(k) == ref.dim():
            n_max = max(t.shape[1] for t in present)
            rows = []
            for it in items:
                t = it.get(k)
                shape = (1, n_max, *ref.shape[2:])
                row = torch.zeros(shape, dtype=ref.dtype)
                if t is not None:
                    row[:, : t.shape[1]] = t
                rows.append(row)
            out[k] = torch.cat(rows, 0)
        else:
            out[k] = torch.cat(present, 0)
    return out


def collate(batch: list[Encoded], pad_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Pad ids/labels/mask and merge vision tensors of samples that have images."""
    n = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    has_labels = batch[0].labels is not None
    labels = torch.full((len(batch), n), IGNORE_INDEX, dtype=torch.long) if has_labels else None
    for i, e in enumerate(batch):
        m = len(e.input_ids)
        sl = slice(0, m) if padding_side == "right" else slice(n - m, n)
        ids[i, sl] = e.input_ids
        mask[i, sl] = 1
        if labels is not None:
            labels[i, sl] = e.labels
    out = {"input_ids": ids, "attention_mask": mask}
    if labels is not None:
        out["labels"] = labels
    vision = [e.vision for e in batch if e.vision]
    if vision:
        # Batch-major tensors need a row per sample (empty for text-only samples).
        if any(_BATCH_MAJOR_NDIM.get(k) == t.dim() for v in vision for k, t in v.items()):
            vision = [e.vision for e in batch]
        out.update(_merge_vision(vision))
    return out


def to_device(batch: dict[str, torch.Tensor], device, dtype: torch.dtype | None = None
              ) -> dict[str, torch.Tensor]:
    """``batch`` on ``device``, with ``pixel_values`` in the model's ``dtype`` (when given)."""
    out = {k: v.to(device) for k, v in batch.items()}
    if dtype is not None and "pixel_values" in out:
        out["pixel_values"] = out["pixel_values"].to(dtype)
    return out
