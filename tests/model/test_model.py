"""Model layer: the built-in model loads like any hub model; LoRA targets; adapter state;
collation."""

import re

import pytest
import torch
from PIL import Image

from fedmllm.model.collate import IGNORE_INDEX, collate, encode_sample
from fedmllm.model.loading import ModelError, language_model_prefix, load_vlm, num_lm_layers
from fedmllm.model.lora import AdapterState, lora_target_regex, set_adapter_state, wrap_lora


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load_vlm(tiny_dir)


def red():
    return Image.new("RGB", (32, 32), (220, 30, 30))


def test_tiny_loads_through_auto_classes(tiny, tiny_dir):
    model, proc = tiny
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert type(proc).__name__ == "LlavaProcessor"
    # the PIL processor the build saves; AutoProcessor may pick the torchvision-backed one of
    # the same class family where torchvision is installed
    assert type(proc.image_processor).__name__.startswith("CLIPImageProcessor")
    assert proc.tokenizer.chat_template
    n = sum(p.numel() for p in model.parameters())
    assert 3e5 < n < 3e6  # 0.70 M parameters
    assert not any(p.requires_grad for p in model.parameters())
    assert (tiny_dir / "recipe.json").is_file()


def test_target_regex_selects_language_model_only(tiny):
    model, _ = tiny
    regex = lora_target_regex(model, ["q_proj", "v_proj"])
    hits = [n for n, _ in model.named_modules() if re.fullmatch(regex, n)]
    assert hits and all("language_model" in n for n in hits)
    assert len(hits) == 2 * num_lm_layers(model)
    # the vision tower also has q_proj modules: none may match
    assert any("vision_tower" in n and n.endswith("q_proj") for n, _ in model.named_modules())
    last = lora_target_regex(model, ["q_proj"], [-1])
    hits = [n for n, _ in model.named_modules() if re.fullmatch(last, n)]
    last = num_lm_layers(model) - 1
    assert hits == [f"{language_model_prefix(model)}.layers.{last}.self_attn.q_proj"]
    with pytest.raises(ModelError, match="out of range"):
        lora_target_regex(model, ["q_proj"], [99])


def test_adapter_state_checks_keys(tiny_dir):
    base, _ = load_vlm(tiny_dir)
    model = wrap_lora(base, r=4, alpha=8, dropout=0.0)
    adapter = AdapterState(model)
    state = adapter.get()
    assert state and all(".lora_A." in k or ".lora_B." in k for k in state)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert len(trainable) == len(state)
    # a copy, packed end to end in one buffer in key order (one kernel per client to aggregate)
    params = dict(model.named_parameters())
    first = next(iter(state.values()))
    assert all(t.untyped_storage().data_ptr() == first.untyped_storage().data_ptr()
               for t in state.values())
    offsets = [t.storage_offset() for t in state.values()]
    sizes = [t.numel() for t in state.values()]
    assert offsets == [sum(sizes[:i]) for i in range(len(sizes))]
    assert not any(t.data_ptr() == p.data_ptr() for t in state.values()
                   for p in params.values())
    changed = {k: v + 1.0 for k, v in state.items()}
    set_adapter_state(model, changed)
    assert all(torch.equal(adapter.get()[k], changed[k]) for k in state)
    key = next(iter(state))
    with pytest.raises(ModelError, match="missing 1 key"):
        adapter.set({k: v for k, v in state.items() if k != key})
    with pytest.raises(ModelError, match="unexpected 1 key"):
        adapter.set({**state, "foo.lora_A.weight": torch.zeros(1)})
    with pytest.raises(ModelError, match="shape"):
        adapter.set({**state, key: torch.zeros(3, 3)})


def test_modules_to_save_are_communicated(tiny_dir):
    base, _ = load_vlm(tiny_dir)
    model = wrap_lora(base, r=4, alpha=8, dropout=0.0, modules_to_save=["multi_modal_projector"])
    keys = AdapterState(model).keys()
    assert any("multi_modal_projector" in k for k in keys)
    assert any("lora_A" in k for k in keys)


