"""Each supported model family, end to end, on a tiny random checkpoint folder of its own
classes (:mod:`families`): loaded by ``model.name=<folder>`` as a user's download would be,
LoRA on the language model only, image-token accounting, prompt masking, text-only samples in
image batches, one federated round, evaluation by option scoring and by generation, the saved
adapter reloaded with ``PeftModel.from_pretrained`` on the original base with equal logits.
Checkpoints transformers cannot run here (SmolVLM without ``num2words``; a processor with a
video part without torchvision; remote code missing or not allowed; a remote model with its
own calling convention) are one-line errors.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from helpers.families import (
    FAMILIES,
    IMAGE,
    VIDEO_FAMILIES,
    build_folder,
    has_num2words,
    has_torchvision,
    smolvlm_pieces,
    tokenizer,
    video_family_pieces,
)
from PIL import Image

from fedmllm.cli import main
from fedmllm.config import load_config
from fedmllm.errors import ModelError
from fedmllm.model.collate import IGNORE_INDEX, collate, encode_sample
from fedmllm.model.loading import language_model_prefix, load_vlm
from fedmllm.model.lora import lora_target_regex

ANSWER = "red"


@pytest.fixture(scope="module", params=FAMILIES, ids=lambda f: f.name)
def family(request, tmp_path_factory):
    fam = request.param
    return fam, build_folder(fam, tmp_path_factory.mktemp(fam.name.replace(".", "_")))


def _image_token_id(model) -> int:
    cfg = model.config
    for key in ("image_token_id", "image_token_index"):
        if getattr(cfg, key, None) is not None:
            return int(getattr(cfg, key))
    raise AssertionError("no image token id in the config")


def _red():
    return Image.new("RGB", (IMAGE, IMAGE), (220, 30, 30))


def test_family_loads_and_encodes(family):
    """Loader, LoRA targets, image tokens, prompt masking, BOS once, mixed batches."""
    fam, folder = family
    model, proc = load_vlm(folder)
    tok = proc.tokenizer
    assert not any(p.requires_grad for p in model.parameters())

    # LoRA: the language model's attention only; the vision tower's projections stay out
    prefix = language_model_prefix(model)
    regex = lora_target_regex(model, ["q_proj", "k_proj", "v_proj", "o_proj"])
    names = [n for n, _ in model.named_modules()]
    hits = [n for n in names if re.fullmatch(regex, n)]
    assert len(hits) == 4 * len(model.get_decoder().layers)
    assert all(n.startswith(prefix + ".layers.") for n in hits)
    vision_proj = [n for n in names if not n.startswith(prefix)
                   and n.rsplit(".", 1)[-1] in ("q_proj", "k_proj", "v_proj", "qkv", "out_proj")]
    assert vision_proj, "the vision tower has attention projections of its own"

    # image tokens: what one image expands to, none for a text-only sample
    image_id = _image_token_id(model)
    a = encode_sample(proc, "What colour is the square?", _red(), ANSWER)
    b = encode_sample(proc, "Name a colour.", None, "blue")
    assert int((a.input_ids == image_id).sum()) == fam.image_tokens
    assert int((b.input_ids == image_id).sum()) == 0 and b.vision == {}
    # BOS at most once (templates that write it are not tokenized with another)
    if tok.bos_token_id is not None:
        assert int((a.input_ids == tok.bos_token_id).sum()) <= 1

    # prompt masking: only the answer and the token that ends it are supervised
    for e, answer in ((a, ANSWER), (b, "blue")):
        sup = (e.labels != IGNORE_INDEX).nonzero().flatten()
        assert int(sup[0]) >= e.prompt_len
        assert tok.decode(e.input_ids[sup], skip_special_tokens=True).strip() == answer
        last = int(e.input_ids[sup[-1]])
        assert last in tok.all_special_ids or last in tok.added_tokens_decoder
        assert torch.equal(sup, torch.arange(int(sup[0]), int(sup[-1]) + 1))
    # the generation prompt is the supervised sequence's prefix
    p = encode_sample(proc, "What colour is the square?", _red())
    assert torch.equal(p.input_ids, a.input_ids[: len(p.input_ids)])

    # text-only and image samples batch together, either padding side
    pad = tok.pad_token_id
    with torch.no_grad():
        alone = [model(**collate([e], pad)).logits[0] for e in (b, a)]
        for side in ("right", "left"):
            mixed = model(**collate([b, a], pad, padding_side=side)).logits
            for i, e in enumerate((b, a)):
                n, m = len(e.input_ids), mixed.shape[1]
                row = mixed[i, :n] if side == "right" else mixed[i, m - n:]
                torch.testing.assert_close(row, alone[i], atol=2e-5, rtol=1e-4)
        assert torch.isfinite(model(**collate([b, a], pad)).loss)


@pytest.mark.slow
def test_family_trains_evaluates_saves_and_reloads(family, tmp_path):
    """One federated round on a mixed-modality federation, scored evaluation, generation
    (``fedmllm eval --mode generate`` on the saved run), adapter reloaded in peft."""
    from peft import PeftModel

    from fedmllm.runtime import build_driver

    _fam, folder = family
    out = tmp_path / "run"
    cfg = load_config(None, [
        f"model.name={folder}", "fl.rounds=1", "fl.num_clients=2", "fl.clients_per_round=2",
        "fl.local_steps=2", "train.batch_size=4", "data.train_size=24", "data.test_size=6",
        "data.scenario=missing", "data.min_per_client=4", "eval.every=1", "eval.batch_size=6",
        "lora.r=4", "train.lr=1e-2", "lora.dropout=0.0", f"output.dir={out}",
        "output.progress=false", "output.plot=false"])
    sim = build_driver(cfg)
    result = sim.run()
    row = result.rows[0]
    assert all(torch.isfinite(torch.tensor(v)) for v in row["train_loss"].values())
    ev = row["eval"]
    assert 0.0 <= ev["accuracy"] <= 1.0
    assert {"image_text", "text_only", "image_only"} <= set(ev["per_modality"])
    assert any(t.abs().sum() > 0 for k, t in sim.global_state.items() if "lora_B" in k)

    # generation, through the command a user runs on the finished run
    assert main(["-q", "eval", "--run", str(out), "--mode", "generate", "--max-new-tokens", "4",
                 "--views", "image_text,text_only", "--out", str(tmp_path / "gen")]) == 0
    gen = json.loads((tmp_path / "gen" / "eval.json").read_text())
    preds = [json.loads(line) for line in
             (tmp_path / "gen" / "predictions.jsonl").read_text().splitlines()]
    assert preds and all(isinstance(p.get("text", p.get("generated", "")), str) for p in preds)
    assert gen

    # the saved adapter on the original base, in peft, gives the trained model's logits
    base, proc = load_vlm(folder)
    loaded = PeftModel.from_pretrained(base, out / "adapter").eval()
    sim.bundle.adapter.set(sim.global_state)
    sim.bundle.model.eval()
    batch = collate([encode_sample(proc, "What colour is the square?", _red(), ANSWER),
                     encode_sample(proc, "Name a colour.", None, "blue")],
                    proc.tokenizer.pad_token_id)
    with torch.no_grad():
        ours = sim.bundle.model(**batch).logits
        theirs = loaded(**batch).logits
        with loaded.disable_adapter():
            plain = loaded(**batch).logits
    assert torch.equal(ours, theirs)
    assert not torch.allclose(theirs, plain)


# ----------------------------------------------------------------------------- one-line errors

def _one_line(capsys, argv: list[str]) -> str:
    """The error line of ``fedmllm <argv>`` (exit 2, no traceback). A run whose folder was
    already started adds the line saying how to resume it after the fix."""
    capsys.readouterr()
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("fedmllm: error: ") and "Traceback" not in "".join(lines)
    assert len(lines) == 1 or (len(lines) == 2 and "--resume" in lines[1]), lines
    return lines[0]


@pytest.mark.skipif(has_num2words(), reason="num2words is installed: SmolVLM runs end to end")
def test_smolvlm_without_num2words_is_one_line(tmp_path, capsys):
    folder = smolvlm_pieces(tmp_path / "smolvlm")
    with pytest.raises(ModelError, match="num2words"):
        load_vlm(folder)
    err = _one_line(capsys, ["run", f"model.name={folder}", f"output.dir={tmp_path / 'o'}",
                             "fl.rounds=1", "output.progress=false"])
    assert "num2words" in err


@pytest.mark.skipif(has_torchvision(), reason="torchvision imports: these families run end to end")
@pytest.mark.parametrize("name", VIDEO_FAMILIES)
def test_video_family_without_torchvision_is_one_line(name, tmp_path, capsys):
    """A downloaded Qwen2-VL / Qwen2.5-VL / LLaVA-OneVision folder where torchvision does not
    import: transformers cannot build its processor (the video part); the user is told why
    and what to install, in one line, before any training starts."""
    folder = video_family_pieces(name, tmp_path / "ckpt")
    with pytest.raises(ModelError, match=r"video part.*torchvision"):
        load_vlm(folder)
    err = _one_line(capsys, ["run", f"model.name={folder}", f"output.dir={tmp_path / 'o'}",
                             "fl.rounds=1", "output.progress=false"])
    assert "torchvision" in err and "pip install" in err


MINICPMV_AUTO_MAP = {"AutoConfig": "configuration_minicpm.MiniCPMVConfig",
                     "AutoModel": "modeling_minicpmv.MiniCPMV",
                     "AutoModelForCausalLM": "modeling_minicpmv.MiniCPMV"}


def test_remote_code_folder_needs_permission_and_its_files(tmp_path, capsys):
    """A MiniCPM-V 2.6 style folder (auto_map to the repository's own Python files)."""
    folder = tmp_path / "minicpmv"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(
        {"model_type": "minicpmv", "architectures": ["MiniCPMV"],
         "auto_map": MINICPMV_AUTO_MAP}))
    with pytest.raises(ModelError, match="model.trust_remote_code=true") as e:
        load_vlm(folder)
    assert "modeling_minicpmv" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ModelError, match="configuration_minicpm.py, modeling_minicpmv.py"):
        load_vlm(folder, trust_remote_code=True)
    base = ["run", f"model.name={folder}", f"output.dir={tmp_path / 'o'}", "fl.rounds=1"]
    assert "model.trust_remote_code=true" in _one_line(capsys, base)
    assert "modeling_minicpmv.py" in _one_line(capsys, [*base, "model.trust_remote_code=true"])
    assert not (tmp_path / "o").exists()  # refused before the output folder is touched


