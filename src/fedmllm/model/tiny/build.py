"""Building the built-in model: tokenizer, processor, model from config, and the cached folder.

Nothing is downloaded. :func:`ensure_tiny` builds the recipe of a preset
(:mod:`fedmllm.model.tiny.presets`) deterministically -- tokenizer trained on
:func:`~fedmllm.model.tiny.corpus.corpus_text`, randomly initialised model, optionally
pre-trained (:mod:`fedmllm.model.tiny.pretrain`) -- and saves it with ``save_pretrained`` into
its cache folder, written atomically (:func:`fedmllm.files.atomic_dir`); a second process that
builds the same recipe at the same time keeps the folder of whichever finishes first. The
folder is then loaded by :func:`fedmllm.model.loading.load_vlm` like any hub model.

A build runs under :func:`build_determinism` (torch's intra-op threads pinned to
:data:`~fedmllm.model.tiny.presets.BUILD_THREADS`, deterministic algorithms), so a recipe gives
the same weights bit for bit whatever the core count or ``OMP_NUM_THREADS``, on the same torch
build and CPU instruction set; the tokenizer's training (``tokenizers``, parallel in Rust) gives
the same vocabulary and merges whatever ``RAYON_NUM_THREADS`` (checked: 1, 2, 8, 16, and
``TOKENIZERS_PARALLELISM=false``). The cache entry's ``recipe.json`` records
:func:`weights_hash` of what was saved (``stats.weights_sha256``).

Pieces (all real ``transformers`` classes):
- vision: ``CLIPVisionModel`` config (32x32 images, 8x8 patches -> 16 image tokens);
- language: ``LlamaConfig`` decoder;
- ``LlavaForConditionalGeneration`` joining them through the LLaVA projector;
- tokenizer: byte-level BPE trained with ``tokenizers`` on generated text, wrapped as a
  ``PreTrainedTokenizerFast`` with a chat template;
- processor: ``LlavaProcessor`` with the PIL ``CLIPImageProcessorPil`` (no torchvision).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from ...files import atomic_dir
from .corpus import corpus_text
from .presets import (
    BUILD_THREADS,
    IMAGE_SIZE,
    PATCH_SIZE,
    PRESETS,
    SPECIAL_TOKENS,
    TOKENIZER_CORPUS,
    Preset,
    recipe,
    recipe_dir,
)
from .pretrain import pretrain

__all__ = ["CHAT_TEMPLATE", "build_determinism", "build_model", "build_processor",
           "build_tokenizer", "ensure_tiny", "weights_hash"]


CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}<|user|>\n{% else %}<|assistant|>\n{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def build_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE trained on ``texts``; special tokens for the chat template and image."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="<|end|>", unk_token=None)
    fast.add_special_tokens({"additional_special_tokens": ["<image>", "<|user|>", "<|assistant|>"]})
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_processor(tokenizer):
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_center_crop=True, do_resize=True)
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                          patch_size=PATCH_SIZE, vision_feature_select_strategy="default",
                          chat_template=CHAT_TEMPLATE, image_token="<image>",
                          num_additional_image_tokens=1)


def build_model(p: Preset, tokenizer, seed: int):
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    vision = CLIPVisionConfig(hidden_size=p.vision_hidden, intermediate_size=2 * p.vision_hidden,
                              num_hidden_layers=p.vision_layers, num_attention_heads=p.vision_heads,
                              image_size=IMAGE_SIZE, patch_size=PATCH_SIZE,
                              projection_dim=p.vision_hidden)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=p.hidden,
                       intermediate_size=p.intermediate, num_hidden_layers=p.layers,
                       num_attention_heads=p.heads, num_key_value_heads=p.heads,
                       max_position_embeddings=512, tie_word_embeddings=False,
                       pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id)
    n_img = (IMAGE_SIZE // PATCH_SIZE) ** 2
    cfg = LlavaConfig(vision_config=vision, text_config=text,
                      image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                      projector_hidden_act="gelu", vision_feature_select_strategy="default",
                      vision_feature_layer=-1, image_seq_length=n_img)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg)
    if p.init_scale != 1.0:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "language_model" in name and name.endswith("proj.weight"):
                    param.mul_(p.init_scale)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def ensure_tiny(preset: str = "small", pretrain_base: bool = True, seed: int = 0,
                quiet: bool = False) -> Path:
    """Return the folder of the built-in model, building (and pre-training) it if not cached.

    Processes that ask for the same recipe at once (two commands, two test workers) build it
    once: the others wait on a lock file beside the folder and then read what it wrote."""
    target = recipe_dir(preset, pretrain_base, seed)
    if (target / "recipe.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(target, quiet):
        if (target / "recipe.json").is_file():  # built while we waited
            return target
        return _build(target, preset, pretrain_base, seed, quiet)


@contextmanager
def _build_lock(target: Path, quiet: bool):
    """An exclusive ``flock`` on ``<target>.lock`` (released when the process ends, however)."""
    import fcntl

    with open(target.with_name(target.name + ".lock"), "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not quiet:
                print(f"[fedmllm] waiting for another process building {target}", flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build(target: Path, preset: str, pretrain_base: bool, seed: int, quiet: bool) -> Path:
    """Build the recipe under :func:`build_determinism` and save it into ``target``."""
    p = PRESETS[preset]
    t0 = time.perf_counter()
    if not quiet:
        what = "building and pre-training" if pretrain_base else "building"
        print(f"[fedmllm] {what} the built-in '{preset}' model (once; cached in {target})",
              flush=True)
    with build_determinism():
        torch.manual_seed(seed)
        tokenizer = build_tokenizer(corpus_text(TOKENIZER_CORPUS, seed=seed), p.vocab_size)
        processor = build_processor(tokenizer)
        model = build_model(p, tokenizer, seed)
        stats: dict = {"pretrain": None}
        if pretrain_base:
            stats["pretrain"] = pretrain(model, processor, p, seed,
                                         progress=None if quiet else _StepLines())
        stats["build_seconds"] = round(time.perf_counter() - t0, 2)
        stats["parameters"] = sum(t.numel() for t in model.parameters())
        stats["threads"], stats["torch"] = BUILD_THREADS, torch.__version__
        _save(target, model, processor, {"recipe": recipe(preset, pretrain_base, seed),
                                         "stats": stats})
    if not quiet:
        print(f"[fedmllm] built-in model ready: {stats}", flush=True)
    return target


def _save(target: Path, model, processor, info: dict) -> None:
    """Write the folder atomically, its weights' hash into ``info["stats"]`` and recipe.json."""
    try:
        with atomic_dir(target, replace=False) as tmp:
            model.save_pretrained(tmp)
            processor.save_pretrained(tmp)
            info["stats"]["weights_sha256"] = weights_hash(tmp)
            (tmp / "recipe.json").write_text(json.dumps(info, indent=2))
    except OSError:
        # another process finished the same recipe first: its folder is as good as ours
        if not (target / "recipe.json").is_file():
            raise


