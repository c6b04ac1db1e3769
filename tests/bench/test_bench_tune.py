"""fedmllm bench's tuning phase (a grid's [tune] table, bench/tune.py) and the resume of a sweep
after a config key was added to fedmllm. The fast tests replace the sweep of cells by a fake
that writes each cell's summary from its keys; one slow test runs a tiny tuned sweep for real."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import ROOT

from fedmllm.bench import build_report, load_grid, runner, tune
from fedmllm.cli import main
from fedmllm.config import ConfigError
from fedmllm.errors import OutputError

GRID = """
[bench]
seeds = [0, 1]
reference = "fedavg"

[fixed]
"model.preset" = "tiny"
fl = { rounds = 2, local_steps = 2, num_clients = 4, clients_per_round = 2 }
data = { train_size = 60, test_size = 16 }
"eval.views" = ["image_text"]

[axes]
"fl.algorithm" = ["fedavg", "fedadam", "local"]

[[settings]]
name = "aligned"
"data.scenario" = "aligned"

[[settings]]
name = "missing-50"
"data.scenario" = "missing"
"data.missing_rate" = 0.5

[tune]
seeds = [100, 101]
settings = ["aligned"]
holdout = 0.25

[tune.methods.fedadam]
"fl.strategy.eta" = [0.001, 0.01]
"fl.strategy.tau" = [1e-3, 1e-2]

