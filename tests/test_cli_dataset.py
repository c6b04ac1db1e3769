"""Adding a dataset is one file plus one registration line: a toy dataset defined in a module
written to ``tmp_path`` runs through ``fedmllm prepare``, ``fedmllm config show`` and
``fedmllm eval`` with no change to the CLI or the configuration."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from fedmllm.cli import main
from fedmllm.data import dataset_names, load_prepared, unregister_dataset

TOY = '''
"""A toy multiple-choice dataset: ROOT/{train,test}.jsonl, rows {"id", "text", "label"}."""
import json
from pathlib import Path

from fedmllm.data.prompts import MCTemplate, mc_answer
from fedmllm.data.reading import ReadResult
from fedmllm.data.registry import DatasetOption, DatasetSpec, register_dataset, train_test_build
from fedmllm.data.types import Sample

OPTIONS = ("calm", "stormy")


def read(source, split):
    lines = (Path(source.data_dir) / f"{split}.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    prefix = source.options["toy_prefix"]
    return ReadResult([Sample(id=str(r["id"]), task="toy_cli", text=f"{prefix} {r['text']}",
                              answer=mc_answer(OPTIONS, r["label"]), label=r["label"],
                              options=OPTIONS) for r in rows])


register_dataset(DatasetSpec(
    name="toy_cli", kind="mc", doc="a toy", read=read, build=train_test_build(read),
    templates={"toy_cli": MCTemplate("What is the weather", OPTIONS)},
    options=(DatasetOption("toy_prefix", "toy: the words before each text", default="look:"),)))
'''


@pytest.fixture
def toy(tmp_path):
    """The toy dataset's module imported from ``tmp_path`` (it registers itself), and its data
    folder; unregistered afterwards."""
    path = tmp_path / "toy_cli_dataset.py"
    path.write_text(TOY)
    spec = importlib.util.spec_from_file_location("toy_cli_dataset", path)
    module = importlib.util.module_from_spec(spec)
    root = tmp_path / "toy_data"
    root.mkdir()
    for split, n in (("train", 24), ("test", 6)):
        rows = [{"id": f"{split}{i}", "text": f"the sky {'roars' if i % 2 else 'rests'} {i}",
                 "label": i % 2} for i in range(n)]
        (root / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    try:
        spec.loader.exec_module(module)
        yield root
    finally:
        if "toy_cli" in dataset_names():
            unregister_dataset("toy_cli")
        sys.modules.pop("toy_cli_dataset", None)


def test_a_toy_dataset_in_a_temporary_module_runs_through_prepare(toy, tmp_path, capsys):
    out = tmp_path / "prepared"
    assert main(["prepare", "--dataset", "toy_cli", "--data-dir", str(toy), "--out", str(out),
                 "--clients", "3", "--partition", "iid", "--toy-prefix", "seen:"]) == 0
    data = load_prepared(out)
    assert len(data.clients) == 3 and len(data.test) == 6
    assert sum(len(c) for c in data.clients) == 24
    assert all(s.text.startswith("seen: the sky") for s in data.test)  # its own flag
    assert main(["config", "show", "data.dataset=toy_cli", f"data.data_dir={toy}"]) == 0
    assert "dataset: toy_cli" in capsys.readouterr().out


def test_a_toy_dataset_in_a_temporary_module_runs_through_eval(toy, tmp_path, tiny_dir):
    out = tmp_path / "ev"
    assert main(["eval", "--adapter", "none", "--model", str(tiny_dir), "--dataset", "toy_cli",
                 "--data-dir", str(toy), "--views", "text_only", "--out", str(out)]) == 0
    ev = json.loads((out / "eval.json").read_text())
    assert ev["meta"]["dataset"] == "toy_cli" and ev["meta"]["n"] == 6
    assert 0.0 <= ev["per_modality"]["text_only"]["accuracy"] <= 1.0
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and rows[0]["prompt"].count("look: the sky") == 1  # default prefix


def test_an_unregistered_dataset_is_a_one_line_error(tmp_path, capsys):
    assert main(["config", "show", "data.dataset=toy_cli"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "data.dataset: expected one of" in err
