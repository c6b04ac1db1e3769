"""Tiny offline checkpoints of real vision-language model families, for the family tests.

Each builder writes a folder that a user could have downloaded: ``config.json`` + weights from
the family's own transformers config and model classes (tiny sizes, random weights), and the
family's own processor class with its PIL image processor, a tokenizer carrying the family's
special tokens, and a chat template that renders the family's published prompt format
(written here from the format, not copied). Nothing is downloaded: the tokenizer is a byte-level
BPE trained on a few hundred generated sentences.

What each folder keeps from the real family is what fedmllm's code paths depend on: the model
class and its vision-token merging, the processor's image-token expansion, the image tensor
layout (per image, per patch, per sample), the special tokens and the chat format (end-of-turn
token, BOS in the template, generation prompt).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from fedmllm.model.loading import torchvision_problem

VOCAB = 320
HIDDEN = 32
#: every vision tower gets 32 x 32 images cut in 8 x 8 patches (16 patches)
IMAGE, PATCH = 32, 8


def _corpus() -> list[str]:
    """Sentences with the words the synthetic benchmark uses, for a byte-level BPE."""
    from fedmllm.model.tiny import corpus_text

    return corpus_text(40, seed=0)


_CORPUS: list[str] | None = None


def tokenizer(specials: dict[str, str], extra: list[str], chat_template: str, *,
              add_bos: bool = False, named: dict[str, str] | None = None):
    """A fast tokenizer with ``specials`` (``bos_token``/``eos_token``/``pad_token``...), the
    ``extra`` added special tokens, optional ``named`` model-specific tokens (readable as
    ``tok.image_token`` / ``tok.image_token_id``, as the Gemma 3 and MiniCPM-V processors
    need) and ``add_bos``: prepend BOS when encoding, as Llama and Gemma tokenizers do."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    global _CORPUS
    if _CORPUS is None:
        _CORPUS = _corpus()
    named = named or {}
    all_special = list(dict.fromkeys([*specials.values(), *extra, *named.values()]))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=all_special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    if add_bos:
        bos = specials["bos_token"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.token_to_id(bos))])
    kwargs = dict(specials)
    if named:
        kwargs["extra_special_tokens"] = named
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)
    plain = [t for t in extra if t not in named.values()]
    if plain:
        fast.add_special_tokens({"additional_special_tokens": plain},
                                replace_extra_special_tokens=False)
    fast.chat_template = chat_template
    return fast


def _ids(tok, *tokens: str) -> list[int]:
    return [tok.convert_tokens_to_ids(t) for t in tokens]


def _llama(tok, **kw):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tok), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                       num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                       max_position_embeddings=1024, pad_token_id=tok.pad_token_id,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **kw)


def _qwen2_text(tok):
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=len(tok), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                       num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                       max_position_embeddings=1024, pad_token_id=tok.pad_token_id,
                       eos_token_id=tok.eos_token_id, tie_word_embeddings=False)


def _clip(**kw):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=1,
                            num_attention_heads=2, image_size=IMAGE, patch_size=PATCH,
                            projection_dim=HIDDEN, **kw)


def _siglip(**kw):
    from transformers import SiglipVisionConfig

    return SiglipVisionConfig(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                              num_hidden_layers=1, num_attention_heads=2, image_size=IMAGE,
                              patch_size=PATCH, **kw)


def _finish(model, tok):
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model


# ----------------------------------------------------------------------------- chat formats
# Each renders the family's published conversation format for messages whose content is a
# list of {"type": "image"} / {"type": "text", "text": ...} parts (or a plain string).

_PARTS = ("{% if message['content'] is string %}{{ message['content'] }}{% else %}"
          "{% for part in message['content'] %}{% if part['type'] == 'image' %}{IMAGE}"
          "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
          "{% endif %}")


def _parts(image: str) -> str:
    return _PARTS.replace("{IMAGE}", image)


#: LLaVA 1.5 (llava-hf): "USER: <image>\n... ASSISTANT: answer" -- no end-of-turn token (the
#: original training appended </s>), images before the text, generation prompt "ASSISTANT:".
LLAVA15 = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for part in message['content'] if part['type'] == 'image' %}{{ '<image>\n' }}{% endfor %}"
    "{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] + ' ' }}"
    "{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}")