[tune.methods.local]
"train.lr" = [2e-3, 5e-3]
"""

# the fake cells' held-out accuracy per candidate, and their test accuracy, which disagrees:
# the tuning must follow the held-out one
VALIDATION = {(0.001, 0.001): 0.60, (0.001, 0.01): 0.70, (0.01, 0.001): 0.90,
              (0.01, 0.01): 0.80, 0.002: 0.75, 0.005: 0.75 + 1e-10}


def _grid(tmp_path, text=GRID, name="g.toml"):
    path = tmp_path / name
    path.write_text(text)
    return load_grid(path)


def _held_out(cfg) -> float:
    if cfg.fl.algorithm == "fedadam":
        return VALIDATION[(cfg.fl.strategy["eta"], cfg.fl.strategy["tau"])]
    if cfg.fl.algorithm == "local" and cfg.train.lr is not None:
        return VALIDATION[cfg.train.lr]
    return 0.5


def _fake_run_bench(calls: list):
    """A stand-in for runner.run_bench: every cell 'done' at once, its summary made from its
    keys (held-out accuracy by the table above, 0.01 more with an odd seed; test accuracy
    1 - held-out); records which folders it ran."""
    def run(grid, out, jobs=1, resume=False, threads=None, console=None):
        out = Path(out)
        calls.append((out.name, resume, len(grid.cells)))
        status = {}
        for c in grid.cells:
            folder = out / "runs" / c.id
            folder.mkdir(parents=True, exist_ok=True)
            v, w = _held_out(c.config), 0.01 * (c.seed % 2)
            per = {str(k): {"n": 3, "accuracy": v + w, "auroc": math.nan} for k in range(3)}
            final = {"per_modality": {"image_text": {"n": 16, "accuracy": 1 - v}},
                     "client_eval": {"per_client": per}}
            (folder / "summary.json").write_text(json.dumps({"final": final}))
            status[c.id] = {"status": "done"}
        (out / "bench.json").write_text(json.dumps({**grid.to_json(), "status": status}))
        return status
    return run


@pytest.fixture
def fake():
    calls: list = []
    run = _fake_run_bench(calls)
    run.calls = calls
    return run


# ----------------------------------------------------------------------------- the table

def test_tune_cells_cross_candidates_settings_and_tune_seeds(tmp_path):
    g = _grid(tmp_path)
    t = g.tune
    assert t.seeds == [100, 101] and t.settings == ["aligned"] and t.metric == "accuracy"
    assert t.candidates["fedadam"] == [{"fl.strategy.eta": e, "fl.strategy.tau": u}
                                       for e in (0.001, 0.01) for u in (1e-3, 1e-2)]
    assert len(t.grid.cells) == (4 + 2) * 1 * 2 and len(g.cells) == 3 * 2 * 2
    for c in t.grid.cells:  # the validation split, the tune seeds, one test sample
        assert c.seed in (100, 101) and c.setting == "aligned"
        assert c.config.eval.client_holdout == 0.25 and c.config.eval.max_samples == 1
    c = next(c for c in t.grid.cells if c.id == "aligned__fedadam__eta=0.01_tau=0.001__s101")
    assert c.config.fl.strategy == {"eta": 0.01, "tau": 0.001}
    assert c.config.fl.algorithm == "fedadam" and c.config.fl.rounds == 2
    assert "tune" in g.to_json() and g.to_json()["tune"]["digest"] == t.digest
    assert load_grid(g.path).tune.digest == t.digest


@pytest.mark.parametrize("change, message", [
    (("seeds = [100, 101]", "seeds = [1, 100, 0]"),
     ("tune.seeds: 0, 1 also in bench.seeds; the tune seeds and the report seeds must be "
      "disjoint")),
    (("[tune.methods.local]", "[tune.methods.lokal]"), "tune.methods.lokal: no method 'lokal'"),
    (('"train.lr" = [2e-3, 5e-3]', '"train.lrr" = [2e-3]'),
     "unknown config key 'train.lrr'"),
    (('"train.lr" = [2e-3, 5e-3]', '"train.lr" = 2e-3'), "expected a non-empty list"),
    (("holdout = 0.25", "holdout = 1.5"), "tune.holdout: expected a fraction"),
    (('settings = ["aligned"]', 'settings = ["cross"]'), "tune.settings: expected a list"),
    (("holdout = 0.25", 'metric = "auc_hard"'), "tune.metric: expected one of"),
    (("holdout = 0.25", "budget = 3"), "tune.budget: unknown key"),
    (('"local"]', '"local", "zeroshot"]\n'), None),
])
def test_tune_table_errors_name_the_file(tmp_path, change, message, capsys):
    text = GRID.replace(*change)
    if message is None:  # zero-shot trains nothing: a [tune.methods.zeroshot] is refused
        text += '[tune.methods.zeroshot]\n"train.lr" = [1e-3]\n'
        message = "tune.methods.zeroshot: zero-shot trains nothing"
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_grid(path)
    assert message in str(e.value) and str(path) in str(e.value)
    assert main(["bench", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "o").exists()


def test_dry_run_counts_tune_and_report_cells(tmp_path, capsys):
    path = tmp_path / "g.toml"
    path.write_text(GRID)
    assert main(["bench", str(path), "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "12 tune cells and 12 report cells (run with the tuned keys)" in out
    assert "aligned__local__lr=0.005__s100: fedmllm run" in out
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- the phase

def test_the_best_held_out_candidate_is_chosen_and_applied(tmp_path, fake):
    g = _grid(tmp_path)
    out = tmp_path / "sweep"
    tuned = tune.run_tuning(g, out, fake)
    assert fake.calls == [("tune", False, 12)]
    chosen = json.loads((out / "tune" / "chosen.json").read_text())
    assert chosen["digest"] == g.tune.digest
    # by the held-out score (test accuracy would pick eta 0.001 tau 0.001); the local
    # candidates tie within 1e-9: the first listed wins
    assert chosen["methods"]["fedadam"]["chosen"] == {"fl.strategy.eta": 0.01,
                                                      "fl.strategy.tau": 0.001}
    assert chosen["methods"]["local"]["chosen"] == {"train.lr": 0.002}
    fedadam = chosen["methods"]["fedadam"]["candidates"][2]
    assert fedadam["mean"] == pytest.approx(0.905) and len(fedadam["scores"]) == 2
    local = chosen["methods"]["local"]["candidates"]
    assert local[1]["mean"] > local[0]["mean"] and chosen["methods"]["local"]["index"] == 0
    for c in tuned.cells:
        if c.method == "fedadam":
            assert c.config.fl.strategy == {"eta": 0.01, "tau": 0.001}
            assert c.tuned == {"fl.strategy.eta": 0.01, "fl.strategy.tau": 0.001}
            assert "fl.strategy.eta=0.01 fl.strategy.tau=0.001 seed=" in c.command(None)
        elif c.method == "local":
            assert c.config.train.lr == 0.002 and c.tuned == {"train.lr": 0.002}
        else:
            assert c.tuned == {} and c.config.fl.strategy == {} and c.config.train.lr is None
        assert c.config.eval.client_holdout == 0.0 and c.config.eval.max_samples is None
        assert c.seed in (0, 1)
    assert tuned.digest != g.digest
    cells = {c["id"]: c for c in tuned.to_json()["cells"]}
    assert cells["missing-50__local__s1"]["tuned"] == {"train.lr": 0.002}
    assert "tuned" not in cells["missing-50__fedavg__s1"]


def test_resume_reuses_chosen_and_refuses_a_changed_tune_table(tmp_path, fake):
    g = _grid(tmp_path)
    out = tmp_path / "sweep"
    first = tune.run_tuning(g, out, fake)
    again = tune.run_tuning(g, out, fake, resume=True)
    assert len(fake.calls) == 1  # nothing ran again
    assert [c.config.to_dict() for c in again.cells] == [c.config.to_dict() for c in first.cells]
    with pytest.raises(OutputError, match="holds a sweep; continue it with --resume"):
        tune.run_tuning(g, out, fake)
    changed = _grid(tmp_path, GRID.replace("[2e-3, 5e-3]", "[2e-3, 5e-3, 1e-2]"), "h.toml")
    with pytest.raises(OutputError, match=r"\[tune\] table .* changed since the tuning chose"):
        tune.run_tuning(changed, out, fake, resume=True)
    # a tuning stopped before it chose continues its own sweep
    (out / "tune" / "chosen.json").unlink()
    tune.run_tuning(g, out, fake, resume=True)
    assert fake.calls[-1] == ("tune", True, 12) and (out / "tune" / "chosen.json").is_file()
    with pytest.raises(OutputError, match="no sweep to resume"):
        tune.run_tuning(g, tmp_path / "elsewhere", fake, resume=True)


def test_the_report_sweep_starts_in_a_folder_that_holds_only_the_tuning(tmp_path):
    g = _grid(tmp_path)
    out = tmp_path / "sweep"
    (out / "tune").mkdir(parents=True)
    assert runner._open_folder(out, g, resume=False) == {}
    assert runner._open_folder(out, g, resume=True) == {}  # the tuning was resumed
    (out / "other.txt").write_text("x")
    with pytest.raises(OutputError, match="not empty and not a bench folder"):
        runner._open_folder(out, g, resume=False)
    with pytest.raises(OutputError, match="no sweep to resume"):
        runner._open_folder(tmp_path / "elsewhere", g, resume=True)


def test_a_tune_cell_without_a_score_stops_before_choosing(tmp_path, fake):
    g = _grid(tmp_path)
    out = tmp_path / "sweep"
    fake(g.tune.grid, out / "tune")
    (out / "tune" / "runs" / "aligned__local__lr=0.005__s101" / "summary.json").unlink()
    with pytest.raises(OutputError, match="tune cell aligned__local__lr=0.005__s101 has no "
                                          "validation score"):
        tune.choose(g.tune, out / "tune")


def test_cell_score_is_the_mean_over_clients_with_the_metric(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"final": {"client_eval": {
        "per_client": {"0": {"accuracy": 0.5, "auroc": 0.9}, "1": {"accuracy": 1.0},
                       "2": {"accuracy": 0.75, "auroc": None}}}}}))
    assert tune.cell_score(tmp_path, "accuracy") == pytest.approx(0.75)
    assert tune.cell_score(tmp_path, "auroc") == pytest.approx(0.9)  # undefined: left out
    assert tune.cell_score(tmp_path, "macro_f1") is None
    assert tune.cell_score(tmp_path / "nothing", "accuracy") is None


def test_report_has_the_tuning_section(tmp_path, fake):
    g = _grid(tmp_path)
    out = tmp_path / "sweep"
    tuned = tune.run_tuning(g, out, fake)
    fake(tuned, out)  # the report cells, done
    md = build_report(out)["markdown"].read_text()
    section = md.split("## Tuning")[1].split("\n## ")[0]
    assert "Tune seeds 100, 101, tune settings aligned" in section
    assert "report seeds (0, 1) are disjoint from the tune seeds" in section
    assert "never touched the test set" in section
    assert ("| fedadam | fl.strategy.eta = 0.001, fl.strategy.tau = 0.001 | 0.605 (0.600–0.610)"
            in section)
    assert ("|  | **fl.strategy.eta = 0.01, fl.strategy.tau = 0.001** | 0.905 (0.900–0.910) | "
            "chosen |") in section
    assert section.count("| chosen |") == 2
    (out / "tune" / "chosen.json").unlink()
    md = build_report(out)["markdown"].read_text()
    assert "The tuning in" in md and "has not finished" in md


def test_shipped_grids_tune_on_disjoint_seeds_within_budget():
    grids = ROOT / "benchmarks" / "grids"
    findings = load_grid(grids / "findings.toml")
    assert findings.seeds == list(range(10))
    assert findings.tune is not None and len(findings.tune.grid.cells) <= 132
    paper = load_grid(grids / "fedmllm_paper.toml")
    assert paper.tune is not None and len(paper.tune.grid.cells) <= 168
    for g in (findings, paper):
        assert not set(g.tune.seeds) & set(g.seeds)
        assert {"fedadam", "fedyogi", "fedavg", "local"} <= set(g.tune.candidates)
        # the adaptive rules may take the rounds they need (issue 26, item 4)
        assert all(any(c.get("fl.rounds") == 48 for c in g.tune.candidates[m])
                   for m in ("fedadam", "fedyogi"))


# ----------------------------------------------------------------------------- resume fix

def _saved_sweep(tmp_path):
    g = _grid(tmp_path, GRID.split("[tune]")[0])
    out = tmp_path / "sweep"
    (out / "configs").mkdir(parents=True)
    for c in g.cells:
        runner._place(out, g, c)
        (out / "configs" / f"{c.id}.yaml").write_text(c.config.to_yaml())
    return g, out


def _edit_saved(out, cid, edit):
    path = out / "configs" / f"{cid}.yaml"
    tree = yaml.safe_load(path.read_text())
    edit(tree)
    path.write_text(yaml.safe_dump(tree, sort_keys=False))


def test_resume_accepts_a_key_added_at_its_default_and_refuses_real_changes(tmp_path):
    g, out = _saved_sweep(tmp_path)
    runner._check_extension(out, g)
    # a sweep saved before fedmllm had fl.privacy and train.autocast (now at their defaults)
    _edit_saved(out, "aligned__fedavg__s0", lambda t: (t["fl"].pop("privacy"),
                                                       t["train"].pop("autocast")))
    runner._check_extension(out, g)
    # a key missing from the saved config whose value now is not its default: a change
    _edit_saved(out, "aligned__fedavg__s1", lambda t: t["fl"].pop("local_steps"))
    with pytest.raises(OutputError, match="cell aligned__fedavg__s1 ran with another"):
        runner._check_extension(out, g)
    _edit_saved(out, "aligned__fedavg__s1", lambda t: t["fl"].update(local_steps=2))
    runner._check_extension(out, g)
    _edit_saved(out, "missing-50__local__s0", lambda t: t["data"].update(missing_rate=0.4))
    with pytest.raises(OutputError, match="cell missing-50__local__s0 ran with another"):
        runner._check_extension(out, g)
    _edit_saved(out, "missing-50__local__s0", lambda t: t["data"].update(missing_rate=0.5))
    _edit_saved(out, "missing-50__local__s0", lambda t: t["data"].update(gone=1))
    with pytest.raises(OutputError, match="cell missing-50__local__s0 ran with another"):
        runner._check_extension(out, g)  # a key fedmllm no longer has: refused


# ----------------------------------------------------------------------------- for real

@pytest.mark.slow
@pytest.mark.processes
def test_a_tuned_sweep_runs_resumes_and_reports(tmp_path):
    """Two tune cells (local, two client learning rates, 2 rounds) and two report cells."""
    text = """
