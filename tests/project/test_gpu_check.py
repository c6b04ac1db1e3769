"""``benchmarks/gpu_check.py`` (``make gpu-check``) without a GPU: it says so in one line and
exits 0; its parsers read gpu_step's and pytest's real output formats and the run files; its
tables keep their columns."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_check", None)


@pytest.mark.processes
def test_without_cuda_it_prints_one_line_and_exits_0(tmp_path, gc):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out",
                        str(tmp_path / "out"), "--markdown", str(tmp_path / "t.md")],
                       check=False, capture_output=True, text=True, env=env,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [gc.NO_GPU] and "needs a CUDA GPU" in p.stdout
    assert not (tmp_path / "out").exists() and not (tmp_path / "t.md").exists()


@pytest.mark.processes
def test_the_bf16_suite_refuses_to_run_without_cuda(tmp_path):
    """FEDMLLM_TEST_DEVICE=cuda where torch sees no GPU stops pytest at once (exit 4, usage
    error) instead of passing the suite on the CPU; an unknown value is refused too."""
    for value, says in (("cuda", "sees no CUDA device"), ("gpu", "choices are cpu, cuda")):
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "FEDMLLM_TEST_DEVICE": value}
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "tests/test_config.py::test_defaults_and_overrides"], cwd=ROOT,
                           check=False, capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode == 4 and says in p.stdout + p.stderr, (value, p.stdout, p.stderr)


# what gpu_step.py prints on an H100 (its format; figures invented for the test)
GPU_STEP_H100 = """\
device: NVIDIA H100 80GB HBM3; torch 2.13.0+cu128
model: 494.0 M base parameters (LM linear weights + head 494.0 M), LoRA r=16 on q_proj k_proj \
v_proj o_proj: 2.16 M trainable; batch 8 x 2048 tokens (256 image tokens each); gradient \
checkpointing off; bf16 weights + bf16 autocast
step: 104.2 ms (20 steps after 3 warm-up); 157,236 tokens/s; model FLOPs/step 0.04 T = 401.9 TFLOP/s
peak memory: 21.37 GiB allocated, 24.00 GiB reserved
MFU: 40.6% of 989.4 TFLOP/s dense bf16 (goal >= 40%)
"""


def test_parse_gpu_step_reads_its_figures(gc):
    f = gc.parse_gpu_step(GPU_STEP_H100)
    assert f == {"device": "NVIDIA H100 80GB HBM3", "step_ms": 104.2, "tokens_per_s": 157236.0,
                 "tflops": 401.9, "peak_gib": 21.37, "mfu": pytest.approx(0.406)}
    assert gc.parse_gpu_step("MFU: n/a (no bf16 peak known for 'Tesla T4'; give "
                             "--peak-tflops)\n") == {}


def test_parse_gpu_step_reads_what_gpu_step_prints(gc, capsys):
    """The parser against gpu_step.py's own output (its CPU smoke run): the format they share."""
    spec = importlib.util.spec_from_file_location("gpu_step", ROOT / "benchmarks" / "gpu_step.py")
    gs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gs)
    assert gs.main(["--smoke", "--rank", "4"]) == 0
    f = gc.parse_gpu_step(capsys.readouterr().out)
    assert f["tokens_per_s"] > 0 and f["step_ms"] > 0 and f["tflops"] >= 0
    assert f["device"] and ("peak_gib" in f) == (f["device"] != "cpu")


PYTEST_OUT = """\
..F.s........x                                                      [100%]
=========================== short test summary info ============================
FAILED tests/test_eval_generation.py::test_batched_scoring_equals_unbatched - assert False
ERROR tests/test_gpu.py::test_bf16_forward_matches_the_float32_cpu_reference - RuntimeError
3 failed, 680 passed, 9 skipped, 99 deselected, 1 error, 2 warnings in 201.33s (0:03:21)
"""


def test_parse_pytest_counts_and_failed_ids(gc):
    got = gc.parse_pytest(PYTEST_OUT)
    assert got == {"passed": 680, "failed": 3, "skipped": 9, "deselected": 99, "errors": 1,
                   "seconds": 201.33, "failed_ids": [
                       "tests/test_eval_generation.py::test_batched_scoring_equals_unbatched",
                       "tests/test_gpu.py::test_bf16_forward_matches_the_float32_cpu_reference"]}
    bare = gc.parse_pytest("=== 3 skipped in 0.51s ===\n")
    assert bare["skipped"] == 3 and bare["passed"] == 0 and bare["seconds"] == 0.51
    assert gc.parse_pytest("no tests ran in 0.01s\n")["passed"] == 0
    # killed before its closing line: nothing to report, not zeros
    assert gc.parse_pytest("..F..\n!!! KeyboardInterrupt !!!\n") == {}


def test_read_run_takes_accuracies_and_the_last_loss(gc, tmp_path):
    assert gc.read_run(tmp_path) == {}
    (tmp_path / "summary.json").write_text(json.dumps({"final": {"per_modality": {
        "image_text": {"accuracy": 1.0}, "image_only": {"accuracy": 0.7975},
        "text_only": {"accuracy": 0.7925}}}}))
    (tmp_path / "metrics.jsonl").write_text(
        json.dumps({"round": 1, "train_loss_mean": 0.9}) + "\n"
        + json.dumps({"round": 2, "train_loss_mean": 0.25}) + "\n")
    got = gc.read_run(tmp_path)
    assert got["loss"] == 0.25
    assert gc.accuracies(got["accuracy"]) == "1.0000 / 0.7975 / 0.7925"
    assert gc.accuracies({"image_text": 0.5}) == "0.5000 / - / -"


def test_tables_keep_their_columns(gc):
    rows = [gc.Row("gpu_step", "pass", "157,236 tokens/s", "", 41.04),
            gc.Row("qlora-4bit", "skip", "bitsandbytes not installed: " + gc.QLORA_PIP),
            gc.Row("tests | bf16", "fail", "1 passed", "", 3.0, note="exit 1 (log x.log)")]
    lines = gc.format_table(rows).splitlines()
    assert lines[0].split() == ["check", "result", "figure", "CPU", "reference", "seconds"]
    col = lines[0].index("result")
    assert [line[col:col + 4] for line in lines[2:5]] == ["pass", "skip", "fail"]
    assert lines[2].endswith("41.0") and lines[3].split()[-1] == "-"  # no CPU ref, no time
    assert lines[5] == "tests | bf16: exit 1 (log x.log)" and len(lines) == 6

    md = gc.format_markdown(rows, "device: X").splitlines()
    assert md[0] == "device: X" and md[2] == "| check | result | figure | CPU reference | seconds |"
    assert md[6] == "| tests \\| bf16 | fail | 1 passed | - | 3.0 |"
    assert md[-1] == "- tests | bf16: exit 1 (log x.log)"
