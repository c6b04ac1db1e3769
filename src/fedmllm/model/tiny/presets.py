"""The built-in model's recipe: preset sizes, fixed constants, and the cache folder it keys.

A recipe (:func:`recipe`) is everything that determines the built model: the preset's sizes
and pre-training schedule, the image and patch size, the tokenizer corpus size, the corpus
version (:data:`~fedmllm.model.tiny.corpus.PRETRAIN_CORPUS_VERSION`), whether the base is
pre-trained, and the seed. :func:`recipe_dir` is the cache folder named by a hash of it, under
``$FEDMLLM_CACHE`` (default ``~/.cache/fedmllm``); changing any recipe value gives a new
folder. torch-free.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from .corpus import PRETRAIN_CORPUS_VERSION

RECIPE_VERSION = 3
TOKENIZER_CORPUS = 2000  # corpus_text(n): n samples per generator
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<image>", "<|user|>", "<|assistant|>", "<|end|>"]
IMAGE_SIZE = 32
PATCH_SIZE = 8
BUILD_THREADS = 2
"""torch's intra-op thread count for a whole build (tokenizer, init, pre-training, save). A
float reduction split over n threads adds in another order than over m, so the weights depend
on the count; pinned, they do not depend on the machine's cores or on ``OMP_NUM_THREADS``. 2 is
the count every published figure's base was built with, so the recipes and the cached folders
stay valid."""

__all__ = ["BUILD_THREADS", "IMAGE_SIZE", "PATCH_SIZE", "PRESETS", "RECIPE_VERSION",
           "SPECIAL_TOKENS", "TOKENIZER_CORPUS", "Preset", "cache_root", "recipe", "recipe_dir"]


@dataclass(frozen=True)
class Preset:
    vocab_size: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    pretrain_steps: int
    pretrain_batch: int
    pretrain_lr: float
    pretrain_samples: int
    init_scale: float = 1.0
    """Factor on the language model's linear weights at initialisation (before pre-training).
    Below 1 the random part of each weight stays small, so what pre-training writes into it
    -- a few strong directions -- dominates its spectrum."""
    matrix_decay: float | None = None
    """AdamW weight decay of the pre-training on the weight matrices only (vectors and norms
    undecayed); ``None``: 0.01 on every parameter (the first presets' recipe). Strong decay
    removes what the gradients do not keep renewing, so each weight's energy gathers in the
    directions the training uses."""
    corpus_extra: tuple[str, ...] = ()
    """Extra kinds of pre-training sample
    (:func:`~fedmllm.model.tiny.corpus.make_pretrain_corpus`)."""


#: The fields added to :class:`Preset` after the first presets were cached: left out of a
#: recipe while at their default, so the presets that do not use them keep their cache folder.
_LATER_FIELDS = {"init_scale": 1.0, "matrix_decay": None, "corpus_extra": ()}


PRESETS: dict[str, Preset] = {
    "tiny": Preset(vocab_size=1024, hidden=128, layers=2, heads=4, intermediate=256,
                   vision_hidden=64, vision_layers=2, vision_heads=2,
                   pretrain_steps=600, pretrain_batch=16, pretrain_lr=2e-3, pretrain_samples=6000),
    "small": Preset(vocab_size=2048, hidden=256, layers=4, heads=4, intermediate=512,
                    vision_hidden=128, vision_layers=3, vision_heads=4,
                    pretrain_steps=600, pretrain_batch=16, pretrain_lr=1.5e-3,
                    pretrain_samples=6000),
    # The base of the YOCO study (docs/yoco_results.md): tiny's sizes, its language model's
    # linear weights started at a tenth of their usual scale and pre-trained four times as long
    # with strong weight decay on the matrices, with what a language model knows of content
    # moderation in the corpus. Its attention weights hold most of their energy in a few
    # directions (a principal subspace worth sharing), and it answers the synthetic binary task
    # above chance without fine-tuning.
    "tiny-structured": Preset(vocab_size=1024, hidden=128, layers=2, heads=4, intermediate=256,
                              vision_hidden=64, vision_layers=2, vision_heads=2,
                              pretrain_steps=2400, pretrain_batch=16, pretrain_lr=2e-3,
                              pretrain_samples=6000, init_scale=0.1, matrix_decay=1.0,
                              corpus_extra=("safety",)),
    # A base where the middle layers exist, for FedMLLM's middle-layer proximal term
    # (fl.client.objective=adaptive_prox; benchmarks/grids/deep.toml): tiny's width, 8
    # language-model layers, pre-trained 1,000 steps (at tiny's 600 its pre-training loss ends
    # at 0.74 against tiny's 0.62, and FedAvg reaches only 0.915 in the findings' aligned
    # setting on seed 0; at 1,000, loss 0.67 and 0.99 by round 12).
    "deep": Preset(vocab_size=1024, hidden=128, layers=8, heads=4, intermediate=256,
                   vision_hidden=64, vision_layers=2, vision_heads=2,
                   pretrain_steps=1000, pretrain_batch=16, pretrain_lr=2e-3, pretrain_samples=6000),
}


def cache_root() -> Path:
    return Path(os.environ.get("FEDMLLM_CACHE", Path.home() / ".cache" / "fedmllm"))


def _sizes(p: Preset) -> dict:
    sizes = asdict(p)
    for key, default in _LATER_FIELDS.items():
        if sizes[key] == default:
            del sizes[key]
    if "corpus_extra" in sizes:
        sizes["corpus_extra"] = list(sizes["corpus_extra"])
    return sizes


def recipe(preset: str, pretrain: bool, seed: int = 0) -> dict:
    if preset not in PRESETS:
        raise ValueError(f"model.preset: unknown preset '{preset}' (choices: {', '.join(PRESETS)})")
    return {"version": RECIPE_VERSION, "corpus": PRETRAIN_CORPUS_VERSION, "preset": preset,
            "sizes": _sizes(PRESETS[preset]), "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE,
            "tokenizer_corpus": TOKENIZER_CORPUS, "pretrain": pretrain, "seed": seed}


def recipe_dir(preset: str, pretrain: bool = True, seed: int = 0) -> Path:
    r = recipe(preset, pretrain, seed)
    digest = hashlib.sha256(json.dumps(r, sort_keys=True).encode()).hexdigest()[:12]
    tag = "pt" if pretrain else "init"
    return cache_root() / f"{preset}-{tag}-{digest}"
