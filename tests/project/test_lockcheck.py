"""The lock file: it pins every dependency pyproject.toml declares, inside its range, and
``tools/lockcheck.py`` tells an environment that differs from it."""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path

import pytest
from helpers import ROOT
from packaging.requirements import Requirement

LOCK = ROOT / "requirements-lock.txt"


def _lockcheck():
    spec = importlib.util.spec_from_file_location("lockcheck", ROOT / "tools" / "lockcheck.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    locked = [*project["dependencies"], *extras["dev"], *extras["flower"], *extras["qlora"]]
    return [Requirement(r) for r in locked]


def test_the_lock_pins_every_declared_dependency_inside_its_range():
    lc = _lockcheck()
    pins = lc.read_lock(LOCK)
    for req in _declared():
        name = lc.canonical(req.name)
        assert name in pins, f"{LOCK.name}: {req.name} is declared but not locked: make lock"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{LOCK.name}: {req.name}=={pins[name]} is outside pyproject's {req}: make lock")


def test_lockcheck_names_each_difference(tmp_path):
    lc = _lockcheck()
    lock = tmp_path / "lock.txt"
    lock.write_text("# a comment\nTorch==2.13.0+cpu\n    # via x\n"
                    "tomli_w==1.2.0 ; python_version >= '3.11'\ngone==1.0\n")
    pins = lc.read_lock(lock)
    assert pins == {"torch": "2.13.0+cpu", "tomli-w": "1.2.0", "gone": "1.0"}
    have = {"torch": "2.14.1", "tomli-w": "1.2.0", "extra": "0.1", "pip": "26.3",
            "fedmllm": "0.1.0"}
    assert lc.differences(pins, have) == ["extra: 0.1 installed, not in the lock",
                                          "gone: locked at 1.0, not installed",
                                          "torch: locked at 2.13.0+cpu, 2.14.1 installed"]
    lock.write_text("torch>=2.13\n")
    with pytest.raises(SystemExit, match=r"lock.txt:1: not a 'name==version' pin"):
        lc.read_lock(lock)


@pytest.mark.skipif(Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(),
                    reason="not the venv `make install` builds")
def test_the_make_venv_holds_the_lock():
    """The venv the tests run in is the lock, but for what `make install` keeps beside it:
    bitsandbytes (in .venv/qlora, on the path for the QLoRA tests only) and, on a GPU machine,
    its own CUDA torch and torchvision."""
    import torch

    lc = _lockcheck()
    beside = {"bitsandbytes"} | ({"torch", "torchvision"} if torch.version.cuda else set())
    diff = lc.differences(lc.read_lock(LOCK), lc.installed())
    assert [d for d in diff if d.split(":")[0] not in beside] == []


def test_lockcheck_can_leave_a_gpu_machines_torch_out(tmp_path, monkeypatch, capsys):
    """A GPU venv keeps its CUDA torch and torchvision: ``--except`` compares the rest."""
    lc = _lockcheck()
    lock = tmp_path / "lock.txt"
    lock.write_text("torch==2.13.0+cpu\nnumpy==2.4.6\n")
    monkeypatch.setattr(lc, "installed", lambda: {"torch": "2.13.0+cu128", "torchvision": "0.28.0",
                                                  "numpy": "2.4.6", "pip": "26.3"})
    assert lc.main([str(lock)]) == 1
    assert "torch: locked at 2.13.0+cpu, 2.13.0+cu128 installed" in capsys.readouterr().err
    assert lc.main(["--except", "torch,torchvision", str(lock)]) == 0
    monkeypatch.setattr(lc, "installed", lambda: {"torch": "2.13.0+cu128", "numpy": "2.3.0"})
    assert lc.main(["--except", "torch,torchvision", str(lock)]) == 1


def test_the_lock_was_made_from_this_pyproject():
    """``make lock`` records the SHA-256 of the pyproject.toml it resolved: a pyproject.toml
    edited after the lock (a range, an extra, a setting) fails here until ``make lock`` runs."""
    import hashlib

    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    header = LOCK.read_text().splitlines()[:5]
    assert f"#    from pyproject.toml sha256 {digest}" in header, (
        "pyproject.toml changed after requirements-lock.txt: run `make lock` and commit both")

