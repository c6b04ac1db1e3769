"""The configuration as a Flower run config: pyproject declares every key, and run configs
turn back into the configuration they describe."""

import tomllib

import pytest
from helpers import ROOT

from fedmllm.config import ConfigError, load_config
from fedmllm.runtime.flower.appconfig import APP_KEYS, config_from_run, flower_defaults

PYPROJECT = ROOT / "pyproject.toml"


def test_pyproject_declares_every_key_with_its_default():
    table = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]
    assert table == flower_defaults()
    assert table["fl.rounds"] == 24 and table["lora.layers"] == ""
    assert table["lora.modules"] == "[q_proj, k_proj, v_proj, o_proj]"
    assert set(APP_KEYS) <= set(table)


def test_run_config_becomes_the_configuration(tmp_path):
    exp = tmp_path / "exp.toml"
    exp.write_text("[fl]\nrounds = 20\nalgorithm = \"fedadam\"\n")
    run = {**flower_defaults(), "config-file": str(exp), "fl.local_steps": 3,
           "lora.modules": "[q_proj, v_proj]", "lora.layers": "[0, 1]",
           "overrides": "fl.strategy.eta=0.01 'eval.views=[image_text]'", "resume": True}
    cfg, resume, overwrite = config_from_run(run)
    want = load_config(exp, ["fl.local_steps=3", "lora.modules=[q_proj, v_proj]",
                             "lora.layers=[0, 1]", "fl.strategy.eta=0.01",
                             "eval.views=[image_text]"])
    assert cfg == want and (resume, overwrite) == (True, False)
    # a declared key left at its default does not override the file
    assert cfg.fl.rounds == 20 and cfg.fl.algorithm == "fedadam"


def test_a_bad_run_config_value_names_the_key():
    with pytest.raises(ConfigError, match="fl.rounds"):
        config_from_run({**flower_defaults(), "fl.rounds": "many"})
