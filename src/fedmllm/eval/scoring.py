"""Model-side evaluation: option-probability scoring and greedy generation, batched.

Multiple choice (default, deterministic): one forward pass per batch. The supervised answers of
the options (e.g. ``"(A) not-hateful"``, ``"(B) hateful"``) are tokenized after the prompt; they
share a prefix (``"("``) and first differ at one token per option (the letter). The prompt plus
the shared prefix is fed once and the next-token probabilities of those option tokens,
normalised over the options, give the predicted class and the class probabilities.

Generation (VQA, and multiple choice with ``mode="generate"``): greedy decoding, left padding,
stopping at the model's end-of-turn token; the continuation is decoded without special tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..model.collate import IGNORE_INDEX, Encoded, collate, encode_sample, to_device
from ..model.loading import ModelError


@dataclass
class OptionTokens:
    prefix: torch.Tensor  # answer tokens shared by all options (after the generation prompt)
    option_ids: list[int]  # the first token where each option's answer differs


def option_tokens(processor, prompt: str, answers: Sequence[str], image=None) -> OptionTokens:
    """Find the shared answer prefix and the distinguishing token of each option."""
    encs = [encode_sample(processor, prompt, image, a) for a in answers]
    plen = encs[0].prompt_len
    tails = [e.input_ids[plen:] for e in encs]
    d = 0
    while all(len(t) > d for t in tails) and len({int(t[d]) for t in tails}) == 1:
        d += 1
    if not all(len(t) > d for t in tails):
        raise ValueError("option answers are not distinguishable after tokenization")
    firsts = [int(t[d]) for t in tails]
    if len(set(firsts)) != len(firsts):
        raise ValueError(f"options {list(answers)} share their first distinguishing token")
    return OptionTokens(prefix=tails[0][:d].clone(), option_ids=firsts)


def _batches(n: int, size: int):
    for i in range(0, n, size):
        yield range(i, min(n, i + size))


@torch.inference_mode()
def score_options(model, processor, prompts: Sequence[str], images: Sequence,
                  answers: Sequence[str], batch_size: int = 32,
                  device: torch.device | None = None, dtype: torch.dtype | None = None,
                  encode: Callable[[int], Encoded] | None = None) -> torch.Tensor:
    """Class probabilities (N x K) for N prompts over K options with supervised ``answers``."""
    device = device or next(model.parameters()).device
    ot = option_tokens(processor, prompts[0], answers, images[0])
    pad = processor.tokenizer.pad_token_id
    opt_ids = torch.tensor(ot.option_ids, device=device)
    out = torch.empty(len(prompts), len(answers))
    was_training = model.training
    model.eval()
    for idx in _batches(len(prompts), batch_size):
        items = []
        for i in idx:
            e = encode(i) if encode else encode_sample(processor, prompts[i], images[i])
            items.append(Encoded(torch.cat([e.input_ids, ot.prefix]), None, e.vision, e.prompt_len,
                                 e.tokens))
        batch = to_device(collate(items, pad, padding_side="left"), device, dtype)
        logits = model(**batch, logits_to_keep=1).logits[:, -1, :].float()
        out[idx.start: idx.stop] = torch.softmax(logits[:, opt_ids], dim=-1).cpu()
    model.train(was_training)
    return out


def stop_token_ids(model, processor) -> list[int]:
    """Token ids that end a generated answer: the model's eos id(s) and the chat end-of-turn.

    The end-of-turn token is read from the chat template itself (the last supervised token of a
    rendered answer, e.g. ``<|end|>``, ``<|im_end|>``, ``<end_of_utterance>``) and is kept only
    when it is a special/added token, so a template without one never stops on an answer token.
    """
    tok = processor.tokenizer
    ids: list[int] = []

    def add(x) -> None:
        for i in x if isinstance(x, (list, tuple)) else [x]:
            if i is not None and int(i) not in ids:
                ids.append(int(i))

    gc = getattr(model, "generation_config", None)
    add(getattr(gc, "eos_token_id", None))
    add(tok.eos_token_id)
    from jinja2 import TemplateError

    try:
        enc = encode_sample(processor, "x", None, "A")
    except (ModelError, TemplateError, ValueError, TypeError, KeyError):
        return ids  # a template that cannot render a text-only turn: the eos ids only
    sup = (enc.labels != IGNORE_INDEX).nonzero()
    if len(sup):
        last = int(enc.input_ids[int(sup[-1])])
        special = set(tok.all_special_ids) | set(getattr(tok, "added_tokens_decoder", {}) or {})
        if last in special:
            add(last)
    return ids


def decode_answers(tokenizer, new_tokens: torch.Tensor, stop_ids: Sequence[int]) -> list[str]:
    """Decode generated continuations: cut at the first stop token, drop special tokens, strip.

    Cutting first matters: after a sequence ends, ``generate`` fills its row with padding, and an
    end-of-turn token that is not registered as *special* would survive
    ``skip_special_tokens=True``.
    """
    stop = torch.tensor(list(stop_ids), dtype=new_tokens.dtype)
    rows = []
    for row in new_tokens.cpu():
        hit = torch.isin(row, stop).nonzero() if len(stop) else row[:0]
        rows.append(row[: int(hit[0])] if len(hit) else row)
    texts = [tokenizer.decode(r, skip_special_tokens=True) for r in rows]
    return [t.strip() for t in texts]


@torch.inference_mode()
def generate(model, processor, prompts: Sequence[str], images: Sequence, max_new_tokens: int = 16,
             batch_size: int = 32, device: torch.device | None = None,
             dtype: torch.dtype | None = None,
             encode: Callable[[int], Encoded] | None = None) -> list[str]:
    """Greedy decoding with left padding; returns the decoded continuations.

    Decoding stops at the end-of-turn / eos tokens of :func:`stop_token_ids` (or after
    ``max_new_tokens``); the text is cut there and special tokens are dropped.
    """
    device = device or next(model.parameters()).device
    tok = processor.tokenizer
    stops = stop_token_ids(model, processor)
    pad = tok.pad_token_id  # load_vlm gives every tokenizer one
    texts: list[str] = []
    was_training = model.training
    model.eval()
    for idx in _batches(len(prompts), batch_size):
        items = [encode(i) if encode else encode_sample(processor, prompts[i], images[i])
                 for i in idx]
        batch = to_device(collate(items, pad, padding_side="left"), device, dtype)
        gen = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             num_beams=1, eos_token_id=stops, pad_token_id=pad)
        texts.extend(decode_answers(tok, gen[:, batch["input_ids"].shape[1]:], stops))
    model.train(was_training)
    return texts