@contextmanager
def build_determinism(threads: int = BUILD_THREADS) -> Iterator[None]:
    """Run the body with torch's intra-op threads set to ``threads`` and
    ``torch.use_deterministic_algorithms(True)``; both restored afterwards (also on error).

    The thread count fixes the order of every float reduction (a matmul's or a sum's split
    over threads), the deterministic algorithms rule out kernels whose order varies from run to
    run: together the build's weights are one function of the recipe on a given torch build and
    CPU instruction set (another torch version, or another kernel for another ISA, may round
    differently)."""
    threads_before = torch.get_num_threads()
    det_before = torch.are_deterministic_algorithms_enabled()
    warn_before = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads_before)
        torch.use_deterministic_algorithms(det_before, warn_only=warn_before)


def weights_hash(folder: str | Path) -> str:
    """sha256 over a saved model's tensors: for each name in sorted order, the name (UTF-8) and
    then the tensor's raw bytes, over every ``*.safetensors`` file of ``folder``. Equal hashes
    of one architecture: the same weights bit for bit (the shapes are not hashed, the names
    fix them); the files' JSON headers do not count. Recorded at build; computed on demand
    for cache entries built before it was recorded."""
    from safetensors.torch import load_file

    tensors: dict = {}
    for path in sorted(Path(folder).glob("*.safetensors")):
        tensors.update(load_file(path))
    if not tensors:
        raise FileNotFoundError(f"{folder}: no *.safetensors weights to hash")
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class _StepLines:
    """A progress line every 10 s (and at the last step): step, loss, seconds."""

    def __init__(self, every: float = 10.0):
        self.every, self.last = every, 0.0

    def __call__(self, step: int, steps: int, loss: float, seconds: float) -> None:
        if seconds - self.last >= self.every or step == steps:
            self.last = seconds
            print(f"[fedmllm] pre-training step {step}/{steps}, loss {loss:.3f}, "
                  f"{seconds:.0f} s", flush=True)
