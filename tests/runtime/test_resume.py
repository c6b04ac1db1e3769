"""Kill a run with SIGKILL anywhere, resume it (again and again), get the very same adapter;
and a resume that cannot go on as it was started says why in one line.

Every run here is a separate ``fedmllm run`` process on the tiny model with LoRA dropout on. A
reference run goes through uninterrupted; the same configuration is then killed at named
points (``FEDMLLM_FAILPOINT``: after a metrics row but before its checkpoint, half-way through
writing a checkpoint, after the last checkpoint before the adapter or the summary) and at a
random moment by the test itself, and resumed with ``fedmllm run --resume`` each time. The
final adapter tensors must equal the reference's bit for bit (CPU, float32).

The fast tests here stop a run in this process (Ctrl-C after its checkpoint of round 2) and
resume it after its ``config.yaml`` was edited, with overrides, or with its newest checkpoint
(or both) damaged.
"""

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

BASE = ["model.preset=tiny", "train.device=cpu", "model.dtype=float32", "lora.dropout=0.1",
        "fl.rounds=3", "fl.num_clients=4", "fl.clients_per_round=2", "fl.local_steps=3",
        "data.train_size=64", "data.test_size=16", "eval.every=2", "eval.views=[image_text]",
        "output.plot=false", "output.progress=false"]
ONESHOT = ["fl.algorithm=yoco", "fl.yoco.local_epochs=1", "fl.yoco.targets=lora",
           "lora.modules=[q_proj,v_proj]", "data.min_per_client=4", "train.batch_size=4"]

CASES = {
    "fedavg": (["fl.algorithm=fedavg"],
               ["round_written:2", "checkpoint_half_written:2", "before_adapter:3"]),
    "fedadam": (["fl.algorithm=fedadam"], ["round_checkpointed:1", "before_summary:3"]),
    "scaffold": (["fl.algorithm=scaffold"], ["round_written:1", "checkpoint_half_written:3"]),
    "local": (["fl.algorithm=local"], ["round_checkpointed:2", "before_summary:3"]),
    "local_sampled": (["fl.algorithm=local", "fl.local_clients=sampled"],
                      ["round_written:2", "before_adapter:3"]),
    "yoco": (ONESHOT, ["client_trained:2", "client_checkpointed:3", "before_summary:4"]),
    # DP noise from the seed and the adaptive clip norm in the strategy state (sigma < 2 m/20)
    "dp_adaptive": (["fl.algorithm=fedadam", "fl.privacy.mechanism=central_adaptive",
                     "fl.privacy.noise_multiplier=0.15", "fl.privacy.clipping_norm=0.05"],
                    ["round_written:2", "checkpoint_half_written:3"]),
}


def fedmllm(out: Path, *args: str, failpoint: str | None = None, wait: bool = True):
    env = {k: v for k, v in os.environ.items() if k != "FEDMLLM_FAILPOINT"}
    if failpoint:
        env["FEDMLLM_FAILPOINT"] = failpoint
    cmd = [sys.executable, "-m", "fedmllm.cli", "run", *args]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)


def adapter_tensors(out: Path) -> dict[str, torch.Tensor]:
    files = sorted(out.glob("adapter*/**/*.safetensors"))
    assert files, f"no adapter under {out}"
    return {f"{f.relative_to(out)}:{k}": v for f in files for k, v in load_file(f).items()}


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k, t in a.items():
        assert torch.equal(t, b[k]), f"{k} differs"


class References:
    """Uninterrupted runs, one per algorithm, made the first time a test asks for one and then
    shared by every test of that algorithm: ``refs[name] -> (folder, adapter tensors)``."""

    def __init__(self, tmp_path_factory):
        self.tmp, self.runs = tmp_path_factory, {}

    def __getitem__(self, name: str):
        if name not in self.runs:
            out = self.tmp.mktemp(f"ref-{name}")
            proc = fedmllm(out, *BASE, *CASES[name][0], f"output.dir={out}", "--overwrite")
            assert proc.returncode == 0, proc.stderr
            self.runs[name] = (out, adapter_tensors(out))
        return self.runs[name]


@pytest.fixture(scope="module")
def references(tmp_path_factory, tiny_dir):
    return References(tmp_path_factory)