#: LLaVA-NeXT on Mistral (llava-v1.6-mistral): "[INST] <image>\n... [/INST] answer</s>".
LLAVA_NEXT = (
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' }}"
    "{% for part in message['content'] if part['type'] == 'image' %}{{ '<image>\n' }}{% endfor %}"
    "{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] }}{% endfor %}"
    "{{ ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + message['content'][0]['text'] + '</s>' }}{% endif %}{% endfor %}")

#: LLaVA-OneVision (Qwen2 ChatML): the llava-hf template writes "<|im_start|>assistant " (a
#: space) in a rendered conversation but "<|im_start|>assistant\n" as the generation prompt.
LLAVA_ONEVISION = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% for part in message['content'] if part['type'] == 'image' %}{{ '<image>' }}{% endfor %}"
    "{% for part in message['content'] if part['type'] == 'text' %}{{ '\n' + part['text'] }}"
    "{% endfor %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

#: Idefics3 (Llama 3): "<|begin_of_text|>User:<image>...<end_of_utterance>\nAssistant: ...".
_IDEFICS = (
    "{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    + _parts("<image>") + "<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}")
IDEFICS3 = "<|begin_of_text|>" + _IDEFICS
#: SmolVLM: the Idefics3 format after "<|im_start|>".
SMOLVLM = "<|im_start|>" + _IDEFICS

#: Qwen2-VL / Qwen2.5-VL (ChatML, default system prompt, vision markers around the pad token).
QWEN_VL = (
    "{% if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    + _parts("<|vision_start|><|image_pad|><|vision_end|>") + "<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

#: Gemma 3: BOS in the template, "model" as the assistant role, <start_of_image> placeholder.
GEMMA3 = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' }}" + _parts("<start_of_image>")
    + "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}"
    "{% endif %}")

#: MiniCPM-V 4.6 (Qwen ChatML with the image placeholder "(<image>./</image>)").
MINICPMV = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    + _parts("(<image>./</image>)\n") + "<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

_LLAMA2 = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


# ----------------------------------------------------------------------------- builders

def llava15():
    from transformers import (
        CLIPImageProcessorPil,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tok = tokenizer(_LLAMA2, ["<image>"], LLAVA15, add_bos=True)
    ip = CLIPImageProcessorPil(size={"shortest_edge": IMAGE},
                               crop_size={"height": IMAGE, "width": IMAGE})
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=PATCH,
                          vision_feature_select_strategy="default", chat_template=LLAVA15,
                          image_token="<image>", num_additional_image_tokens=1)
    cfg = LlavaConfig(vision_config=_clip(), text_config=_llama(tok),
                      image_token_id=_ids(tok, "<image>")[0], vision_feature_layer=-1,
                      vision_feature_select_strategy="default", image_seq_length=16)
    return _finish(LlavaForConditionalGeneration(cfg), tok), proc


PINPOINTS = [[IMAGE, IMAGE], [IMAGE, 2 * IMAGE], [2 * IMAGE, IMAGE], [2 * IMAGE, 2 * IMAGE]]


def llava_next():
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
    )

    tok = tokenizer(_LLAMA2, ["<image>"], LLAVA_NEXT, add_bos=True)
    ip = LlavaNextImageProcessorPil(size={"shortest_edge": IMAGE},
                                    crop_size={"height": IMAGE, "width": IMAGE},
                                    image_grid_pinpoints=PINPOINTS)
    proc = LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=PATCH,
                              vision_feature_select_strategy="default", chat_template=LLAVA_NEXT,
                              image_token="<image>", num_additional_image_tokens=1)
    cfg = LlavaNextConfig(vision_config=_clip(), text_config=_llama(tok),
                          image_token_id=_ids(tok, "<image>")[0], image_grid_pinpoints=PINPOINTS,
                          vision_feature_layer=-1, vision_feature_select_strategy="default")
    return _finish(LlavaNextForConditionalGeneration(cfg), tok), proc


