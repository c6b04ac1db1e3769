"""Nothing is written until a run can start (``runtime.start_run``): the configuration, the
model's source, the output folder and the data are all checked before ``config.yaml`` or
``run.json`` appear. A run that cannot start is one line, exit 2, and leaves no folder behind
(no ``runs/`` at all); a run that fails once started keeps its failed ``run.json`` and the
resume hint (``tests/test_cli.py``: a full disk in round 1, Ctrl-C)."""

from __future__ import annotations

import errno
import json
import os

import pytest
from helpers.devices import run_overrides
from helpers.fixtures_data import make_hateful

from fedmllm.cli import main
from fedmllm.config import load_config
from fedmllm.errors import OutputError

SMALL = ["model.preset=tiny", "fl.rounds=1", "fl.num_clients=2", "data.train_size=16",
         "data.test_size=4", "eval.views=[image_text]", "output.progress=false",
         *run_overrides()]


@pytest.fixture
def here(tmp_path, monkeypatch):
    """A fresh working folder: the default output folders would go to ``runs/`` in it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _broken_hateful(root):
    """A Hateful Memes folder whose training split has an unknown label on line 4."""
    make_hateful(root)
    path = root / "train.jsonl"
    lines = path.read_text().splitlines()
    lines[3] = json.dumps({"id": 10003, "img": "img/10003.png", "label": 7, "text": "x"})
    path.write_text("\n".join(lines) + "\n")
    return root


def _refused(argv, capsys) -> str:
    """``fedmllm run ARGV``'s error: exit 2, one line on stderr, nothing on stdout."""
    capsys.readouterr()
    assert main(["run", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("fedmllm: error: ")
    assert "--resume" not in err  # nothing started, nothing to resume
    return err


def test_a_broken_dataset_leaves_no_run_folder(here, capsys):
    _broken_hateful(here / "hm")
    err = _refused([*SMALL, "data.dataset=hateful_memes", "data.data_dir=hm"], capsys)
    assert "hm/train.jsonl, line 4: unknown label 7" in err
    assert not (here / "runs").exists()


@pytest.mark.parametrize("name, problem", [
    ("models/qwen2-vl-2b", "no such model folder, and not in the Hugging Face cache"),
    ("./models/qwen2-vl-2b", "no such model folder"),
    ("someorg/somemodel", "no such model folder, and not in the Hugging Face cache"),
])
def test_a_missing_model_leaves_no_run_folder(here, capsys, monkeypatch, name, problem):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: True)  # HF_HUB_OFFLINE=1
    err = _refused(["--model", name, "fl.rounds=1"], capsys)
    assert f"model.name: {name}: {problem}" in err
    assert not (here / "runs").exists()


def test_the_docs_example_is_a_folder_once_its_parent_is_here(here, capsys):
    (here / "models").mkdir()  # `--local-dir models/...` made it: a folder, never the hub
    err = _refused(["--model", "models/qwen2-vl-2b"], capsys)
    assert err == "fedmllm: error: model.name: models/qwen2-vl-2b: no such model folder\n"
    assert list(here.iterdir()) == [here / "models"]


def test_an_unwritable_output_leaves_no_run_folder(here, capsys, monkeypatch):
    (here / "runs").mkdir()
    writable = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if str(p).endswith("runs")
                        else writable(p, mode, **k))
    err = _refused(SMALL, capsys)
    assert "cannot create the output folder" in err and "runs is not writable" in err
    assert list((here / "runs").iterdir()) == []


def test_overwrite_keeps_the_finished_run_when_the_new_one_cannot_start(here, capsys):
    out = here / "old"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    (out / "config.yaml").write_text("x")
    _broken_hateful(here / "hm")
    _refused([*SMALL, "data.dataset=hateful_memes", "data.data_dir=hm", f"output.dir={out}",
              "--overwrite"], capsys)
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "summary.json"]
    err = _refused([*SMALL, f"output.dir={out}"], capsys)  # refused before the data is built
    assert "holds a finished run; pass --overwrite" in err


def test_a_resume_that_cannot_start_leaves_the_folder_as_it_was(here, capsys):
    _broken_hateful(here / "hm")
    out = here / "run"
    out.mkdir()
    cfg = load_config(None, [*SMALL, "data.dataset=hateful_memes", f"data.data_dir={here}/hm",
                             f"output.dir={out}"])
    (out / "config.yaml").write_text(cfg.to_yaml())
    status = {"status": "interrupted", "updated": "2026-01-01T00:00:00"}
    (out / "run.json").write_text(json.dumps(status))
    err = _refused(["--resume", str(out)], capsys)
    assert "unknown label 7" in err
    assert json.loads((out / "run.json").read_text()) == status


def test_a_new_folder_whose_config_cannot_be_written_is_removed(here, monkeypatch):
    from fedmllm import runtime

    def full(path, text, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(runtime, "atomic_write_text", full)
    with pytest.raises(OutputError, match="config.yaml: cannot write \\(No space left"):
        runtime.start_run(load_config(None, [*SMALL, "output.dir=runs/a"]))
    assert list((here / "runs").iterdir()) == []
    existing = here / "mine"
    existing.mkdir()  # a folder that was there before is left there
    with pytest.raises(OutputError):
        runtime.start_run(load_config(None, [*SMALL, f"output.dir={existing}"]))
    assert existing.is_dir()


def test_the_data_is_built_once_and_the_started_run_writes_what_it_wrote(here, monkeypatch,
                                                                        capsys):
    import fedmllm.data

    built = []
    original = fedmllm.data.build_federated_data
    monkeypatch.setattr(fedmllm.data, "build_federated_data",
                        lambda *a, **k: built.append(1) or original(*a, **k))
    assert main(["run", "-q", *SMALL, "fl.algorithm=zeroshot", "output.dir=runs/z"]) == 0
    assert built == [1]
    names = {p.name for p in (here / "runs" / "z").iterdir()}
    assert {"config.yaml", "run.json", "data_manifest.json", "summary.json"} <= names
    assert json.loads((here / "runs" / "z" / "run.json").read_text())["status"] == "finished"


def test_flower_local_checks_the_model_source_before_it_opens_the_folder(here, capsys,
                                                                         monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: True)
    assert main(["flower", "local", "--supernodes", "2", "fl.num_clients=2",
                 "model.name=someorg/somemodel"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "someorg/somemodel: no such model folder" in err
    assert not (here / "runs").exists()
