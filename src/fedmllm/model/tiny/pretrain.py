"""The built-in model's pre-training: a short, deterministic, full-parameter, centralized run.

The corpus is :func:`~fedmllm.model.tiny.corpus.make_pretrain_corpus` (generic captions and
QA, not the downstream benchmark), so that federated LoRA fine-tuning starts from a base that
reads images and text. AdamW with a linear warm-up over the first 5 % of the steps and a cosine
decay, gradient-norm clipping at 1; batches are drawn with a seeded ``torch.Generator``.
"""

from __future__ import annotations

import math
import time

import torch

from ..collate import collate, encode_sample
from .corpus import make_pretrain_corpus
from .presets import Preset

__all__ = ["pretrain"]


def pretrain(model, processor, p: Preset, seed: int, progress=None) -> dict:
    """Short deterministic full-parameter pre-training on the generic corpus; returns stats.

    ``progress(step, steps, loss, seconds)`` is called after every step (for a progress line).
    """
    corpus = make_pretrain_corpus(p.pretrain_samples, seed=seed + 1, extra=p.corpus_extra)
    encoded = [encode_sample(processor, s.question or "", s.image, s.answer, sample_id=s.id)
               for s in corpus]
    g = torch.Generator().manual_seed(seed)
    if p.matrix_decay is None:
        opt = torch.optim.AdamW(model.parameters(), lr=p.pretrain_lr, weight_decay=0.01)
    else:  # decay the weight matrices only
        params = list(model.parameters())
        opt = torch.optim.AdamW(
            [{"params": [q for q in params if q.ndim == 2], "weight_decay": p.matrix_decay},
             {"params": [q for q in params if q.ndim != 2], "weight_decay": 0.0}],
            lr=p.pretrain_lr)
    model.train()
    pad = processor.tokenizer.pad_token_id
    losses = []
    t0 = time.perf_counter()
    warm = max(1, p.pretrain_steps // 20)
    for step in range(p.pretrain_steps):
        lr = p.pretrain_lr * min(1.0, (step + 1) / warm) * \
            0.5 * (1 + math.cos(math.pi * step / p.pretrain_steps))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(len(encoded), (p.pretrain_batch,), generator=g).tolist()
        batch = collate([encoded[i] for i in idx], pad)
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step + 1, p.pretrain_steps, losses[-1], time.perf_counter() - t0)
    model.eval()
    k = max(1, len(losses) // 10)
    return {"steps": p.pretrain_steps, "seconds": round(time.perf_counter() - t0, 2),
            "loss_first": round(sum(losses[:k]) / k, 4),
            "loss_last": round(sum(losses[-k:]) / k, 4)}