_CHATML = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}


def llava_onevision():
    from transformers import LlavaOnevisionProcessor

    model, tok, ip = _llava_onevision_parts()
    from transformers import LlavaOnevisionVideoProcessor  # needs torchvision

    vp = LlavaOnevisionVideoProcessor(size={"height": IMAGE, "width": IMAGE})
    proc = LlavaOnevisionProcessor(image_processor=ip, tokenizer=tok, video_processor=vp,
                                   **ONEVISION_PROCESSOR)
    return model, proc


ONEVISION_PROCESSOR = {"num_image_tokens": 16, "vision_feature_select_strategy": "full",
                       "chat_template": LLAVA_ONEVISION, "image_token": "<image>",
                       "video_token": "<video>"}


def _llava_onevision_parts():
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
    )

    tok = tokenizer(_CHATML, ["<|im_start|>", "<image>", "<video>"], LLAVA_ONEVISION)
    ip = LlavaOnevisionImageProcessorPil(size={"height": IMAGE, "width": IMAGE},
                                         image_grid_pinpoints=PINPOINTS)
    cfg = LlavaOnevisionConfig(vision_config=_siglip(), text_config=_qwen2_text(tok),
                               image_token_id=_ids(tok, "<image>")[0],
                               video_token_id=_ids(tok, "<video>")[0],
                               image_grid_pinpoints=PINPOINTS, vision_feature_layer=-1,
                               vision_feature_select_strategy="full",
                               vision_aspect_ratio="anyres_max_9")
    return _finish(LlavaOnevisionForConditionalGeneration(cfg), tok), tok, ip


_IDEFICS_TOKENS = ["<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>"]


def idefics3():
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
        Idefics3VisionConfig,
    )

    specials = {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
                "pad_token": "<|reserved_special_token_0|>"}
    tok = tokenizer(specials, _IDEFICS_TOKENS, IDEFICS3)
    ip = Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": IMAGE},
                                   max_image_size={"longest_edge": IMAGE})
    proc = Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=4,
                             chat_template=IDEFICS3)
    vc = Idefics3VisionConfig(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                              num_hidden_layers=1, num_attention_heads=2, image_size=IMAGE,
                              patch_size=PATCH)
    cfg = Idefics3Config(vision_config=vc, text_config=_llama(tok), scale_factor=2,
                         image_token_id=proc.image_token_id)
    model = _finish(Idefics3ForConditionalGeneration(cfg), tok)
    model.generation_config.eos_token_id = _ids(tok, "<end_of_utterance>", "<|end_of_text|>")
    return model, proc


def smolvlm():
    """SmolVLM's processor needs the ``num2words`` package (it spells out video timestamps)
    and torchvision (its video processor, which it calls on images too)."""
    from transformers import SmolVLMProcessor, SmolVLMVideoProcessor

    model, tok, ip = _smolvlm_parts()
    vp = SmolVLMVideoProcessor()
    proc = SmolVLMProcessor(image_processor=ip, tokenizer=tok, video_processor=vp,
                            image_seq_len=4, chat_template=SMOLVLM)
    return model, proc


def _smolvlm_parts():
    from transformers import (
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMImageProcessorPil,
        SmolVLMVisionConfig,
    )

    specials = {"bos_token": "<|im_start|>", "eos_token": "<end_of_utterance>",
                "pad_token": "<|im_end|>"}
    tok = tokenizer(specials, _IDEFICS_TOKENS, SMOLVLM)
    ip = SmolVLMImageProcessorPil(do_image_splitting=False, size={"longest_edge": IMAGE},
                                  max_image_size={"longest_edge": IMAGE})
    vc = SmolVLMVisionConfig(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                             num_hidden_layers=1, num_attention_heads=2, image_size=IMAGE,
                             patch_size=PATCH)
    cfg = SmolVLMConfig(vision_config=vc, text_config=_llama(tok), scale_factor=2,
                        image_token_id=tok.convert_tokens_to_ids("<image>"))
    return _finish(SmolVLMForConditionalGeneration(cfg), tok), tok, ip