@pytest.mark.slow
@pytest.mark.processes
@pytest.mark.parametrize("name", list(CASES))
def test_killed_and_resumed_again_and_again_gives_the_same_adapter(name, references, tmp_path):
    extra, kills = CASES[name]
    out = tmp_path / "run"
    proc = fedmllm(out, *BASE, *extra, f"output.dir={out}", failpoint=kills[0])
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert json.loads((out / "run.json").read_text())["status"] == "running"
    for point in kills[1:]:
        proc = fedmllm(out, "--resume", str(out), failpoint=point)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (out / "summary.json").exists()
    proc = fedmllm(out, "--resume", str(out))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    assert_bitwise_equal(adapter_tensors(out), references[name][1])
    ref_rows = (references[name][0] / "metrics.jsonl").read_text().splitlines()
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == len(ref_rows)
    for got, want in zip(rows, ref_rows, strict=True):  # same numbers, other timings
        got, want = json.loads(got), json.loads(want)
        assert got["train_loss"] == want["train_loss"] and got.get("eval") == want.get("eval")
        assert got.get("privacy_epsilon") == want.get("privacy_epsilon")
    summary = json.loads((out / "summary.json").read_text())
    ref_summary = json.loads((references[name][0] / "summary.json").read_text())
    assert summary.get("privacy") == ref_summary.get("privacy")
    resumed = summary["totals"].get("resumed_after_rounds",
                                    summary["totals"].get("resumed_after_clients"))
    assert len(resumed) == len(kills) and resumed == sorted(resumed)
    if name == "fedavg":  # a finished run is not resumed again
        proc = fedmllm(out, "--resume", str(out))
        assert proc.returncode == 0 and "finished" in proc.stdout


@pytest.mark.slow
@pytest.mark.processes
def test_killed_at_a_random_moment(references, tmp_path):
    """The test itself kills the process at a random time after its first checkpoint."""
    out = tmp_path / "run"
    rng = random.Random(os.getpid())
    proc = fedmllm(out, *BASE, "fl.algorithm=fedavg", f"output.dir={out}", wait=False)
    deadline = time.time() + 300
    while not (out / "checkpoint").is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 1.5))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if proc.returncode == 0:  # it finished before the kill: nothing to resume
        assert_bitwise_equal(adapter_tensors(out), references["fedavg"][1])
        return
    done = fedmllm(out, "--resume", str(out))
    assert done.returncode == 0, done.stderr
    assert_bitwise_equal(adapter_tensors(out), references["fedavg"][1])


@pytest.mark.slow
@pytest.mark.processes
def test_resume_refuses_changes_to_the_configuration(references, tmp_path):
    out = references["fedavg"][0]
    proc = fedmllm(out, "--resume", str(out), "fl.rounds=5")
    assert proc.returncode == 2 and "fl.rounds: 3 → 5" in proc.stderr
    assert proc.stderr.count("\n") == 1


