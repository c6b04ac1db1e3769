"""The device the test suite's runs use, chosen by ``FEDMLLM_TEST_DEVICE`` (read once).

- unset: what the configuration's ``train.device=auto`` resolves to — CUDA (bf16 weights and
  bf16 autocast, ``model.dtype`` / ``train.autocast`` ``auto``) where a GPU is visible, the
  float32 CPU otherwise. Tests that are bitwise references (resume, Flower against the
  simulator) pin ``train.device=cpu`` in their own overrides and stay on the CPU either way.
- ``cpu``: the float32 CPU reference on any machine: conftest.py hides CUDA from the test
  process (``CUDA_VISIBLE_DEVICES=""``) before torch starts, so ``auto`` resolves to the CPU
  and ``gpu``-marked tests are skipped.
- ``cuda``: the suite in bf16 on the GPU (``benchmarks/gpu_check.py`` runs it so): a session
  without a CUDA device stops at once instead of passing on the CPU, and the
  shared run helpers (``tiny_runs.TINY``, ``oneshot_common.base_cfg``) name the device and the
  precision explicitly with :func:`run_overrides`.

Tests marked ``gpu`` need a CUDA device and are skipped without one (see conftest.py).
"""

from __future__ import annotations

import os

CHOICES = ("", "cpu", "cuda")
TEST_DEVICE = os.environ.get("FEDMLLM_TEST_DEVICE", "").strip().lower()


def run_overrides() -> list[str]:
    """Config overrides that put a test run on the device ``FEDMLLM_TEST_DEVICE`` names."""
    return ["train.device=cuda", "train.autocast=bf16"] if TEST_DEVICE == "cuda" else []