def test_labels_supervise_answer_and_end_token_only(tiny):
    _, proc = tiny
    tok = proc.tokenizer
    e = encode_sample(proc, "What colour is the square?", red(), "red")
    sup = e.labels != IGNORE_INDEX
    assert tok.decode(e.input_ids[sup]) == "red<|end|>"
    assert not sup[: e.prompt_len].any()
    n_img = int((e.input_ids == proc.image_token_id).sum())
    assert n_img == 16 and e.vision["pixel_values"].shape == (1, 3, 32, 32)
    t = encode_sample(proc, "Name a colour.", None, "blue")
    assert tok.decode(t.input_ids[t.labels != IGNORE_INDEX]) == "blue<|end|>"
    assert t.vision == {} and int((t.input_ids == proc.image_token_id).sum()) == 0
    p = encode_sample(proc, "Name a colour.", None)  # prompt for generation
    assert p.labels is None and torch.equal(p.input_ids, t.input_ids[: t.prompt_len])


def _mixed_batch_matches_single(model, proc):
    a = encode_sample(proc, "What colour is the square?", red(), "red")
    b = encode_sample(proc, "Name a colour.", None, "blue")
    pad = proc.tokenizer.pad_token_id
    with torch.no_grad():
        mixed = model(**collate([b, a], pad)).logits
        alone_a = model(**collate([a], pad)).logits[0]
        alone_b = model(**collate([b], pad)).logits[0]
    torch.testing.assert_close(mixed[1, : len(a.input_ids)], alone_a, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(mixed[0, : len(b.input_ids)], alone_b, atol=1e-5, rtol=1e-4)
    loss = model(**collate([b, a], pad)).loss
    assert torch.isfinite(loss)


def test_text_only_and_image_samples_batch_together_llava(tiny):
    _mixed_batch_matches_single(*tiny)


def test_collation_is_not_llava_specific_idefics3(tiny):
    """The same path on an Idefics3 tiny config (batch-major pixel tensors, padded images)."""
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3Processor,
        LlamaConfig,
    )
    from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    from fedmllm.model.tiny import CHAT_TEMPLATE, build_tokenizer

    tok = build_tokenizer(["what colour is the square", "name a colour", "red blue"] * 30, 400)
    ip = Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": 32},
                                   max_image_size={"longest_edge": 32})
    proc = Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=4,
                             chat_template=CHAT_TEMPLATE)
    vc = Idefics3VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                              num_attention_heads=2, image_size=32, patch_size=8)
    tc = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                     num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                     pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = Idefics3ForConditionalGeneration(
        Idefics3Config(vision_config=vc, text_config=tc, scale_factor=2,
                       image_token_id=proc.image_token_id)).eval()
    assert language_model_prefix(model) == "model.text_model"
    _mixed_batch_matches_single(model, proc)
    e = encode_sample(proc, "What colour is the square?", red(), "red")
    assert tok.decode(e.input_ids[e.labels != IGNORE_INDEX]) == "red<|end|>"


def test_load_errors_are_one_line(tmp_path):
    with pytest.raises(ModelError, match="not a model folder"):
        load_vlm(tmp_path)


def test_load_vlm_gives_a_tokenizer_without_pad_token_the_eos_token(tiny_dir, tmp_path):
    model, proc = load_vlm(tiny_dir)  # a fresh copy: the module's fixture stays as it is
    proc.tokenizer.pad_token = None
    assert proc.tokenizer.pad_token_id is None
    model.save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    _, loaded = load_vlm(tmp_path)
    tok = loaded.tokenizer
    assert tok.pad_token_id is not None and tok.pad_token_id == tok.eos_token_id


@pytest.mark.slow
def test_two_builds_of_one_recipe_at_once_build_it_once(tmp_path, monkeypatch):
    """Two callers of ``ensure_tiny`` for a recipe not yet cached (two commands, two test
    workers): one builds, the other waits on the lock and reads the same folder."""
    import threading

    from fedmllm.model.tiny import build

    monkeypatch.setenv("FEDMLLM_CACHE", str(tmp_path))
    calls, real = [], build._build

    def counted(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(build, "_build", counted)
    out: list = []
    threads = [threading.Thread(target=lambda: out.append(build.ensure_tiny("tiny", False,
                                                                             quiet=True)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(out) == 2 and out[0] == out[1]
    assert (out[0] / "recipe.json").is_file()
