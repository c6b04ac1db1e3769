"""The engine's pieces without a model: factory checks, server round, client state store,
the output folder rules, metrics rows on resume, seeds and atomic files."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fedmllm.config import ConfigError, load_config
from fedmllm.engine.factory import plan_run, update_norm_bound
from fedmllm.engine.server import ServerRound
from fedmllm.engine.state import ClientStateStore
from fedmllm.errors import OutputError
from fedmllm.fl import ClientUpdate, make_strategy
from fedmllm.report.metrics import MetricsWriter
from fedmllm.runtime.outputs import RunFolder

# ----------------------------------------------------------------------------- factory


def plan(*overrides):
    return plan_run(load_config(None, list(overrides)))


@pytest.mark.parametrize(("algorithm", "objective", "optimizer", "lr"), [
    ("fedavg", "ce", "adamw", 5e-3),
    ("fedprox", "prox", "adamw", 5e-3),
    ("scaffold", "scaffold", "sgd", 0.5),
    ("fedadam", "ce", "adamw", 5e-3),
])
def test_auto_resolves_the_algorithms_own_client_side(algorithm, objective, optimizer, lr):
    p = plan(f"fl.algorithm={algorithm}")
    assert (p.objective, p.optimizer, p.lr) == (objective, optimizer, lr)
    assert f"fl.client.objective = {objective}" in p.notes
    # explicit values are kept, and not reported as resolved
    p = plan(f"fl.algorithm={algorithm}", "train.optimizer=adamw", "train.lr=0.01")
    assert (p.optimizer, p.lr) == ("adamw", 0.01) and not any("train." in n for n in p.notes)


@pytest.mark.parametrize(("overrides", "key", "words"), [
    (["fl.algorithm=fedadm"], "fl.algorithm", "did you mean 'fedadam'"),
    (["fl.algorithm=FedAdm"], "fl.algorithm", "did you mean 'fedadam'"),
    (["fl.rounds=0"], "fl.rounds", "fl.algorithm=zeroshot"),
    (["fl.strategy.eta=0.1"], "fl.strategy", "eta"),
    (["fl.client.objective=proxx"], "fl.client.objective", "did you mean 'prox'"),
    (["fl.algorithm=fedprox", "fl.client.objective=ce"], "fl.client.objective", "fedprox"),
    (["fl.algorithm=scaffold", "fl.client.objective=prox"], "fl.client.objective", "scaffold"),
    (["fl.client.objective=scaffold"], "fl.client.objective", "fedavg"),
    (["fl.client.objective=yoco"], "fl.client.objective", "one-shot"),
    (["fl.client.prox_mu=-1", "fl.client.objective=prox"], "fl.client", "prox_mu"),
    (["fl.algorithm=trimmed_mean", "fl.clients_per_round=4"], "fl.clients_per_round",
     "fl.strategy.beta=0.2"),
    (["fl.algorithm=median", "fl.clients_per_round=2"], "fl.clients_per_round", "median"),
    (["fl.min_clients=5"], "fl.min_clients", "skipped"),
    (["fl.algorithm=yoco", "fl.yoco.init=default"], "fl.yoco.init", "sign"),
    (["fl.algorithm=yoco", "fl.yoco.merge_b=pcaa"], "fl.yoco.merge_b", "did you mean"),
    (["fl.algorithm=yoco", "fl.yoco.method=fedadam", "fl.strategy.bogus=1"], "fl.strategy",
     "bogus"),
    (["fl.max_update_norm=-1"], "fl.max_update_norm", "positive"),
    (["model.name=./no/such/folder"], "model.name", "no such model folder"),
    (["model.name=fedmllm-preset:huge"], "model.name", "unknown built-in preset 'huge'"),
    (["data.dataset=crisismmd"], "data.data_dir", "needs its folder"),
    (["data.prepared=/nonexistent"], "data.prepared", "manifest.json"),
])
def test_configuration_errors_name_the_key(overrides, key, words):
    with pytest.raises(ConfigError) as e:
        plan(*overrides)
    message = str(e.value)
    assert message.startswith(key) and words in message, message
    assert "\n" not in message


def test_names_are_case_insensitive_and_more_clients_per_round_than_clients_is_said():
    cfg = load_config(None, ["fl.algorithm=FedProx", "data.scenario=Missing",
                             "fl.client.objective=Adaptive_Prox", "fl.num_clients=3"])
    p = plan_run(cfg)
    assert (cfg.fl.algorithm, p.algorithm, p.objective) == ("fedprox", "fedprox",
                                                            "adaptive_prox")
    assert cfg.data.scenario == "missing"
    assert any(n.startswith("fl.clients_per_round = 3: there are only 3 clients")
               for n in p.notes)
    assert plan("fl.algorithm=zeroshot", "fl.rounds=0").algorithm == "zeroshot"
    assert plan("model.name=fedmllm-preset:tiny-init").algorithm == "fedavg"  # what adapters record


def test_trimmed_mean_and_yoco_default_init_that_work_are_accepted():
    assert plan("fl.algorithm=trimmed_mean", "fl.clients_per_round=5").objective == "ce"
    p = plan("fl.algorithm=yoco", "fl.yoco.init=default", "fl.yoco.variant=init")
    assert p.oneshot and p.objective == "yoco" and p.init == "default"
    p = plan("fl.algorithm=yoco")
    assert "fl.yoco.init = pissa" in p.notes
    assert any(n.startswith("fl.yoco.targets = paper (auto") for n in p.notes)
    assert p.lora.modules == ["q_proj"] and p.lora.layers == [-1]


def test_update_norm_bound():
    assert update_norm_bound(None, 5.0) is None and update_norm_bound("none", 5.0) is None
    assert update_norm_bound(3.0, 5.0) == 3.0
    assert update_norm_bound("auto", 5.0) == 500.0
    assert update_norm_bound("auto", 0.01) == 100.0  # at least 100 x 1


# ----------------------------------------------------------------------------- server round

def _updates(values, n=(1, 1, 1)):
    return [ClientUpdate(state={"w": torch.tensor([v])}, num_examples=k, client_id=i)
            for i, (v, k) in enumerate(zip(values, n, strict=True))]


def test_server_round_aggregates_validates_and_counts():
    x = {"w": torch.tensor([0.0])}
    server = ServerRound(make_strategy("fedavg"), max_update_norm=10.0)
    out = server.run(x, _updates([1.0, 3.0, 100.0], n=(1, 3, 1)), round=1)
    assert out.rejected[0][0] == 2 and "norm" in out.rejected[0][1]
    assert out.accepted == [0, 1] and out.skipped is None
    assert out.global_state["w"].item() == pytest.approx((1.0 * 1 + 3.0 * 3) / 4)
    assert out.bytes_uploaded == 3 * 4 and out.bytes_downloaded == 3 * 4


def test_server_round_auto_bound_rejects_a_huge_finite_update():
    x = {"w": torch.tensor([2.0, 0.0])}
    server = ServerRound(make_strategy("fedyogi"), max_update_norm="auto")
    ups = [ClientUpdate(state={"w": torch.tensor([1e20, 0.0])}, num_examples=1, client_id=0),
           ClientUpdate(state={"w": torch.tensor([2.5, 0.0])}, num_examples=1, client_id=1)]
    out = server.run(x, ups, round=1)
    assert [c for c, _ in out.rejected] == [0] and out.accepted == [1]
    assert bool(torch.isfinite(out.global_state["w"]).all())


def test_server_round_keeps_global_and_optimizer_state_when_the_result_is_not_finite():
    x = {"w": torch.tensor([0.0, 0.0])}
    strategy = make_strategy("fedadam")
    server = ServerRound(strategy, max_update_norm=None)
    first = server.run(x, _updates([1.0, 1.0, 1.0]), round=1)
    before = {k: v.clone() for k, v in strategy.state_dict().items()}
    # 1e30 is finite, but its square overflows float32: v becomes inf, the step 0 or NaN
    huge = [ClientUpdate(state={"w": torch.tensor([1e30, 1e30])}, num_examples=1, client_id=i)
            for i in range(3)]
    out = server.run(first.global_state, huge, round=2)
    assert out.skipped and "not finite" in out.skipped and out.accepted == []
    assert out.global_state is first.global_state
    after = strategy.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_server_round_skips_below_min_clients_and_robust_minimum():
    x = {"w": torch.tensor([0.0])}
    out = ServerRound(make_strategy("fedavg"), min_clients=3).run(x, _updates([1.0, 2.0], (1, 1)),
                                                                   round=1)
    assert out.skipped and out.accepted == [] and out.global_state is x
    out = ServerRound(make_strategy("median")).run(x, _updates([1.0, 2.0], (1, 1)), round=1)
    assert out.skipped and "median needs 3" in out.skipped
    out = ServerRound(make_strategy("median")).run(x, _updates([1.0, 2.0, 9.0]), round=1)
    assert out.global_state["w"].item() == 2.0


# ----------------------------------------------------------------------------- state store

def test_client_state_store_round_trip():
    store = ClientStateStore()
    assert store.get(3) == {}
    store.put(3, {"a.b": torch.tensor([1.0, 2.0])})
    store.put(11, {"c": torch.ones(2, 2)})
    flat = store.state_dict()
    assert sorted(flat) == ["11/c", "3/a.b"]
    other = ClientStateStore()
    other.load_state_dict(flat)
    assert torch.equal(other.get(3)["a.b"], torch.tensor([1.0, 2.0])) and len(other) == 2
    flat["3/a.b"].add_(5)  # copies: changing the dict does not change the store
    assert torch.equal(store.get(3)["a.b"], torch.tensor([1.0, 2.0]))
    store.put(3, {})
    assert 3 not in store
    with pytest.raises(ValueError, match="client id"):
        other.load_state_dict({"x/a": torch.zeros(1)})


# ----------------------------------------------------------------------------- metrics rows

def test_metrics_writer_cuts_back_to_the_checkpoint_rows(tmp_path):
    path = tmp_path / "metrics.jsonl"
    w = MetricsWriter(path)
    for r in (1, 2, 3):
        w.write({"round": r, "x": float("nan")})
    with path.open("a") as f:
        f.write('{"round": 4, "x"')  # a line cut short by a crash
    again = MetricsWriter(path, keep_rows=2)
    assert again.rows == [{"round": 1, "x": None}, {"round": 2, "x": None}]
    again.write({"round": 3})
    assert [json.loads(x)["round"] for x in path.read_text().splitlines()] == [1, 2, 3]
    with pytest.raises(ValueError, match="expects 9"):
        MetricsWriter(path, keep_rows=9)
    assert MetricsWriter(path).rows == [] and path.read_text() == ""


# ----------------------------------------------------------------------------- output folders

def test_default_folder_is_new_and_unique(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg1, cfg2 = load_config(None, []), load_config(None, ["fl.algorithm=fedadam"])
    f1 = RunFolder.new(cfg1)
    f2 = RunFolder.new(load_config(None, []))
    f3 = RunFolder.new(cfg2)
    assert f1.path.parent == tmp_path / "runs" or f1.path.parent.name == "runs"
    assert f1.path.name.startswith("fedavg-synth-") and f3.path.name.startswith("fedadam-synth-")
    assert f1.path != f2.path and cfg1.output.dir == str(f1.path)
    assert f1.status()["status"] == "running" and f1.status()["pid"] == os.getpid()


def test_finished_and_unfinished_runs_are_not_overwritten(tmp_path):
    out = tmp_path / "run"
    cfg = load_config(None, [f"output.dir={out}"])
    folder = RunFolder.new(cfg)
    (out / "config.yaml").write_text("x")
    folder.mark("failed")
    with pytest.raises(OutputError, match="unfinished run.*--resume"):
        RunFolder.new(load_config(None, [f"output.dir={out}"]))
    (out / "summary.json").write_text("{}")
    folder.mark("finished")
    with pytest.raises(OutputError, match="finished run.*--overwrite"):
        RunFolder.new(load_config(None, [f"output.dir={out}"]))
    (out / "keep").write_text("old")
    RunFolder.new(load_config(None, [f"output.dir={out}"]), overwrite=True)
    assert not (out / "keep").exists() and not (out / "summary.json").exists()


def test_folder_problems_are_one_line_errors(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        RunFolder.new(load_config(None, [f"output.dir={a_file}"]))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("x")
    with pytest.raises(OutputError, match="not a fedmllm run folder"):
        RunFolder.new(load_config(None, [f"output.dir={foreign}"]), overwrite=True)
    assert (foreign / "thesis.tex").exists()
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(OutputError, match="locked"):
            RunFolder.new(load_config(None, [f"output.dir={locked / 'run'}"]))


@pytest.mark.processes
def test_a_live_run_is_not_taken_over(tmp_path):
    out = tmp_path / "run"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        folder = RunFolder.new(load_config(None, [f"output.dir={out}"]))
        status = folder.status()
        status["pid"] = sleeper.pid
        (out / "run.json").write_text(json.dumps(status))
        (out / "config.yaml").write_text("x")
        with pytest.raises(OutputError, match=f"in progress there \\(pid {sleeper.pid}\\)"):
            RunFolder.resume(out)
        with pytest.raises(OutputError, match="in progress"):
            RunFolder.new(load_config(None, [f"output.dir={out}"]), overwrite=True)
    finally:
        sleeper.kill()
        sleeper.wait()
    time.sleep(0.05)
    assert RunFolder.resume(out).path == out  # a dead owner: resumable


# ----------------------------------------------------------------------------- seeds, files

def test_seeds_are_derived_per_purpose_and_match_seed_sequence():
    from fedmllm.seeding import numpy_rng, torch_generator, torch_seed

    assert np.array_equal(numpy_rng(3, 100).integers(0, 1 << 30, 4),
                          np.random.default_rng(np.random.SeedSequence([3, 100])).integers(
                              0, 1 << 30, 4))
    seeds = {torch_seed(0, p, 2, 3) for p in ("batches", "dropout", "holdout")}
    assert len(seeds) == 3 and torch_seed(0, "batches", 2, 3) == torch_seed(0, "batches", 2, 3)
    assert torch_seed(0, "batches", 2, 3) != torch_seed(0, "batches", 3, 2)
    a = torch.rand(3, generator=torch_generator(5, "x"))
    assert torch.equal(a, torch.rand(3, generator=torch_generator(5, "x")))
    with pytest.raises(ValueError, match=">= 0"):
        torch_seed(0, -1)


def test_atomic_dir_leaves_the_old_folder_on_failure(tmp_path):
    from fedmllm.files import atomic_dir, atomic_write_text

    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a").write_text("2")
        raise RuntimeError("crash")
    assert (target / "a").read_text() == "1" and os.listdir(tmp_path) == ["out"]
    atomic_write_text(tmp_path / "f.txt", "x")
    assert (tmp_path / "f.txt").read_text() == "x" and len(os.listdir(tmp_path)) == 2


def test_a_folder_that_cannot_be_created_or_written_is_one_line(tmp_path, monkeypatch):
    if Path("/proc/self").is_dir():  # a file system nobody may create folders in, root included
        with pytest.raises(OutputError, match="cannot create the output folder"):
            RunFolder.new(load_config(None, ["output.dir=/proc/fedmllm-test/run"]))
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    with pytest.raises(OutputError, match="not writable"):
        RunFolder.new(load_config(None, [f"output.dir={tmp_path / 'run'}"]))


def test_a_folder_opened_by_the_flower_launcher_is_taken_over_once(tmp_path):
    out = tmp_path / "run"
    folder = RunFolder.new(load_config(None, [f"output.dir={out}"]))
    (out / "flower").mkdir()  # the launcher's processes live here
    (out / "flower" / "processes.json").write_text("{}")
    folder.mark("launching")
    taken = RunFolder.new(load_config(None, [f"output.dir={out}"]))
    assert taken.status()["status"] == "running" and (out / "flower" / "processes.json").exists()
    taken.mark("launching")
    (out / "checkpoint").mkdir()  # it ran: now only --resume may continue it
    with pytest.raises(OutputError, match="unfinished run"):
        RunFolder.new(load_config(None, [f"output.dir={out}"]))