def write_pieces(folder: Path, model, tok, ip, processor_class: str, chat_template: str,
                 **processor) -> Path:
    """A checkpoint folder as downloaded (weights, tokenizer, image processor, processor config,
    chat template), written without building the processor class: for families whose
    processor cannot be built here (SmolVLM without ``num2words``, video families without
    torchvision), to test what a user of such a download is told."""
    import json

    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    image = json.loads(ip.to_json_string())
    image["image_processor_type"] = type(ip).__name__.removesuffix("Pil")
    (folder / "processor_config.json").write_text(json.dumps(
        {"image_processor": image, **processor, "processor_class": processor_class},
        indent=2))
    (folder / "chat_template.jinja").write_text(chat_template)
    return folder


def smolvlm_pieces(folder: Path) -> Path:
    torch.manual_seed(0)
    model, tok, ip = _smolvlm_parts()
    return write_pieces(folder, model, tok, ip, "SmolVLMProcessor", SMOLVLM, image_seq_len=4)


def video_family_pieces(name: str, folder: Path) -> Path:
    """``name``'s folder (a family whose processor has a video part), written without
    torchvision."""
    torch.manual_seed(0)
    if name == "llava-onevision":
        model, tok, ip = _llava_onevision_parts()
        extra = {k: v for k, v in ONEVISION_PROCESSOR.items() if k != "chat_template"}
        return write_pieces(folder, model, tok, ip, "LlavaOnevisionProcessor", LLAVA_ONEVISION,
                            **extra)
    model, tok, ip, cls = _qwen_vl_parts("2" if name == "qwen2-vl" else "2.5")
    return write_pieces(folder, model, tok, ip, cls.__name__, QWEN_VL)


_QWEN_TOKENS = ["<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                "<|video_pad|>"]


def _qwen_vl_parts(version: str):
    from transformers import Qwen2VLImageProcessorPil

    tok = tokenizer(_CHATML, _QWEN_TOKENS, QWEN_VL)
    # 32 x 32 images: 4 x 4 patches of 8, merged 2 x 2 -> 4 image tokens
    ip = Qwen2VLImageProcessorPil(patch_size=PATCH, merge_size=2, temporal_patch_size=2,
                                  size={"shortest_edge": IMAGE * IMAGE,
                                        "longest_edge": IMAGE * IMAGE})
    image_id, video_id, start_id, end_id = _ids(tok, "<|image_pad|>", "<|video_pad|>",
                                                "<|vision_start|>", "<|vision_end|>")
    text = {"vocab_size": len(tok), "hidden_size": HIDDEN, "intermediate_size": 2 * HIDDEN,
            "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
            "max_position_embeddings": 1024, "pad_token_id": tok.pad_token_id,
            "eos_token_id": tok.eos_token_id, "bos_token_id": None,
            "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3],
                                "rope_theta": 10000.0}}
    ids = {"image_token_id": image_id, "video_token_id": video_id,
           "vision_start_token_id": start_id, "vision_end_token_id": end_id}
    if version == "2":
        from transformers import (
            Qwen2VLConfig,
            Qwen2VLForConditionalGeneration,
            Qwen2VLProcessor,
        )

        vision = {"depth": 1, "embed_dim": HIDDEN, "hidden_size": HIDDEN, "num_heads": 2,
                  "mlp_ratio": 2, "patch_size": PATCH, "spatial_merge_size": 2,
                  "temporal_patch_size": 2}
        cfg = Qwen2VLConfig(text_config=text, vision_config=vision, **ids)
        model_cls, proc_cls = Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    else:
        from transformers import (
            Qwen2_5_VLConfig,
            Qwen2_5_VLForConditionalGeneration,
            Qwen2_5_VLProcessor,
        )

        vision = {"depth": 2, "hidden_size": HIDDEN, "intermediate_size": 2 * HIDDEN,
                  "num_heads": 2, "out_hidden_size": HIDDEN, "patch_size": PATCH,
                  "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 2 * PATCH,
                  "fullatt_block_indexes": [1]}
        cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
        model_cls, proc_cls = Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
    return _finish(model_cls(cfg), tok), tok, ip, proc_cls


