import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
# Under pytest-xdist every worker runs its own torch: one thread each (and in the processes
# its tests start, which inherit this), or two workers' thread pools fight over two cores and
# every test runs many times slower. Set before anything imports torch.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest
from helpers.devices import CHOICES, TEST_DEVICE

# FEDMLLM_TEST_DEVICE=cpu: the float32 CPU reference even on a GPU machine (see devices.py).
# Set before torch initialises CUDA, so every test and every subprocess it starts sees no GPU.
if TEST_DEVICE == "cpu":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""


def pytest_configure(config):
    _absl_writes_to_the_real_stderr()
    if TEST_DEVICE not in CHOICES:
        raise pytest.UsageError(f"FEDMLLM_TEST_DEVICE={TEST_DEVICE!r}: choices are cpu, cuda "
                                f"(or unset: the configuration's auto device)")
    if TEST_DEVICE == "cuda":
        import torch

        if not torch.cuda.is_available():  # (bf16 support: the runs' train.autocast=bf16)
            raise pytest.UsageError(f"FEDMLLM_TEST_DEVICE=cuda: torch {torch.__version__} sees "
                                    f"no CUDA device")


def _absl_writes_to_the_real_stderr() -> None:
    """absl (dp-accounting's logging; the privacy accountant) makes its handler on the
    ``sys.stderr`` of the moment, under pytest a capture file; a later ``logging.config`` call
    (import-linter's, in test_layout) closes that handler and with it pytest's capture ("I/O
    operation on closed file"). On the process's own stderr, which absl never closes, it
    cannot."""
    import sys

    from absl import logging as absl_logging

    absl_logging.get_absl_handler().python_handler.setStream(sys.__stderr__)


def pytest_collection_modifyitems(config, items):
    """The slow tests that start processes (Flower federations, killed runs: most of the
    suite's time, much of it waiting) run first, so that pytest-xdist's workers fill the rest
    of their time with the short ones instead of ending on a long one. ``gpu``-marked tests
    are skipped where torch sees no CUDA device."""
    items.sort(key=lambda item: not (item.get_closest_marker("slow")
                                     and item.get_closest_marker("processes")))
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (docs/gpu.md: make gpu-check)")
    for item in gpu:
        item.add_marker(skip)


#: ``make test-fast`` sets this: a test that starts a process (a subprocess, a fork, a Flower
#: federation) without the ``processes`` mark then fails, naming the mark, so the fast tier
#: stays free of them as tests are added.
NO_PROCESSES = os.environ.get("FEDMLLM_TEST_NO_PROCESSES") == "1"


def _while_importing() -> bool:
    """Whether a module is being imported up the stack: libraries that start a helper process
    as they load (matplotlib's first fc-list for its font cache, numpy 1.26's lscpu in
    ``numpy.testing``) are not the test starting one."""
    import traceback

    return any(f.filename.startswith("<frozen importlib") for f in traceback.extract_stack())


@pytest.fixture(autouse=True)
def _no_processes_in_the_fast_tier(request, monkeypatch):
    if not NO_PROCESSES or request.node.get_closest_marker("processes"):
        return
    import multiprocessing.process
    import subprocess

    def guard(original):
        def refuse(*args, **kwargs):
            if _while_importing():
                return original(*args, **kwargs)
            raise AssertionError(f"{request.node.nodeid} starts a process: mark it "
                                 "@pytest.mark.processes (make test-fast runs without them)")
        return refuse

    monkeypatch.setattr(subprocess.Popen, "_execute_child",
                        guard(subprocess.Popen._execute_child))
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start",
                        guard(multiprocessing.process.BaseProcess.start))
    monkeypatch.setattr(os, "fork", guard(os.fork))


@pytest.fixture(scope="session")
def tiny_dir():
    """The built-in ``tiny`` preset (pre-trained), built once into the cache."""
    from fedmllm.model.tiny import ensure_tiny

    return ensure_tiny("tiny", True, quiet=True)


@pytest.fixture(scope="module")
def pissa(tiny_dir, tmp_path_factory):
    """One-shot tests: the paper's targets with the PiSSA (residual) init."""
    from helpers.oneshot_common import shared_bundle

    return shared_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def plain(tiny_dir, tmp_path_factory):
    """One-shot tests: peft's zero-B LoRA init on the same targets (the baselines' default)."""
    from helpers.oneshot_common import shared_bundle

    return shared_bundle(tmp_path_factory, "fl.yoco.method=fedavg")
