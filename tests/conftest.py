import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")

import pytest


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