[bench]
seeds = [0]

[fixed]
"model.preset" = "tiny"
fl = { rounds = 2, local_steps = 2, num_clients = 4, clients_per_round = 2 }
data = { train_size = 60, test_size = 16 }
"eval.views" = ["image_text"]
"output.plot" = false

[axes]
"fl.algorithm" = ["fedavg", "local"]

[tune]
seeds = [100]
[tune.methods.local]
"train.lr" = [2e-3, 5e-3]
"""
    grid, out = tmp_path / "g.toml", tmp_path / "sweep"
    grid.write_text(text)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}

    def bench(*args):
        return subprocess.run([sys.executable, "-m", "fedmllm", "bench", str(grid), "--out",
                               str(out), *args], env=env, capture_output=True, text=True,
                              timeout=600, check=False)

    p = bench("--threads", "1")
    assert p.returncode == 0, p.stderr
    chosen = json.loads((out / "tune" / "chosen.json").read_text())
    lr = chosen["methods"]["local"]["chosen"]["train.lr"]
    run = yaml.safe_load((out / "runs" / "default__local__s0" / "config.yaml").read_text())
    assert run["train"]["lr"] == lr and run["eval"]["client_holdout"] == 0.0
    tuned = yaml.safe_load((out / "tune" / "runs" / "default__local__lr=0.005__s100" /
                            "config.yaml").read_text())
    assert tuned["eval"]["client_holdout"] == 0.2 and tuned["seed"] == 100
    state = json.loads((out / "bench.json").read_text())
    assert f"train.lr={lr}" in state["status"]["default__local__s0"]["command"]
    assert "## Tuning" in (out / "report.md").read_text()
    p = bench("--resume")
    assert p.returncode == 0, p.stderr
    assert "(0 to run)" in p.stdout + p.stderr and "tuning" not in p.stdout + p.stderr
    grid.write_text(text.replace("[2e-3, 5e-3]", "[2e-3, 1e-2]"))
    p = bench("--resume")
    assert p.returncode == 2 and "changed since the tuning chose" in p.stderr