def _qwen_vl(version: str):
    from transformers import Qwen2VLVideoProcessor  # needs torchvision

    model, tok, ip, proc_cls = _qwen_vl_parts(version)
    vp = Qwen2VLVideoProcessor(patch_size=PATCH, merge_size=2, temporal_patch_size=2)
    return model, proc_cls(image_processor=ip, tokenizer=tok, video_processor=vp,
                           chat_template=QWEN_VL)


def qwen2_vl():
    return _qwen_vl("2")


def qwen2_5_vl():
    return _qwen_vl("2.5")


def gemma3():
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessorPil,
        Gemma3Processor,
        Gemma3TextConfig,
    )

    specials = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"}
    named = {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>",
             "eoi_token": "<end_of_image>"}
    tok = tokenizer(specials, ["<start_of_turn>", "<end_of_turn>"], GEMMA3, add_bos=True,
                    named=named)
    ip = Gemma3ImageProcessorPil(size={"height": IMAGE, "width": IMAGE})
    proc = Gemma3Processor(image_processor=ip, tokenizer=tok, image_seq_length=4,
                           chat_template=GEMMA3)
    text = Gemma3TextConfig(vocab_size=len(tok), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                            num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                            head_dim=16, max_position_embeddings=1024, sliding_window=64,
                            pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                            eos_token_id=tok.eos_token_id)
    boi, eoi, img = _ids(tok, "<start_of_image>", "<end_of_image>", "<image_soft_token>")
    cfg = Gemma3Config(text_config=text, vision_config=_siglip(), mm_tokens_per_image=4,
                       boi_token_index=boi, eoi_token_index=eoi, image_token_index=img)
    model = _finish(Gemma3ForConditionalGeneration(cfg), tok)
    model.generation_config.eos_token_id = _ids(tok, "<eos>", "<end_of_turn>")
    return model, proc


@dataclass(frozen=True)
class Family:
    """A family's builder and what its test checks about it."""

    name: str
    build: Callable
    #: image tokens one 32 x 32 image expands to in the prompt
    image_tokens: int


def has_torchvision() -> bool:
    """torchvision imports here: transformers can build processors that have a video part."""
    return torchvision_problem() is None


def has_num2words() -> bool:
    import importlib.util

    return importlib.util.find_spec("num2words") is not None


# Image tokens per 32 x 32 image. LLaVA-NeXT / OneVision (any resolution): the base image
# (16 patches) + its one 32 x 32 tile (16) + a newline token after each of the tile's 4 rows.
# Idefics3 / SmolVLM: 16 patches, pixel-shuffled 2 x 2 -> 4. Qwen2-VL: 4 x 4 patches merged
# 2 x 2 -> 4. Gemma 3: mm_tokens_per_image = 4. The models check the count against the number
# of image features they compute, so a wrong expansion fails the forward pass too.
#: families whose processor has a video part: transformers builds it only with torchvision
VIDEO_FAMILIES = ("llava-onevision", "qwen2-vl", "qwen2.5-vl")

ALL_FAMILIES = [
    Family("llava-1.5", llava15, 16),
    Family("llava-next", llava_next, 16 + 16 + 4),
    Family("llava-onevision", llava_onevision, 16 + 16 + 4),
    Family("idefics3", idefics3, 4),
    Family("smolvlm", smolvlm, 4),
    Family("qwen2-vl", qwen2_vl, 4),
    Family("qwen2.5-vl", qwen2_5_vl, 4),
    Family("gemma3", gemma3, 4),
]
#: the families that run here: the video ones (and SmolVLM, whose processor calls its video
#: part on images too, and needs num2words) only where torchvision imports
FAMILIES = [f for f in ALL_FAMILIES
            if has_torchvision() or (f.name not in VIDEO_FAMILIES and f.name != "smolvlm")]
FAMILIES = [f for f in FAMILIES if f.name != "smolvlm" or has_num2words()]


def build_folder(family: Family, folder: Path, seed: int = 0) -> Path:
    """Write ``family``'s tiny checkpoint (weights + processor) into ``folder``."""
    torch.manual_seed(seed)
    model, proc = family.build()
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder
