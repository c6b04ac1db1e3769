"""The built-in offline vision-language model: a small LLaVA built from config, pre-trained here.

Nothing is downloaded. :func:`ensure_tiny` builds a preset's recipe deterministically into a
cached folder and returns it; the folder loads with :func:`fedmllm.model.loading.load_vlm`
like any hub model. One module per part:

- :mod:`.presets`: preset sizes, the recipe and its cache folder (:func:`recipe_dir`);
- :mod:`.corpus`: the pre-training corpus and the tokenizer's training text;
- :mod:`.pretrain`: the short deterministic centralized pre-training
  (``fedmllm.model.tiny.pretrain.pretrain``);
- :mod:`.build`: tokenizer, processor and model from config, :func:`ensure_tiny`, the build's
  determinism (:func:`build_determinism`) and the weights' hash (:func:`weights_hash`).
"""

from .build import (
    CHAT_TEMPLATE,
    build_determinism,
    build_model,
    build_processor,
    build_tokenizer,
    ensure_tiny,
    weights_hash,
)
from .corpus import PRETRAIN_CORPUS_VERSION, corpus_text, make_pretrain_corpus
from .presets import (
    BUILD_THREADS,
    IMAGE_SIZE,
    PATCH_SIZE,
    PRESETS,
    RECIPE_VERSION,
    SPECIAL_TOKENS,
    TOKENIZER_CORPUS,
    Preset,
    cache_root,
    recipe,
    recipe_dir,
)

__all__ = [
    "BUILD_THREADS",
    "CHAT_TEMPLATE",
    "IMAGE_SIZE",
    "PATCH_SIZE",
    "PRESETS",
    "PRETRAIN_CORPUS_VERSION",
    "RECIPE_VERSION",
    "SPECIAL_TOKENS",
    "TOKENIZER_CORPUS",
    "Preset",
    "build_determinism",
    "build_model",
    "build_processor",
    "build_tokenizer",
    "cache_root",
    "corpus_text",
    "ensure_tiny",
    "make_pretrain_corpus",
    "recipe",
    "recipe_dir",
    "weights_hash",
]
