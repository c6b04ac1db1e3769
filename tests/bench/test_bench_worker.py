"""The sweep's worker processes: cells one after another on one loaded base, bit for bit what
a cell gives in a process of its own (fedmllm.bench.worker)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.devices import run_overrides

from fedmllm.bench.worker import Bases, Globals
from fedmllm.config import load_config
from fedmllm.engine.bundle import BASES, build_bundle
from fedmllm.engine.factory import plan_run
from fedmllm.model.loading import load_base


def _plan(*extra: str):
    return plan_run(load_config(None, ["model.preset=tiny", *run_overrides(), *extra]))


def _snapshot(model: torch.nn.Module) -> tuple:
    return ({k: v.detach().clone() for k, v in model.state_dict().items()},
            {n: m.training for n, m in model.named_modules()},
            {n: p.requires_grad for n, p in model.named_parameters()})


def _same(a: tuple, b: tuple) -> bool:
    return (a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0])
            and a[1:] == b[1:])


def _a_cell(bases: Bases, *extra: str) -> None:
    """What a cell does to its base: wrap, train a step, evaluate; then the worker releases."""
    token = BASES.set(bases)
    try:
        bundle = build_bundle(_plan(*extra))
    finally:
        BASES.reset(token)
    bundle.model.train()
    lora = [p for p in bundle.model.parameters() if p.requires_grad]
    with torch.no_grad():
        for p in lora:
            p.add_(1.0)
    bundle.model.eval()
    bases.release(clean=True)


def test_bases_keep_the_base_as_loaded_from_cell_to_cell():
    plan = _plan()
    fresh = _snapshot(load_base(plan.model.source, device=plan.model.device,
                                dtype=plan.model.dtype).model)
    bases = Bases()
    _a_cell(bases, "lora.r=4", "train.gradient_checkpointing=true")
    first = bases.base.model
    assert _same(_snapshot(first), fresh)
    assert not any("lora" in n for n, _ in first.named_modules())
    on = getattr(type(first), "is_activation_checkpointing", None) and "is_activation_checkpointing"
    assert not getattr(first, on or "is_gradient_checkpointing")
    _a_cell(bases, "lora.r=8", "lora.modules=[q_proj]")  # another rank, other targets
    assert bases.loads == 1 and bases.base.model is first
    assert _same(_snapshot(first), fresh)
    # PiSSA leaves the residual W - s B0 A0 in the base: the next cell loads it again
    _a_cell(bases, "lora.init=pissa")
    assert bases.base is None
    _a_cell(bases)
    assert bases.loads == 2 and _same(_snapshot(bases.base.model), fresh)
    # another dtype is another base
    _a_cell(bases, "model.dtype=bfloat16", "train.device=cpu", "train.autocast=off")
    assert bases.loads == 3 and bases.base.model.dtype == torch.bfloat16


def test_a_cell_that_fails_drops_the_base():
    bases = Bases()
    token = BASES.set(bases)
    try:
        build_bundle(_plan())
    finally:
        BASES.reset(token)
    bases.release(clean=False)
    assert bases.base is None and bases.loads == 1


def test_globals_put_back_what_a_fresh_process_has():
    fresh = Globals.capture()
    threads = torch.get_num_threads()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(7)
    np.random.seed(7)
    random.seed(7)
    torch.use_deterministic_algorithms(not fresh.deterministic)
    torch.set_float32_matmul_precision("medium")
    torch.set_default_dtype(torch.float64)
    torch.set_grad_enabled(False)
    try:
        fresh.restore(threads=1)
        assert torch.get_num_threads() == 1
        assert torch.are_deterministic_algorithms_enabled() == fresh.deterministic
        assert torch.get_float32_matmul_precision() == fresh.matmul_precision
        assert torch.get_default_dtype() == fresh.default_dtype and torch.is_grad_enabled()
        again = (torch.rand(3), np.random.rand(3), random.random())
        assert torch.equal(again[0], expected[0]) and np.array_equal(again[1], expected[1])
        assert again[2] == expected[2]
    finally:
        fresh.restore(threads=threads)


# ------------------------------------------------------------------ real sweeps (processes)

GRID = """
[bench]
seeds = [0]

[fixed]
"model.preset" = "tiny"
fl = { rounds = 2, local_steps = 2, num_clients = 3, clients_per_round = 2 }
data = { train_size = 36, test_size = 12, min_per_client = 4 }
"eval.views" = ["image_text"]

[[methods]]
name = "fedavg-r8"
"fl.algorithm" = "fedavg"
"lora.r" = 8
"lora.dropout" = 0.1

[[methods]]
name = "local"
"fl.algorithm" = "local"
"lora.r" = 4

[[methods]]
name = "yoco"
"fl.algorithm" = "yoco"
"fl.yoco.local_epochs" = 1
"""


def _bench(grid: Path, out: Path, *args: str, env: dict | None = None):
    e = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "fedmllm", "bench", str(grid), "--out",
                           str(out), "--threads", "1", *args, *run_overrides()], env=e,
                          capture_output=True, text=True, timeout=600, check=False)


def _outputs(run: Path) -> dict:
    """A run's results: every safetensors file's bytes, its metrics rows and its final
    metrics, without the seconds (the only thing that may differ)."""
    out = {p.relative_to(run).as_posix(): p.read_bytes() for p in run.rglob("*.safetensors")
           if "checkpoint" not in p.parts}
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    out["rows"] = [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]
    out["final"] = json.loads((run / "summary.json").read_text())["final"]
    return out


@pytest.mark.slow
@pytest.mark.processes
def test_cells_on_one_worker_equal_cells_run_alone(tmp_path):
    """Three cells (another rank with dropout, local-only, one-shot YOCO with its SVD init)
    through one worker give bit for bit what each gives as a ``fedmllm run`` process."""
    grid = tmp_path / "g.toml"
    grid.write_text(GRID)
    shared, alone = tmp_path / "worker", tmp_path / "isolate"
    for out, args in ((shared, ["--jobs", "1"]), (alone, ["--isolate"])):
        p = _bench(grid, out, *args)
        assert p.returncode == 0, p.stderr
    status = json.loads((shared / "bench.json").read_text())["status"]
    assert [s.get("base") for s in status.values()] == [None, "reused", "reused"]
    for cell in status:
        a, b = _outputs(shared / "runs" / cell), _outputs(alone / "runs" / cell)
        assert a.keys() == b.keys() and any(k.endswith(".safetensors") for k in a), cell
        assert a == b, cell
        assert "fedmllm run — starting in" in (shared / "logs" / f"{cell}.log").read_text()


@pytest.mark.slow
@pytest.mark.processes
def test_a_cell_that_kills_its_worker_fails_and_the_next_runs(tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text(GRID.split("[[methods]]")[0] + '[axes]\n"fl.rounds" = [2, 1]\n')
    out = tmp_path / "sweep"
    p = _bench(grid, out, "--jobs", "1", env={"FEDMLLM_FAILPOINT": "before_summary:2"})
    assert p.returncode == 1 and "1 of 2 cells failed" in p.stderr
    status = json.loads((out / "bench.json").read_text())["status"]
    assert status["default__2__s0"]["status"] == "failed"
    assert status["default__2__s0"]["error"] == "killed by SIGKILL"
    assert status["default__1__s0"]["status"] == "done"
    assert "base" not in status["default__1__s0"]  # a new worker loaded it
    p = _bench(grid, out, "--jobs", "1", "--resume")
    assert p.returncode == 0, p.stderr
    assert json.loads((out / "runs" / "default__2__s0" / "run.json").read_text())[
        "status"] == "finished"
