"""One collation path for every model: chat template -> processor -> masked labels -> batch.

A sample is encoded by :func:`encode_sample`: the user turn (image placeholder + prompt text)
and the assistant answer are rendered with the processor's chat template and tokenized by the
processor (which expands the image placeholder into the model's image tokens). Prompt tokens get
label -100; only the answer and its end-of-turn token are supervised (a template that closes
the answer with no special token, such as LLaVA 1.5's, gets the tokenizer's EOS appended, as the
model's own training did, so generation learns to stop). Batches (:func:`collate`) mix image and
text-only samples freely: the vision tensors of the samples that have images are concatenated
(per-image and per-patch layouts alike; tensors with a per-image patch or image axis, LLaVA-NeXT's
any-resolution tiles and Idefics3's image splits, are padded on that axis with empty tiles, which
those models drop); per-token tensors beside the ids (Gemma 3's ``token_type_ids``, Qwen2-VL's
``mm_token_type_ids``) are padded like the ids.

Training data is encoded per batch, not up front: :class:`EncodedSamples` is a client's
sample list that encodes a sample when it is read, so only the batch being trained holds token
ids and processed pixels (memory grows with the batch, not with the clients or the dataset).
Encoding is deterministic, so a batch is the same tensors whenever it is encoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..data.prompts import build_prompt
from ..data.types import Sample, load_image
from .loading import ModelError

IGNORE_INDEX = -100
#: processor outputs with one value per token (padded and cut like the ids; 0 = text)
TOKEN_KEYS = ("token_type_ids", "mm_token_type_ids")


@dataclass
class Encoded:
    """A tokenized sample: ids, labels (None for prompts), its vision tensors and its per-token
    tensors (:data:`TOKEN_KEYS`, 1-D, as long as the ids or shorter: missing tail = text)."""

    input_ids: torch.Tensor
    labels: torch.Tensor | None
    vision: dict[str, torch.Tensor]
    prompt_len: int
    tokens: dict[str, torch.Tensor] = field(default_factory=dict)


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
    tok = getattr(processor, "tokenizer", processor)
    bos = getattr(tok, "bos_token", None)
    if bos and text.startswith(bos):
        # the template wrote BOS itself (Gemma 3, Idefics3): the tokenizer must not add another
        kwargs["add_special_tokens"] = False
    try:
        return dict(processor(**kwargs))
    except (ValueError, TypeError, IndexError, RuntimeError) as e:
        raise ModelError(f"processor failed: {str(e).splitlines()[0]}") from None


def _split(enc: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict, dict]:
    """``(ids, per-token tensors, vision tensors)`` of one processed sample."""
    ids = enc.pop("input_ids")[0]
    enc.pop("attention_mask", None)
    tokens = {k: enc.pop(k)[0] for k in TOKEN_KEYS if k in enc}
    return ids, tokens, enc


def _special_ids(tok) -> set[int]:
    return set(tok.all_special_ids) | set(getattr(tok, "added_tokens_decoder", {}) or {})


def _conversation(processor, user: dict, answer: str, prompt_text: str) -> str:
    """The rendered conversation, as the generation prompt followed by the answer turn.

    Most templates render ``[user, assistant]`` as the generation prompt plus the answer. Some
    do not (LLaVA-OneVision's writes ``"<|im_start|>assistant "`` in a conversation but
    ``"<|im_start|>assistant\\n"`` as the generation prompt): the answer and what follows it in
    the rendered turn are then put after the generation prompt, so training sees the prompt
    that generation and scoring will use.
    """
    full = processor.apply_chat_template([user, assistant_message(answer)], tokenize=False)
    if full.startswith(prompt_text):
        return full
    base = processor.apply_chat_template([user], add_generation_prompt=False, tokenize=False)
    turn = full[len(base):] if full.startswith(base) else ""
    at = turn.find(answer) if answer else -1
    if at < 0:
        raise ModelError("chat template: the conversation does not extend the generation "
                         "prompt, and the answer is not found in the rendered assistant turn")
    return prompt_text + turn[at:]


def encode_sample(processor, prompt: str, image_ref=None, answer: str | None = None,
                  max_len: int | None = None, sample_id: str = "?") -> Encoded:
    """Encode one sample. With ``answer`` the labels supervise the answer only."""
    image = load_image(image_ref) if image_ref is not None else None
    user = user_message(prompt, image is not None)
    prompt_text = processor.apply_chat_template([user], add_generation_prompt=True, tokenize=False)
    p_ids, p_tokens, p_vision = _split(_tokenize(processor, prompt_text, image))
    if answer is None:
        return Encoded(p_ids, None, p_vision, len(p_ids), p_tokens)

    full_text = _conversation(processor, user, answer, prompt_text)
    ids, tokens, vision = _split(_tokenize(processor, full_text, image))
    plen = len(p_ids)
    if not torch.equal(ids[:plen], p_ids):
        # Tokens merged across the prompt/answer boundary: supervise from the first difference.
        plen = int((ids[:plen] != p_ids[: len(ids)][:plen]).nonzero()[0])
    # Trailing whitespace after the end-of-turn token is formatting, not answer.
    tok = getattr(processor, "tokenizer", processor)
    end = len(ids)
    while end > plen and tok.decode(ids[end - 1 : end]).strip() == "":
        end -= 1
    eos = getattr(tok, "eos_token_id", None)
    if end > plen and eos is not None and int(ids[end - 1]) not in _special_ids(tok):
        # The template closes the answer with no special token (LLaVA 1.5): supervise EOS
        # after it, the answer's end in the model's own training data, so generation stops.
        ids = torch.cat([ids[:end], torch.tensor([eos], dtype=ids.dtype)])
        tokens = {k: torch.cat([v[:end], v.new_zeros(1)]) for k, v in tokens.items()}
        end += 1
    labels = ids.clone()
    labels[:plen] = IGNORE_INDEX
    labels[end:] = IGNORE_INDEX
    if max_len is not None and len(ids) > max_len:
        if plen >= max_len:
            raise ModelError(f"sample {sample_id}: prompt ({plen} tokens) does not fit "
                             f"train.max_seq_len={max_len}")
        ids, labels = ids[:max_len], labels[:max_len]
        tokens = {k: v[:max_len] for k, v in tokens.items()}
    return Encoded(ids, labels, vision, plen, tokens)


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
    """Concatenate the vision tensors of the samples that have images, along dimension 0.

    A tensor whose other dimensions differ between samples has a per-image axis of tiles or
    images (LLaVA-NeXT ``pixel_values``: images x tiles x C x H x W; Idefics3: samples x images
    x C x H x W and its ``pixel_attention_mask``): it is padded with zeros on those axes, which
    those models drop (LLaVA-NeXT keeps the tiles ``image_sizes`` calls for; Idefics3 drops
    all-zero images).
    """
    keys = sorted({k for it in items for k in it})
    out: dict[str, torch.Tensor] = {}
    for k in keys:
        present = [it[k] for it in items if k in it]
        shapes = {tuple(t.shape[1:]) for t in present}
        if len(shapes) > 1:
            if len({t.dim() for t in present}) > 1:
                raise ModelError(f"processor output '{k}': samples disagree on its rank")
            size = [max(t.shape[d] for t in present) for d in range(1, present[0].dim())]
            padded = []
            for t in present:
                row = t.new_zeros((t.shape[0], *size))
                row[tuple(slice(0, n) for n in t.shape)] = t
                padded.append(row)
            present = padded
        out[k] = torch.cat(present, 0)
    return out


def collate(batch: list[Encoded], pad_id: int,
            padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Pad ids/labels/mask and per-token tensors; merge the vision tensors of samples with
    images (text-only samples add none)."""
    n = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    has_labels = batch[0].labels is not None
    labels = torch.full((len(batch), n), IGNORE_INDEX, dtype=torch.long) if has_labels else None
    token_keys = sorted({k for e in batch for k in e.tokens})
    tokens = {k: torch.zeros((len(batch), n), dtype=torch.long) for k in token_keys}
    for i, e in enumerate(batch):
        m = len(e.input_ids)
        start = 0 if padding_side == "right" else n - m
        ids[i, start:start + m] = e.input_ids
        mask[i, start:start + m] = 1
        if labels is not None:
            labels[i, start:start + m] = e.labels
        for k, t in e.tokens.items():
            t = t[:m]
            tokens[k][i, start:start + len(t)] = t
    out = {"input_ids": ids, "attention_mask": mask, **tokens}
    if labels is not None:
        out["labels"] = labels
    vision = [e.vision for e in batch if e.vision]
    if vision:
        out.update(_merge_vision(vision))
    return out


def to_device(batch: dict[str, torch.Tensor], device, dtype: torch.dtype | None = None
              ) -> dict[str, torch.Tensor]:
    """``batch`` on ``device``, with ``pixel_values`` in the model's ``dtype`` (when given)."""
    out = {k: v.to(device) for k, v in batch.items()}
    if dtype is not None and "pixel_values" in out:
        out["pixel_values"] = out["pixel_values"].to(dtype)
    return out