@pytest.mark.slow
@pytest.mark.processes
def test_a_damaged_newest_checkpoint_resumes_bitwise_from_the_one_before(references, tmp_path):
    out = tmp_path / "run"
    proc = fedmllm(out, *BASE, "fl.algorithm=fedavg", f"output.dir={out}",
                   failpoint="round_checkpointed:2")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    bad = out / "checkpoint" / "000002" / "tensors.safetensors"
    bad.write_bytes(bad.read_bytes()[:100])
    proc = fedmllm(out, "--resume", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"{bad}: damaged" in proc.stderr and "after round 1" in proc.stderr
    assert_bitwise_equal(adapter_tensors(out), references["fedavg"][1])


# ----------------------------------------------------------------------------- in this process

RUN = ["model.preset=tiny", "train.device=cpu", "model.dtype=float32", "fl.rounds=3",
       "fl.num_clients=2", "fl.local_steps=1", "data.train_size=16", "data.test_size=4",
       "eval.views=[image_text]", "output.plot=false", "output.progress=false"]


@pytest.fixture(scope="module")
def stopped(tiny_dir, tmp_path_factory):
    """An unfinished run of :data:`RUN`: Ctrl-C right after its checkpoint of round 2."""
    from fedmllm.cli import main
    from fedmllm.runtime import simulation

    def stop(name, n):
        if (name, n) == ("round_checkpointed", 2):
            raise KeyboardInterrupt

    out = tmp_path_factory.mktemp("stopped") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(simulation, "failpoint", stop)
        assert main(["run", *RUN, f"output.dir={out}"]) == 130
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == ["000001", "000002"]
    return out


@pytest.fixture(scope="module")
def resumed(stopped, tmp_path_factory):
    """The stopped run resumed as it is: the adapter every other resume must give."""
    from fedmllm.cli import main

    out = tmp_path_factory.mktemp("resumed") / "run"
    shutil.copytree(stopped, out)
    assert main(["run", "--resume", str(out)]) == 0
    return adapter_tensors(out)


def _copy(stopped, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(stopped, out)
    return out


def _resume(out, *overrides):
    from fedmllm.cli import main

    return main(["run", "--resume", str(out), *overrides])


def test_resume_after_config_yaml_was_edited_names_every_key(stopped, tmp_path, capsys):
    import yaml

    out = _copy(stopped, tmp_path)
    path = out / "config.yaml"
    data = yaml.safe_load(path.read_text())
    data["fl"]["local_steps"], data["seed"] = 2, 7
    data["output"]["plot"] = True  # output.* does not touch the results
    path.write_text(yaml.safe_dump(data))
    assert _resume(out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "was edited after the run's checkpoint (after round 2) was written: " \
           "fl.local_steps: 1 → 2; seed: 0 → 7; put the old values back to resume" in err
    assert f"fedmllm run --config {path} output.dir=" in err and "output.plot" not in err
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"


def test_resume_overrides_that_change_the_run_are_named_old_to_new(stopped, tmp_path, capsys):
    assert _resume(stopped, "fl.rounds=5", "output.progress=true", "seed=3") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "the overrides change fl.rounds: 3 → 5; seed: 0 → 3 (only output.progress, " \
           "output.plot may change" in err
    assert f"fedmllm run --config {stopped / 'config.yaml'} fl.rounds=5" in err
    assert json.loads((stopped / "run.json").read_text())["status"] == "interrupted"


def test_a_damaged_newest_checkpoint_resumes_from_the_one_before(stopped, resumed, tmp_path,
                                                                 caplog, monkeypatch):
    """Garbage over the last tensor bytes (only the digest sees it; a cut file is the engine
    tests' case): the run resumes after round 1 and ends with the very same adapter."""
    # A library may have disabled the existing loggers (logging.config.fileConfig does, as
    # flwr's alembic migrations call it) in a test before this one in the same worker.
    monkeypatch.setattr(logging.getLogger("fedmllm.engine.checkpoint"), "disabled", False)
    out = _copy(stopped, tmp_path)
    bad = out / "checkpoint" / "000002" / "tensors.safetensors"
    data = bad.read_bytes()
    bad.write_bytes(data[:-16] + bytes(b ^ 0xFF for b in data[-16:]))
    with caplog.at_level(logging.WARNING):
        assert _resume(out, "fl.rounds=3") == 0  # an override that changes nothing is fine
    [line] = [r.getMessage() for r in caplog.records if r.name == "fedmllm.engine.checkpoint"]
    assert line.startswith(f"{bad}: damaged") and line.endswith("before it, after round 1")
    assert_bitwise_equal(adapter_tensors(out), resumed)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    assert json.loads((out / "run.json").read_text())["resumes"] == [1]
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == ["000002", "000003"]


def test_no_readable_checkpoint_is_one_line_whose_hint_works(stopped, resumed, tmp_path,
                                                             capsys):
    out = _copy(stopped, tmp_path)
    root = out / "checkpoint"
    (root / "000002" / "tensors.safetensors").write_bytes(b"")
    (root / "000001" / "meta.json").write_text("{cut")
    assert _resume(out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert str(root / "000002" / "tensors.safetensors") in err
    assert str(root / "000001" / "meta.json") in err
    assert err.rstrip().endswith(f"to run it again from the start, delete {root} and resume")
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    shutil.rmtree(root)  # what the line says to do
    assert _resume(out) == 0
    assert_bitwise_equal(adapter_tensors(out), resumed)
