import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")

import pytest

#: ``make test-fast`` sets this: a test that starts a process (a subprocess, a fork, a Flower
#: federation) without the ``processes`` mark then fails, naming the mark, so the fast tier
#: stays free of them as tests are added.
NO_PROCESSES = os.environ.get("FEDMLLM_TEST_NO_PROCESSES") == "1"


@pytest.fixture(autouse=True)
def _no_processes_in_the_fast_tier(request, monkeypatch):
    if not NO_PROCESSES or request.node.get_closest_marker("processes"):
        return
    import multiprocessing.process
    import subprocess

    def refuse(*args, **kwargs):
        raise AssertionError(f"{request.node.nodeid} starts a process: mark it "
                             "@pytest.mark.processes (make test-fast runs without them)")

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse)
    monkeypatch.setattr(os, "fork", refuse)


@pytest.fixture(scope="session")
def tiny_dir():
    """The built-in ``tiny`` preset (pre-trained), built once into the cache."""
    from fedmllm.model.tiny import ensure_tiny

    return ensure_tiny("tiny", True, quiet=True)


@pytest.fixture(scope="module")
def pissa(tiny_dir, tmp_path_factory):
    """One-shot tests: the paper's targets with the PiSSA (residual) init."""
    from oneshot_common import shared_bundle

    return shared_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def plain(tiny_dir, tmp_path_factory):
    """One-shot tests: peft's zero-B LoRA init on the same targets (the baselines' default)."""
    from oneshot_common import shared_bundle

    return shared_bundle(tmp_path_factory, "fl.yoco.method=fedavg")
