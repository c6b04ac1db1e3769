"""Model-side evaluation: option-probability scoring and greedy generation, batched.

Multiple choice (default, deterministic): one forward pass per batch. The supervised answers of
the options (e.g. ``"(A) not-hateful"``, ``"(B) hateful"``) are tokenized after the prompt; they
share a prefix (``"("``) and first differ at one token per option (the letter). The prompt plus
the shared prefix is fed once and the next-token probabilities of those option tokens,
normalised over the options, give the predicted class and the class probabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..model.collate import Encoded, collate, encode_sample


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
            items.append(Encoded(torch.cat([e.input_ids, ot.prefix]), None, e.vision, e.prompt_len))
        batch = collate(items, pad, padding_side="left")
        batch = {k: v.to(device) for k, v in batch.items()}
        if dtype is not None and "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(dtype)
        logits = model(**batch, logits_to_keep=1).logits[:, -1, :].float()
        out[idx.start: idx.stop] = torch.softmax(logits[:, opt_ids], dim=-1).cpu()
    model.train(was_training)
    return out


@torch.inference_mode()
def generate(model, processor, prompts: Sequence[str], images: Sequence, max_new_tokens: int = 16,
             batch_size: int = 32, device: torch.device | None = None,
             dtype: torch.dtype | None = None) -> list[str]:
    """Greedy decoding with left padding; returns the decoded continuations."""
    device = device or next(model.parameters()).device
    tok = processor.tokenizer
    texts: list[str] = []
    was_training = model.training
    model.eval()
    for idx in _batches(len(prompts), batch_size):
        items = [encode_sample(processor, prompts[i], images[i]) for i in idx]
        batch = collate(items, tok.pad_token_id, padding_side="left")
        batch = {k: v.to(device) for k, v in batch.items()}
        if dtype is not None and "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(dtype)
        gen = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id)
        new = gen[:, batch["input_ids"].shape[1]:]
        texts.extend(tok.batch_decode(new, skip_special_tokens=True))
    model.train(was_training)
    return [t.strip() for t in texts]
