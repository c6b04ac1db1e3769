"""The dataset registry: built-in specs, one-line errors, and a toy dataset added in one file."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from helpers.fixtures_data import make_hateful

from fedmllm.data import (
    DataError,
    build_prompt,
    dataset_names,
    federated_data,
    get_dataset,
    load_prepared,
    prepare,
    read_split,
    register_dataset,
    unregister_dataset,
)
from fedmllm.data.prompts import MC_TEMPLATES
from fedmllm.data.registry import dataset_options

TOY = '''
"""A toy multiple-choice dataset: ROOT/{train,test}.jsonl, rows {"id", "text", "label"}."""
import json
from pathlib import Path

from fedmllm.data.prompts import MCTemplate, mc_answer
from fedmllm.data.reading import ReadResult
from fedmllm.data.registry import DatasetSpec, register_dataset, train_test_build
from fedmllm.data.types import Sample

OPTIONS = ("calm", "stormy")


def read(source, split):
    lines = (Path(source.data_dir) / f"{split}.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    return ReadResult([Sample(id=str(r["id"]), task="toy_weather", text=r["text"],
                              answer=mc_answer(OPTIONS, r["label"]), label=r["label"],
                              options=OPTIONS) for r in rows])


SPEC = DatasetSpec(name="toy_weather", kind="mc", doc="a toy", read=read,
                   build=train_test_build(read),
                   templates={"toy_weather": MCTemplate("What is the weather", OPTIONS)})
register_dataset(SPEC)
'''


def _write_toy_data(root, n_train=24, n_test=6):
    import json

    root.mkdir()
    for split, n in (("train", n_train), ("test", n_test)):
        rows = [{"id": f"{split}{i}", "text": f"the sky {'roars' if i % 2 else 'rests'} {i}",
                 "label": i % 2} for i in range(n)]
        (root / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return root


@pytest.fixture
def toy_dataset(tmp_path):
    """The toy dataset module, written in ``tmp_path`` and imported (it registers itself);
    unregistered afterwards."""
    path = tmp_path / "toy_weather_dataset.py"
    path.write_text(TOY)
    spec = importlib.util.spec_from_file_location("toy_weather_dataset", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        if "toy_weather" in dataset_names():
            unregister_dataset("toy_weather")
        sys.modules.pop("toy_weather_dataset", None)


def test_toy_dataset_in_one_file_is_built_prepared_and_read(toy_dataset, tmp_path):
    root = _write_toy_data(tmp_path / "toy")
    assert "toy_weather" in dataset_names("build") and "toy_weather" in dataset_names("eval")
    data = federated_data("toy_weather", 3, 0, data_dir=root, partition="iid")
    assert data.task.name == "toy_weather" and data.task.kind == "mc"
    assert data.task.options == ("calm", "stormy")
    assert sorted(map(len, data.clients)) == [8, 8, 8] and len(data.test) == 6
    assert data.manifest["params"]["test_split"] == "test"
    prompt = build_prompt(data.clients[0][0])
    assert "What is the weather based on the text?" in prompt and "(B) stormy" in prompt

    out = tmp_path / "prepared"
    manifest = prepare(out, "toy_weather", root, num_clients=3, seed=0, partition="iid")
    loaded = load_prepared(out)
    assert loaded.task == data.task and loaded.manifest == manifest
    assert [[build_prompt(s) for s in c] for c in loaded.clients] == \
        [[build_prompt(s) for s in c] for c in data.clients]
    assert [s.id for s in read_split("toy_weather", root)] == [f"test{i}" for i in range(6)]

    unregister_dataset("toy_weather")
    assert "toy_weather" not in dataset_names() and "toy_weather" not in MC_TEMPLATES
    with pytest.raises(DataError, match="unknown dataset 'toy_weather'"):
        federated_data("toy_weather", 3, 0, data_dir=root)


def test_builtin_names_options_and_splits(tmp_path):
    assert dataset_names("build") == ("hateful_memes", "crisismmd", "synth", "medical")
    assert dataset_names("eval") == ("hateful_memes", "crisismmd", "synth", "vqa_rad", "slake")
    flags = [o.flag for o in dataset_options("build") if o.cli]
    assert flags == ["--task", "--train-size", "--test-size", "--vqa-rad-dir",
                     "--medalpaca-dir", "--slake-dir"]
    assert list(MC_TEMPLATES)[:4] == ["hateful_memes", "crisismmd", "synth_binary",
                                      "synth_multiclass"]
    assert get_dataset("synth").kind_of({"task": "vqa"}) == "qa"
    assert get_dataset("synth").kind_of({"task": "binary"}) == "mc"
    root = make_hateful(tmp_path / "hm")
    assert len(read_split("hateful_memes", root)) == 12  # "test" is test_seen
    assert len(read_split("synth", task="multiclass", test_size=7)) == 7


def test_registry_errors_are_one_line():
    with pytest.raises(ValueError, match="dataset 'synth' is already registered"):
        register_dataset(get_dataset("synth"))
    with pytest.raises(DataError, match="unknown dataset 'hatefull_memes'; did you mean "
                                        "'hateful_memes'"):
        get_dataset("hatefull_memes")
    with pytest.raises(DataError, match="'vqa_rad' is not offered for build"):
        federated_data("vqa_rad", 3, 0)
    with pytest.raises(TypeError, match="unknown option 'colour'"):
        federated_data("synth", 3, 0, colour="red")
    with pytest.raises(DataError, match="has no split reader"):
        read_split("medical")
