"""The built-in model's build is one function of its recipe: the same weights (the same
:func:`weights_hash`) whatever torch's thread count in the calling process or ``OMP_NUM_THREADS``
/ ``RAYON_NUM_THREADS`` in its environment, and the hash is recorded in the cache entry and
printed by ``fedmllm model build``. A build of a small test preset (few pre-training steps on a
small corpus) keeps these fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

#: tiny's sizes, 20 pre-training steps on 200 samples: a few seconds to build, and enough
#: matmuls that a build on another thread count rounds differently (tested below).
FAST = {"vocab_size": 1024, "hidden": 128, "layers": 2, "heads": 4, "intermediate": 256,
        "vision_hidden": 64, "vision_layers": 2, "vision_heads": 2, "pretrain_steps": 20,
        "pretrain_batch": 16, "pretrain_lr": 2e-3, "pretrain_samples": 200}


def _build_fast(cache: Path, threads: int, monkeypatch, quiet: bool = True) -> Path:
    """Build the test preset into ``cache`` with torch set to ``threads`` intra-op threads."""
    from fedmllm.model.tiny import PRESETS, Preset, ensure_tiny

    monkeypatch.setitem(PRESETS, "test-fast", Preset(**FAST))
    monkeypatch.setenv("FEDMLLM_CACHE", str(cache))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        folder = ensure_tiny("test-fast", quiet=quiet)
        assert torch.get_num_threads() == threads  # the build restored the caller's count
    finally:
        torch.set_num_threads(before)
    return folder


def _recorded(folder: Path) -> str:
    return json.loads((folder / "recipe.json").read_text())["stats"]["weights_sha256"]


def test_build_determinism_pins_and_restores_threads_and_algorithms():
    from fedmllm.model.tiny import BUILD_THREADS, build_determinism

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(RuntimeError, match="inside"), build_determinism():
            assert torch.get_num_threads() == BUILD_THREADS == 2
            assert torch.are_deterministic_algorithms_enabled()
            raise RuntimeError("inside")
        assert torch.get_num_threads() == 1
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.set_num_threads(before)


def test_weights_hash_is_over_sorted_names_and_bytes(tmp_path):
    import hashlib

    from safetensors.torch import save_file

    from fedmllm.model.tiny import weights_hash

    a, b = torch.arange(6, dtype=torch.float32).reshape(2, 3), torch.ones(2, dtype=torch.int64)
    save_file({"b": b, "a": a}, str(tmp_path / "model.safetensors"))
    by_hand = hashlib.sha256(b"a" + a.numpy().tobytes() + b"b" + b.numpy().tobytes())
    assert weights_hash(tmp_path) == by_hand.hexdigest()
    save_file({"a": a, "b": b + 1}, str(tmp_path / "model.safetensors"))  # one value changed
    assert weights_hash(tmp_path) != by_hand.hexdigest()
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
        weights_hash(tmp_path / "missing")


@pytest.mark.slow
def test_a_build_gives_the_same_weights_on_1_and_3_threads(tmp_path, monkeypatch, capsys):
    """Two builds of one recipe, the caller's torch on 1 and on 3 threads: the same recorded
    hash, which is the hash of the saved weights and is on the ready line. Without the pinned
    count they differ (the control: the same build under 1 and 2 pinned threads)."""
    from fedmllm.model.tiny import build, weights_hash

    one = _build_fast(tmp_path / "one", 1, monkeypatch, quiet=False)
    three = _build_fast(tmp_path / "three", 3, monkeypatch)
    assert _recorded(one) == _recorded(three) == weights_hash(one) == weights_hash(three)
    assert f"'weights_sha256': '{_recorded(one)}'" in capsys.readouterr().out

    real = build.build_determinism
    monkeypatch.setattr(build, "build_determinism", lambda: real(threads=1))
    unpinned = _build_fast(tmp_path / "unpinned", 2, monkeypatch)
    assert weights_hash(unpinned) != weights_hash(one)


_CHILD = """
import json, sys
from fedmllm.model.tiny import PRESETS, Preset, ensure_tiny, weights_hash
PRESETS["test-fast"] = Preset(**json.loads(sys.argv[1]))
folder = ensure_tiny("test-fast", quiet=True)
print(weights_hash(folder))
"""


@pytest.mark.slow
@pytest.mark.processes
def test_a_build_gives_the_same_weights_whatever_the_environments_thread_counts(tmp_path):
    """Two processes started with OMP_NUM_THREADS / RAYON_NUM_THREADS (the tokenizer's
    training) 1 and 4 build the same weights."""
    hashes = []
    for n in (1, 4):
        env = {**os.environ, "OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n),
               "RAYON_NUM_THREADS": str(n), "FEDMLLM_CACHE": str(tmp_path / str(n))}
        out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(FAST)], env=env,
                             capture_output=True, text=True, timeout=600, check=False)
        assert out.returncode == 0, out.stderr
        hashes.append(out.stdout.split()[-1])
    assert hashes[0] == hashes[1]


def test_model_build_prints_the_hash_also_of_an_entry_cached_without_it(tmp_path, monkeypatch,
                                                                       capsys):
    """An entry built before the hash was recorded is hashed on demand, not rebuilt."""
    from safetensors.torch import save_file

    from fedmllm import cli
    from fedmllm.model import tiny
    from fedmllm.model.tiny import weights_hash

    save_file({"w": torch.ones(3)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "recipe.json").write_text(json.dumps({"recipe": {}, "stats": {"parameters": 3}}))
    monkeypatch.setattr(tiny, "ensure_tiny", lambda preset, pretrain: tmp_path)
    assert cli.main(["model", "build"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{tmp_path}\n")
    assert json.loads(out.split("\n", 1)[1]) == {"parameters": 3,
                                                 "weights_sha256": weights_hash(tmp_path)}
    assert not json.loads((tmp_path / "recipe.json").read_text())["stats"].get("weights_sha256")


def test_the_deep_grid_penalises_the_middle_layers_of_the_deep_base():
    """benchmarks/grids/deep.toml runs on the 8-layer base, and its adaptive prox
    (layers s .. L-1-s) penalises layers 2-5 of 8, leaving two free at each end; plain FedProx
    and the other methods share everything else."""
    from fedmllm.bench import load_grid
    from fedmllm.model.tiny import PRESETS

    grid = load_grid(Path(__file__).parents[2] / "benchmarks" / "grids" / "deep.toml")
    assert set(grid.methods) == {"fedavg", "fedprox", "adaptive-prox", "fedavg-agnostic"}
    assert len(grid.seeds) >= 10 and len(grid.claims) == 2
    cell = next(c for c in grid.cells if c.method == "adaptive-prox")
    layers = PRESETS[cell.config.model.preset].layers
    client = cell.config.fl.client
    assert client.objective == "adaptive_prox" and layers == 8
    assert list(range(client.s_layer, layers - client.s_layer)) == [2, 3, 4, 5]