REMOTE_CODE = '''
import torch
from transformers import LlavaConfig, LlavaForConditionalGeneration, PretrainedConfig
from transformers import PreTrainedModel


class RemoteLlavaConfig(LlavaConfig):
    model_type = "fedmllm_test_remote_llava"


class RemoteLlava(LlavaForConditionalGeneration):
    config_class = RemoteLlavaConfig


class OwnWayConfig(PretrainedConfig):
    model_type = "fedmllm_test_own_way"


class OwnWay(PreTrainedModel):
    """Like MiniCPM-V 2.6's remote model: forward(data) instead of input_ids/pixel_values."""

    config_class = OwnWayConfig

    def __init__(self, config):
        super().__init__(config)
        self.proj = torch.nn.Linear(4, 4)
        self.post_init()

    def forward(self, data, **kwargs):
        return self.proj(data["x"])
'''


def test_remote_code_runs_when_allowed(tmp_path):
    """``trust_remote_code`` reaches transformers: a folder whose classes live in its own
    ``modeling_remote.py`` loads and gets LoRA on its language model; one whose model takes
    its own inputs (``forward(data)``, as MiniCPM-V 2.6's does) is refused in one line."""
    llava = next(f for f in FAMILIES if f.name == "llava-1.5")
    folder = build_folder(llava, tmp_path / "remote")
    (folder / "modeling_remote.py").write_text(REMOTE_CODE)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(model_type="fedmllm_test_remote_llava", architectures=["RemoteLlava"],
               auto_map={"AutoConfig": "modeling_remote.RemoteLlavaConfig",
                         "AutoModelForImageTextToText": "modeling_remote.RemoteLlava"})
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="trust_remote_code"):
        load_vlm(folder)
    model, proc = load_vlm(folder, trust_remote_code=True)
    assert type(model).__name__ == "RemoteLlava"
    regex = lora_target_regex(model, ["q_proj"])
    assert [n for n, _ in model.named_modules() if re.fullmatch(regex, n)]
    batch = collate([encode_sample(proc, "What colour is the square?", _red(), ANSWER)],
                    proc.tokenizer.pad_token_id)
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)

    own = tmp_path / "own"
    own.mkdir()
    (own / "modeling_remote.py").write_text(REMOTE_CODE)
    tokenizer({"eos_token": "</s>", "pad_token": "<pad>"}, [], "").save_pretrained(own)
    import importlib.util

    spec = importlib.util.spec_from_file_location("fedmllm_test_remote",
                                                  own / "modeling_remote.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.OwnWay(mod.OwnWayConfig()).save_pretrained(own)
    cfg = json.loads((own / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "modeling_remote.OwnWayConfig",
                       "AutoModelForCausalLM": "modeling_remote.OwnWay"}
    (own / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match=r"OwnWay\.forward takes \(data, .*input_ids") as e:
        load_vlm(own, trust_remote_code=True)
    assert "\n" not in str(e.value)


def test_folders_that_are_not_vision_language_models_are_one_line(tmp_path, capsys):
    from transformers import LlamaConfig, LlamaForCausalLM

    text_only = tmp_path / "llama"
    tok = tokenizer({"eos_token": "</s>", "pad_token": "<pad>"}, [], "")
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                                 num_hidden_layers=1, num_attention_heads=2)
                     ).save_pretrained(text_only)
    tok.save_pretrained(text_only)
    with pytest.raises(ModelError, match="cannot load as a vision-language model"):
        load_vlm(text_only)
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    (unknown / "config.json").write_text(json.dumps({"model_type": "no_such_family"}))
    with pytest.raises(ModelError, match="no_such_family"):
        load_vlm(unknown)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    for folder in (text_only, unknown, broken):
        err = _one_line(capsys, ["run", f"model.name={folder}", "fl.rounds=1",
                                 f"output.dir={tmp_path / ('out-' + folder.name)}",
                                 "output.progress=false"])
        assert str(folder) in err
