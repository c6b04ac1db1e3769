"""Adapters name a built-in base by ``fedmllm-preset:<name>`` (not its hashed cache folder),
and ``fedmllm eval --adapter`` still finds the base; plain peft loading still works."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers.tiny_runs import tiny_run

from fedmllm.cli import main
from fedmllm.errors import ModelError
from fedmllm.model.names import parse_preset_name, portable_name, preset_name, resolve_base


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_dir):
    return tiny_run(tmp_path_factory.mktemp("runs") / "r", "fl.rounds=1",
                    "eval.views=[image_text]")


def test_preset_names_round_trip(tiny_dir):
    assert preset_name("tiny") == "fedmllm-preset:tiny"
    assert preset_name("small", pretrain=False) == "fedmllm-preset:small-init"
    assert parse_preset_name("fedmllm-preset:tiny") == ("tiny", True)
    assert parse_preset_name("fedmllm-preset:small-init") == ("small", False)
    assert parse_preset_name("HuggingFaceTB/SmolVLM-256M-Instruct") is None
    assert parse_preset_name(str(tiny_dir)) is None
    with pytest.raises(ModelError, match="unknown built-in preset 'huge'"):
        parse_preset_name("fedmllm-preset:huge")
    assert portable_name(tiny_dir) == "fedmllm-preset:tiny"
    assert resolve_base("fedmllm-preset:tiny") == str(tiny_dir)
    assert portable_name("org/model") == "org/model"  # a hub id stays as given
    assert resolve_base("org/model") == "org/model"


def test_portable_name_keeps_a_folder_of_another_recipe(tmp_path, tiny_dir):
    folder = tmp_path / "old"
    folder.mkdir()
    info = json.loads((tiny_dir / "recipe.json").read_text())
    info["recipe"]["version"] = -1  # built by another fedmllm version: not today's preset
    (folder / "recipe.json").write_text(json.dumps(info))
    assert portable_name(folder) == str(folder)


def test_saved_adapter_names_the_preset_and_loads_in_plain_peft(run, tiny_dir):
    from peft import PeftModel

    from fedmllm.model.loading import load_vlm

    adapter = run / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "fedmllm-preset:tiny"
    meta = json.loads((adapter / "fedmllm.json").read_text())
    assert meta["base_model"] == str(tiny_dir)  # what this machine loaded, as before
    assert meta["base_model_name"] == "fedmllm-preset:tiny"
    assert meta["base_recipe"] == tiny_dir.name
    base, _ = load_vlm(tiny_dir)
    model = PeftModel.from_pretrained(base, adapter)  # the user passes the base explicitly
    assert any("lora_A" in n for n, _ in model.named_parameters())
    readme = (adapter / "README.md").read_text()
    assert "[More Information Needed]" not in readme


def _eval(adapter, out, *extra) -> dict:
    assert main(["eval", "--adapter", str(adapter), "--dataset", "synth", "--test-size", "8",
                 "--views", "image_text", "--out", str(out), *extra]) == 0
    return json.loads((out / "eval.json").read_text())


def test_eval_adapter_finds_the_preset_when_the_cache_folder_moved(run, tmp_path, tiny_dir):
    moved = tmp_path / "adapter"
    shutil.copytree(run / "adapter", moved)
    meta = json.loads((moved / "fedmllm.json").read_text())
    meta["base_model"] = str(tmp_path / "gone" / tiny_dir.name)  # another machine's cache
    (moved / "fedmllm.json").write_text(json.dumps(meta))
    a = _eval(run / "adapter", tmp_path / "a")
    b = _eval(moved, tmp_path / "b")
    assert b["meta"]["base_model"] == str(tiny_dir)
    assert a["per_modality"] == b["per_modality"]
    # adapter_config.json alone (peft's own file) is enough too
    (moved / "fedmllm.json").unlink()
    c = _eval(moved, tmp_path / "c")
    assert c["per_modality"] == a["per_modality"]


def test_eval_adapter_says_what_base_it_looked_for(run, tmp_path, capsys):
    moved = tmp_path / "adapter"
    shutil.copytree(run / "adapter", moved)
    (moved / "fedmllm.json").write_text(json.dumps({"base_model": "/nowhere/model"}))
    config = json.loads((moved / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "/nowhere/else"
    (moved / "adapter_config.json").write_text(json.dumps(config))
    assert main(["eval", "--adapter", str(moved), "--dataset", "synth",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "/nowhere/model (fedmllm.json base_model)" in err
    assert "/nowhere/else (adapter_config.json base_model_name_or_path)" in err
    assert "--model" in err
    # --model-preset still overrides what the adapter records
    ev = _eval(moved, tmp_path / "p", "--model-preset", "tiny")
    assert ev["meta"]["n"] == 8
