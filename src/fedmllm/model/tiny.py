"""The built-in offline vision-language model: a small LLaVA built from config, pre-trained here.

Nothing is downloaded. A recipe (preset sizes, tokenizer corpus, pre-training schedule) is built
deterministically into a folder with ``save_pretrained`` and cached under
``$FEDMLLM_CACHE`` (default ``~/.cache/fedmllm``), keyed by a hash of the recipe. The folder is then
loaded by the same :func:`fedmllm.model.loading.load_vlm` as any hub model.

Pieces (all real ``transformers`` classes):
- vision: ``CLIPVisionModel`` config (32x32 images, 8x8 patches -> 16 image tokens);
- language: ``LlamaConfig`` decoder;
- ``LlavaForConditionalGeneration`` joining them through the LLaVA projector;
- tokenizer: byte-level BPE trained with ``tokenizers`` on generated text, wrapped as a
  ``PreTrainedTokenizerFast`` with a chat template;
- processor: ``LlavaProcessor`` with the PIL ``CLIPImageProcessorPil`` (no torchvision).

Pre-training is a short, full-parameter, centralized run on a generic caption/QA corpus
(:func:`fedmllm.data.synth.make_pretrain_corpus`) that is *not* the downstream benchmark, so that
federated LoRA fine-tuning starts from a base that reads images and text.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

RECIPE_VERSION = 3
TOKENIZER_CORPUS = 2000  # corpus_text(n): n samples per generator
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<image>", "<|user|>", "<|assistant|>", "<|end|>"]
IMAGE_SIZE = 32
PATCH_SIZE = 8

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


PRESETS: dict[str, Preset] = {
    "tiny": Preset(vocab_size=1024, hidden=128, layers=2, heads=4, intermediate=256,
                   vision_hidden=64, vision_layers=2, vision_heads=2,
                   pretrain_steps=300, pretrain_batch=16, pretrain_lr=2e-3, pretrain_samples=4000),
    "small": Preset(vocab_size=2048, hidden=256, layers=4, heads=4, intermediate=512,
                    vision_hidden=128, vision_layers=3, vision_heads=4,
                    pretrain_steps=400, pretrain_batch=16, pretrain_lr=1.5e-3, pretrain_samples=6000),
}


def cache_root() -> Path:
    return Path(os.environ.get("FEDMLLM_CACHE", Path.home() / ".cache" / "fedmllm"))


def recipe(preset: str, pretrain: bool, seed: int = 0) -> dict:
    if preset not in PRESETS:
        raise ValueError(f"model.preset: unknown preset '{preset}' (choices: {', '.join(PRESETS)})")
    from ..data.synth import PRETRAIN_CORPUS_VERSION

    return {"version": RECIPE_VERSION, "corpus": PRETRAIN_CORPUS_VERSION, "preset": preset, "sizes": asdict(PRESETS[preset]),
            "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE, "tokenizer_corpus": TOKENIZER_CORPUS, "pretrain": pretrain, "seed": seed}


def recipe_dir(preset: str, pretrain: bool = True, seed: int = 0) -> Path:
    r = recipe(preset, pretrain, seed)
    digest = hashlib.sha256(json.dumps(r, sort_keys=True).encode()).hexdigest()[:12]
    tag = "pt" if pretrain else "init"
    return cache_root() / f"{preset}-{tag}-{digest}"


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
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

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
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def pretrain(model, processor, p: Preset, seed: int) -> dict:
    """Short deterministic full-parameter pre-training on the generic corpus; returns stats."""
    from ..data.synth import make_pretrain_corpus
    from .collate import collate, encode_sample

    corpus = make_pretrain_corpus(p.pretrain_samples, seed=seed + 1)
    encoded = [encode_sample(processor, s.question or "", s.image, s.answer, sample_id=s.id)
               for s in corpus]
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=p.pretrain_lr, weight_decay=0.01)
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
    model.eval()
    k = max(1, len(losses) // 10)
    return {"steps": p.pretrain_steps, "seconds": round(time.perf_counter() - t0, 2),
            "loss_first": round(sum(losses[:k]) / k, 4), "loss_last": round(sum(losses[-k:]) / k, 4)}


def ensure_tiny(preset: str = "small", pretrain_base: bool = True, seed: int = 0,
                quiet: bool = False) -> Path:
    """Return the folder of the built-in model, building (and pre-training) it if not cached."""
    from ..data.synth import corpus_text

    target = recipe_dir(preset, pretrain_base, seed)
    if (target / "recipe.json").is_file():
        return target
    p = PRESETS[preset]
    t0 = time.perf_counter()
    if not quiet:
        what = "building and pre-training" if pretrain_base else "building"
        print(f"[fedmllm] {what} the built-in '{preset}' model (once; cached in {target})",
              flush=True)
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(corpus_text(TOKENIZER_CORPUS, seed=seed), p.vocab_size)
    processor = build_processor(tokenizer)
    model = build_model(p, tokenizer, seed)
    stats: dict = {"pretrain": None}
    if pretrain_base:
        stats["pretrain"] = pretrain(model, processor, p, seed)
    stats["build_seconds"] = round(time.perf_counter() - t0, 2)
    stats["parameters"] = sum(t.numel() for t in model.parameters())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "recipe.json").write_text(json.dumps({"recipe": recipe(preset, pretrain_base, seed),
                                                     "stats": stats}, indent=2))
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not quiet:
        print(f"[fedmllm] built-in model ready: {stats}", flush=True)
    return target
