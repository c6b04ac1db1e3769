"""Checkpoints: round trip, the last two kept, atomic writes, a damaged newest one passed over
for the one before it (said in one line), none readable refused naming the files, never a
pickle, and a changed configuration named key by key."""

import json
import logging
import os
import pickle
import subprocess
import sys

import pytest
import torch

from fedmllm.config import load_config
from fedmllm.engine.checkpoint import (
    Checkpoint,
    check_compatible,
    config_changes,
    config_digest,
    load_checkpoint,
    results_config,
    save_checkpoint,
)
from fedmllm.errors import CheckpointError


def _ckpt(step, value, digest="d", config=None):
    return Checkpoint(kind="multiround", step=step, metrics_rows=step, config_sha256=digest,
                      tensors={"global": {"a.w": torch.full((2,), value)},
                               "strategy": {"m/a.w": torch.zeros(2, dtype=torch.float64)}},
                      state={"resumes": [1]}, config=config)


def _names(tmp_path):
    return sorted(p.name for p in (tmp_path / "checkpoint").iterdir())


def test_checkpoint_round_trip_keeps_the_newest_two(tmp_path):
    assert load_checkpoint(tmp_path) is None
    save_checkpoint(tmp_path, _ckpt(1, 1.0))
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    save_checkpoint(tmp_path, _ckpt(2, 2.0))
    torch.rand(3)  # move the generator on; loading restores the saved state
    ck = load_checkpoint(tmp_path)
    assert ck.step == 2 and ck.metrics_rows == 2 and ck.state == {"resumes": [1]}
    assert torch.equal(ck.tensors["global"]["a.w"], torch.full((2,), 2.0))
    assert ck.tensors["strategy"]["m/a.w"].dtype == torch.float64
    assert "rng" not in ck.tensors
    assert torch.equal(torch.rand(3), expected_draw)
    assert _names(tmp_path) == ["000001", "000002"]
    save_checkpoint(tmp_path, _ckpt(3, 3.0))
    assert _names(tmp_path) == ["000002", "000003"]


def test_a_step_written_again_drops_the_later_ones(tmp_path):
    """After falling back from a damaged checkpoint 3 to 2, the run writes 3 again (or, with
    another spacing, an earlier step): what lies beyond it belongs to rounds being redone."""
    for step in (2, 3, 5):
        save_checkpoint(tmp_path, _ckpt(step, float(step)))
    save_checkpoint(tmp_path, _ckpt(4, 4.0))
    assert _names(tmp_path) == ["000003", "000004"]
    assert load_checkpoint(tmp_path).step == 4


def test_a_half_written_checkpoint_is_ignored(tmp_path):
    save_checkpoint(tmp_path, _ckpt(1, 1.0))
    root = tmp_path / "checkpoint"
    (root / ".000002.tmp-x").mkdir()  # what a crash during the write leaves
    (root / ".000002.tmp-x" / "tensors.safetensors").write_bytes(b"partial")
    (root / "000003").mkdir()  # no meta.json: never completed
    assert load_checkpoint(tmp_path).step == 1
    save_checkpoint(tmp_path, _ckpt(2, 2.0))
    assert _names(tmp_path) == ["000001", "000002"]  # the leftovers are gone


@pytest.mark.processes
def test_checkpoint_killed_while_writing_leaves_the_previous_one(tmp_path):
    """SIGKILL between the tensors and the metadata of checkpoint 3 (a failpoint): the two
    complete ones before it stay, and the newest of them is what loads."""
    code = (
        "import torch, sys\n"
        "from fedmllm.engine.checkpoint import Checkpoint, save_checkpoint\n"
        "for step in (1, 2, 3):\n"
        "    save_checkpoint(sys.argv[1], Checkpoint('multiround', step, step, 'd',"
        " {'global': {'w': torch.full((3,), float(step))}}))\n")
    env = {**os.environ, "FEDMLLM_FAILPOINT": "checkpoint_half_written:3"}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, check=False)
    assert proc.returncode == -9
    ck = load_checkpoint(tmp_path)
    assert ck.step == 2 and torch.equal(ck.tensors["global"]["w"], torch.full((3,), 2.0))
    assert [n for n in _names(tmp_path) if n.isdigit()] == ["000001", "000002"]


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage(path):
    """The same length, the tensor bytes overwritten: safetensors alone would read it."""
    data = bytearray(path.read_bytes())
    data[-8:] = b"\xff" * 8
    path.write_bytes(bytes(data))


def _bad_meta(path):
    path.write_bytes(b"\x00\x9f garbage")


@pytest.mark.parametrize(("file", "damage", "said"), [
    ("tensors.safetensors", _truncate, "damaged"),
    ("tensors.safetensors", _garbage, "damaged"),
    ("meta.json", _bad_meta, "cannot read"),
])
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, caplog, file,
                                                                   damage, said):
    save_checkpoint(tmp_path, _ckpt(1, 1.0))
    save_checkpoint(tmp_path, _ckpt(2, 2.0))
    bad = tmp_path / "checkpoint" / "000002" / file
    damage(bad)
    with caplog.at_level(logging.WARNING, logger="fedmllm.engine.checkpoint"):
        ck = load_checkpoint(tmp_path)
    assert ck.step == 1 and torch.equal(ck.tensors["global"]["a.w"], torch.full((2,), 1.0))
    [record] = caplog.records
    line = record.getMessage()
    assert "\n" not in line and f"{bad}: {said}" in line
    assert line.endswith("resuming from the checkpoint before it, after round 1")


def test_no_readable_checkpoint_is_refused_naming_both_files(tmp_path):
    save_checkpoint(tmp_path, _ckpt(1, 1.0))
    save_checkpoint(tmp_path, _ckpt(2, 2.0))
    root = tmp_path / "checkpoint"
    _truncate(root / "000002" / "tensors.safetensors")
    _garbage(root / "000001" / "tensors.safetensors")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("no checkpoint of this run can be read")
    assert str(root / "000002" / "tensors.safetensors") in msg
    assert str(root / "000001" / "tensors.safetensors") in msg


def test_a_checkpoint_without_a_digest_is_still_read(tmp_path):
    """Checkpoints written before the SHA-256 was kept: read, and a cut one still refused by
    safetensors' own checks."""
    save_checkpoint(tmp_path, _ckpt(1, 1.0))
    meta_path = tmp_path / "checkpoint" / "000001" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["tensors_sha256"], meta["config"]
    meta_path.write_text(json.dumps(meta))
    ck = load_checkpoint(tmp_path)
    assert ck.step == 1 and ck.config is None
    _truncate(tmp_path / "checkpoint" / "000001" / "tensors.safetensors")
    with pytest.raises(CheckpointError, match="tensors.safetensors: cannot read"):
        load_checkpoint(tmp_path)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_in_place_of_the_tensors_is_never_unpickled(tmp_path):
    """The checkpoint is safetensors + JSON: a pickle put in its place (whose loading would
    create a file) is refused as unreadable, and nothing in it runs."""
    save_checkpoint(tmp_path, _ckpt(1, 1.0))
    folder = tmp_path / "checkpoint" / "000001"
    marker = tmp_path / "unpickled"
    (folder / "tensors.safetensors").write_bytes(pickle.dumps(_Payload(marker)))
    meta = json.loads((folder / "meta.json").read_text())
    del meta["tensors_sha256"]  # not even the digest stands in the way
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path)
    torch.save({"w": torch.zeros(1)}, folder / "tensors.safetensors")  # torch's pickle format
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path)
    assert not marker.exists()


def test_config_digest_ignores_output_only():
    a = load_config(None, ["output.dir=x", "output.progress=false"])
    b = load_config(None, ["output.dir=y"])
    assert config_digest(a) == config_digest(b)
    assert config_digest(a) != config_digest(load_config(None, ["seed=1"]))
    assert "output" not in results_config(a)


def test_config_changes_name_every_key_old_to_new():
    old = results_config(load_config(None, ["fl.rounds=3", "lora.modules=[q_proj]"]))
    new = results_config(load_config(None, ["fl.rounds=5", "train.lr=0.01", "fl.algorithm=fedprox",
                                            "lora.modules=[q_proj,v_proj]"]))
    assert config_changes(old, new) == [
        "fl.algorithm: fedavg → fedprox", "fl.rounds: 3 → 5",
        'lora.modules: ["q_proj"] → ["q_proj", "v_proj"]', "train.lr: null → 0.01"]
    assert config_changes(old, old) == []
    assert config_changes({"a": {"b": 1}}, {"a": {}}) == ["a.b: 1 → (none)"]


def test_a_checkpoint_of_another_configuration_or_kind_is_refused():
    cfg = load_config(None, ["fl.rounds=3"])
    ck = _ckpt(1, 1.0, digest=config_digest(cfg), config=results_config(cfg))
    check_compatible(ck, "multiround", cfg)  # the same configuration, any output.* keys
    check_compatible(ck, "multiround", load_config(None, ["fl.rounds=3", "output.plot=false"]))
    with pytest.raises(CheckpointError, match="another configuration.*: fl.rounds: 3 → 4$"):
        check_compatible(ck, "multiround", load_config(None, ["fl.rounds=4"]))
    ck.config = None  # a checkpoint that did not keep its configuration: no keys to name
    with pytest.raises(CheckpointError, match="another configuration than config.yaml holds"):
        check_compatible(ck, "multiround", load_config(None, ["fl.rounds=4"]))
    with pytest.raises(CheckpointError, match="oneshot"):
        check_compatible(ck, "oneshot", cfg)


def test_a_checkpoint_from_before_a_new_key_resumes_while_the_key_stays_at_its_default():
    """A key added to fedmllm after the checkpoint was written is absent from its saved
    configuration (and changes its digest); at its default it changed nothing the run did."""
    cfg = load_config(None, ["fl.rounds=3"])
    old = results_config(cfg)
    del old["eval"]["client_holdout"]  # as if eval.client_holdout did not exist then
    ck = _ckpt(1, 1.0, digest="written-before-the-key", config=old)
    check_compatible(ck, "multiround", cfg)
    with pytest.raises(CheckpointError, match="eval.client_holdout: \\(none\\) → 0.2"):
        check_compatible(ck, "multiround", load_config(None, ["fl.rounds=3",
                                                              "eval.client_holdout=0.2"]))
    with pytest.raises(CheckpointError, match="fl.rounds: 3 → 4"):
        check_compatible(ck, "multiround", load_config(None, ["fl.rounds=4"]))
