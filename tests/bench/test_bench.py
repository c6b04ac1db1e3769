"""fedmllm bench: grid files, the statistics, the report, and a real sweep on the tiny model."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT

from fedmllm.bench import build_report, load_grid, report
from fedmllm.bench.results import read_results
from fedmllm.bench.stats import UNIT, mean_ci, paired
from fedmllm.cli import main
from fedmllm.config import ConfigError

GRID = """
[bench]
seeds = [0, 1]
reference = "fedavg"

[fixed]
"model.preset" = "tiny"
fl = { rounds = 2, local_steps = 2, num_clients = 4, clients_per_round = 2 }
data = { train_size = 60, test_size = 16 }
"eval.views" = ["image_text", "text_only"]

[axes]
"fl.algorithm" = ["fedavg", "local"]

[[settings]]
name = "aligned"
"data.scenario" = "aligned"

[[settings]]
name = "missing-50"
"data.scenario" = "missing"
"data.missing_rate" = 0.5

[[claims]]
name = "federated beats local"
better = { method = "fedavg" }
worse = { method = "local" }
"""


def _grid(tmp_path, text=GRID, name="g.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- the grid file

def test_grid_expands_settings_axes_and_seeds(tmp_path):
    g = load_grid(_grid(tmp_path))
    assert len(g.cells) == 2 * 2 * 2
    assert g.settings == ["aligned", "missing-50"] and g.methods == ["fedavg", "local"]
    c = next(c for c in g.cells if c.id == "missing-50__local__s1")
    assert (c.config.data.scenario, c.config.data.missing_rate) == ("missing", 0.5)
    assert (c.config.fl.algorithm, c.config.seed, c.config.fl.rounds) == ("local", 1, 2)
    assert c.config.eval.views == ["image_text", "text_only"]
    assert "fl.algorithm=local" in c.command(None) and "seed=1" in c.command(None)
    assert load_grid(_grid(tmp_path)).digest == g.digest
    other = load_grid(_grid(tmp_path, GRID.replace("seeds = [0, 1]", "seeds = [0, 2]"), "h.toml"))
    assert other.digest != g.digest


@pytest.mark.parametrize("change, message", [
    (("[axes]", "[axis]"), "unknown table 'axis'"),
    (("seeds = [0, 1]", "seeds = [0, 0]"), "bench.seeds: expected a list of distinct"),
    (('"fl.algorithm" = ["fedavg", "local"]', '"fl.algorithm" = ["fedavg", "fedadm"]'),
     "cell aligned__fedadm__s0: fl.algorithm: unknown algorithm 'fedadm'; did you mean"),
    (('"data.missing_rate" = 0.5', '"data.missing_rte" = 0.5'),
     ("cell missing-50__fedavg__s0: unknown config key 'data.missing_rte'; did you mean "
      "'data.missing_rate'?")),
    (('worse = { method = "local" }', 'worse = { method = "lokal" }'),
     "claim 'federated beats local': no method 'lokal'"),
    (('reference = "fedavg"', 'reference = "fedadam"'), "bench.reference: no method"),
    (('"model.preset" = "tiny"', '"model.preset" = "tiny"\nseed = 3'), "seed: set by the bench"),
])
def test_grid_errors_name_the_file_and_the_cell(tmp_path, change, message, capsys):
    path = _grid(tmp_path, GRID.replace(*change))
    with pytest.raises(ConfigError, match=None) as e:
        load_grid(path)
    assert message in str(e.value) and str(path) in str(e.value)
    assert main(["bench", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "o").exists()  # nothing is created before the grid is checked


def test_shipped_grids_load(tmp_path):
    grids = sorted((ROOT / "benchmarks" / "grids").glob("*.toml"))
    assert {g.name for g in grids} >= {"quick.toml", "fedmllm_paper.toml"}
    assert {"hateful_memes.toml", "crisismmd.toml", "medical.toml", "deep.toml"} <= {
        g.name for g in grids}
    for g in grids:  # the real datasets' grids get a (stand-in) data folder, as a user gives
        grid = load_grid(g, [f"data.data_dir={tmp_path}"] if "data.data_dir" in g.read_text()
                         else [])
        assert grid.cells and (grid.claims or g.name == "server_lr_probe.toml"), g
    paper = load_grid(ROOT / "benchmarks" / "grids" / "fedmllm_paper.toml")
    assert len(paper.settings) == 12 and len(paper.seeds) >= 3
    assert {"fedavg", "fedprox", "fedavgm", "fedadagrad", "fedadam", "fedyogi", "scaffold",
            "local", "zeroshot", "centralized"} <= set(paper.methods)


# ----------------------------------------------------------------------------- statistics

def test_mean_ci_is_the_student_t_interval():
    iv = mean_ci([1.0, 2.0, 3.0])
    assert iv.mean == 2.0 and iv.sd == 1.0 and iv.n == 3
    assert iv.half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)  # t_{0.975,2} = 4.3027
    assert math.isnan(mean_ci([0.5]).half) and mean_ci([0.5]).text() == "0.500"
    assert mean_ci([None, float("nan")]).n == 0


def test_paired_uses_common_seeds_only():
    p = paired({0: 0.8, 1: 0.7, 2: 0.9, 3: 0.1}, {0: 0.6, 1: 0.55, 2: 0.65})
    assert p.diff.n == 3 and p.diff.mean == pytest.approx(0.2)  # 0.2, 0.15, 0.25: sd 0.05
    assert p.diff.half == pytest.approx(4.302653 * 0.05 / math.sqrt(3), rel=1e-5)
    assert (p.wins, p.ties, p.losses) == (3, 0, 0) and p.verdict == "better"
    assert paired({0: 0.5, 1: 0.6}, {0: 0.6, 1: 0.5}).verdict == "no clear difference"
    # 0.1, 0.2, 0.3 over three seeds: half-width 0.248 > 0.2, not shown
    assert paired({0: 0.7, 1: 0.8, 2: 0.9}, {0: 0.6, 1: 0.6, 2: 0.6}).verdict == \
        "no clear difference"


def test_intervals_stay_in_the_metric_range_and_two_seeds_show_min_max():
    """What a report shows: a t interval clipped to [0, 1] (differences to [-1, 1]); with
    fewer than 3 seeds the min and max over the seeds instead; the t interval kept for
    verdicts."""
    two = mean_ci([0.0, 0.5], UNIT)  # the 0.250 ± 3.177
    assert two.half == pytest.approx(3.177, abs=1e-3) and two.lo < -2.9  # verdicts' interval
    assert two.spread and two.shown() == (0.0, 0.5) and two.text() == "0.250 (0.000–0.500)"
    assert mean_ci([0.6, 0.6], UNIT).text() == "0.600 (every seed)"
    near_one = mean_ci([0.9, 0.95, 1.0], UNIT)  # 0.95 ± 0.124: past 1
    assert not near_one.spread and near_one.hi > 1
    assert near_one.shown() == (pytest.approx(0.8258, abs=1e-4), 1.0)
    assert near_one.text() == "0.950 [0.826, 1.000]"
    assert mean_ci([0.5, 0.6, 0.55], UNIT).text() == "0.550 ± 0.124"  # inside: unchanged
    assert mean_ci([0.9, 0.95, 1.0]).text() == "0.950 ± 0.124"  # no range given: no clipping
    diff = paired({0: 0.9, 1: 0.1}, {0: 0.1, 1: 0.9}, bounds=UNIT).diff
    assert diff.text() == "0.000 (-0.800 to 0.800)" and diff.bounds == (-1.0, 1.0)
    wide = paired({0: 1.0, 1: 0.0, 2: 1.0}, {0: 0.0, 1: 1.0, 2: 0.0}, bounds=UNIT).diff
    assert wide.shown() == (-1.0, 1.0) and wide.text() == "0.333 [-1.000, 1.000]"
    assert report._yerr([near_one, two]) == [[pytest.approx(0.1242, abs=1e-4), 0.25],
                                             [pytest.approx(0.05), 0.25]]


# ----------------------------------------------------------------------------- the report

def _fake_sweep(tmp_path) -> Path:
    """A finished sweep without running anything: every cell's summary written by hand."""
    g = load_grid(_grid(tmp_path))
    out = tmp_path / "sweep"
    acc = {("aligned", "fedavg"): [0.90, 0.92], ("aligned", "local"): [0.60, 0.62],
           ("missing-50", "fedavg"): [0.80, 0.70], ("missing-50", "local"): [0.75, 0.72]}
    status = {}
    for c in g.cells:
        folder = out / "runs" / c.id
        folder.mkdir(parents=True)
        a = acc[(c.setting, c.method)][c.seed]
        view = {"n": 16, "accuracy": a, "macro_f1": a - 0.1, "auroc": a + 0.05,
                "auc_hard": a, "invalid_rate": 0.0, "confusion": [[4, 4], [8, 0]]}
        final = {"per_modality": {"image_text": view, "text_only": {**view, "accuracy": 0.5}}}
        if c.method == "local":  # per client, as a local-only summary has it: mean a
            final = {"per_client": {str(k): {"per_modality": {
                "image_text": {**view, "accuracy": a + d},
                "text_only": {**view, "accuracy": 0.5}}} for k, d in ((0, 0.05), (1, -0.05))}}
        (folder / "summary.json").write_text(json.dumps({"final": final, "totals": {
            "bytes_uploaded": 100, "bytes_downloaded": 100, "train_seconds": 1.0}}))
        (folder / "metrics.jsonl").write_text(json.dumps(
            {"round": 2, "eval": final if c.method == "fedavg" else None}) + "\n")
        status[c.id] = {"status": "done", "seconds": 3.0}
    status["missing-50__local__s1"] = {"status": "failed", "error": "fedmllm: error: boom"}
    (out / "runs" / "missing-50__local__s1" / "summary.json").unlink()
    (out / "bench.json").write_text(json.dumps({**g.to_json(), "status": status}))
    return out


def test_report_tables_and_claims_by_hand(tmp_path):
    out = _fake_sweep(tmp_path)
    paths = build_report(out)
    md = paths["markdown"].read_text()
    # aligned fedavg: mean 0.91, sd 0.01414, t_{.975,1} = 12.706 -> half 0.127, shown (two
    # seeds) as the min-max 0.900-0.920
    # the gate: the constant answer scores 0.5 (8 of 16 true samples in class 0). aligned:
    # fedavg beats it (paired 0.40, 0.42); local's 0.10, 0.12 has the interval 0.11 ± 0.127.
    # missing-50: fedavg's 0.30, 0.20 (± 0.635) and local's single seed beat nothing; the
    # reference (fedavg) fails there, so missing-50 has no signal
    assert "| aligned | 0.500 (every seed) | fedavg | local |" in md
    assert "| missing-50 | 0.500 (every seed) | none | fedavg, local |" in md
    assert "| method | aligned | missing-50 (no signal) | mean rank |" in md
    # ranked on aligned only; ✗ where the method fails the gate
    assert "| fedavg | 0.910 (0.900–0.920) | 0.750 (0.700–0.800) ✗ | 1.0 |" in md
    # local-only: the mean over its clients; one seed left in missing-50 (s1 failed)
    assert "| local | 0.610 (0.600–0.620) ✗ | 0.750 ✗ | 2.0 |" in md
    assert "| local | 2.00 | -0.300 | better in 0, worse in 1, unclear in 0 |" in md
    # the paired t test (0.90, 0.92 and 0.60, 0.62 are one group each: not two-valued)
    assert "| aligned | local | -0.300 (every seed) | 0/0/2 | t <0.001 | <0.001 (t) | worse |" \
        in md
    assert "holds in 1 of 1 comparisons" in md  # the paired difference 0.30, 0.30
    assert "| fedavg @ aligned | 0.910 (0.900–0.920) | local @ aligned | 0.610 (0.600–0.620) " \
           "| 0.300 (every seed) | t <0.001 | <0.001 (t) | holds |" in md
    assert "| fedavg @ missing-50 | 0.750 (0.700–0.800) | local @ missing-50 | 0.750 | 0.050 " \
           "| - | - | no signal |" in md
    assert "missing-50__local__s1 | failed | fedmllm: error: boom" in md
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 7 * 2 + 1  # header, 7 done cells x 2 views, the failed cell
    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") >= 3 and "<table>" in html
    assert main(["report", str(out)]) == 0
    assert main(["report", str(tmp_path)]) == 2
    doc = tmp_path / "docs" / "results.md"
    assert main(["report", str(out), "--publish", str(doc)]) == 0
    text = doc.read_text()
    assert "| fedavg | 0.910 (0.900–0.920) |" in text and "](results_figures/views.png)" in text
    assert (tmp_path / "docs" / "results_figures" / "views.png").is_file()


def test_report_shows_the_privacy_spent_of_dp_cells(tmp_path):
    out = _fake_sweep(tmp_path)
    for folder in (out / "runs").glob("aligned__fedavg__s*"):
        summary = json.loads((folder / "summary.json").read_text())
        eps = 4.5 if folder.name.endswith("s0") else 5.25
        folder.joinpath("summary.json").write_text(json.dumps({**summary, "privacy": {
            "epsilon": eps, "delta": 1e-5}}))
    md = build_report(out)["markdown"].read_text()
    assert "## Privacy" in md and "| fedavg | aligned | 5.25 | 0.910 (0.900–0.920) |" in md
    assert "| local | aligned |" not in md.split("## Privacy")[1].split("##")[0]
    rows = read_results(out / "results.csv")
    assert {r["privacy_epsilon"] for r in rows if r["method"] == "fedavg"
            and r["setting"] == "aligned"} == {4.5, 5.25}


def test_report_html_is_its_markdown_rendered(tmp_path):
    """report.html: report.md rendered by markdown-it (tables, code, a grid's notes as
    Markdown with raw HTML escaped), every figure embedded."""
    out = _fake_sweep(tmp_path)
    state = json.loads((out / "bench.json").read_text())
    notes = tmp_path / "notes.md"
    notes.write_text("## Why\n\nThe *aligned* setting <script>x</script> `fedavg`.\n")
    (out / "bench.json").write_text(json.dumps({**state, "notes": str(notes)}))
    paths = build_report(out)
    html, md = paths["html"].read_text(), paths["markdown"].read_text()
    assert "<h2>Why</h2>" in html and "<em>aligned</em>" in html
    assert "&lt;script&gt;" in html and "<script>" not in html
    assert "<td>fedavg</td>" in html and "<code>fedavg</code>" in html
    assert html.count("<img src=\"data:image/png;base64,") == md.count("](figures/")


def _figure(out: Path, name: str):
    """One of the report's figures, as matplotlib objects (pyplot's, closed by the caller)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    st = report._study(out, True)
    return plt, report._curves if name == "curves" else report._view_bars, st


def test_report_curves_have_every_method_labelled_axes_and_one_y_range(tmp_path):
    """Every method in every panel it ran in (local-only, evaluated at the end only, as its
    final mean at the last round), 'round' and the metric on the axes, one y range, fonts of
    10 points and more."""
    out = _fake_sweep(tmp_path)
    for cell in ("aligned__fedavg__s0", "aligned__fedavg__s1", "missing-50__fedavg__s0"):
        ev = {"per_modality": {"image_text": {"accuracy": 0.4}}}
        with (out / "runs" / cell / "metrics.jsonl").open("a") as f:  # round 1 before it
            f.write(json.dumps({"round": 1, "eval": ev}) + "\n")
    plt, draw, st = _figure(out, "curves")
    fig = draw(plt, st, {"fedavg": "tab:blue", "local": "tab:orange"})
    try:
        axes = [ax for ax in fig.axes if ax.get_visible() and ax.has_data()]
        assert [ax.get_title() for ax in axes] == ["aligned", "missing-50"]
        for ax in axes:
            lines = {ln.get_label(): ln for ln in ax.get_lines()}
            assert set(lines) == {"fedavg", "local (final only)"}
            assert sorted(lines["fedavg"].get_xdata()) == [1, 2]
            assert list(lines["local (final only)"].get_xdata()) == [2]
            assert ax.get_xlabel() == "round" and ax.get_ylabel() == "accuracy (image+text)"
            assert ax.xaxis.label.get_fontsize() >= 10 and ax.title.get_fontsize() >= 10
            assert all(t.get_fontsize() >= 10 for t in ax.get_yticklabels())
        # aligned: local 0.61 over two seeds; missing-50: one seed left, 0.75
        assert lines["local (final only)"].get_ydata()[0] == pytest.approx(0.75)
        assert axes[0].get_ylim() == axes[1].get_ylim()
        lo, hi = axes[0].get_ylim()
        assert -0.02 <= lo <= 0.4 and 0.92 <= hi <= 1.02
        legend = fig.legends[0]
        assert [t.get_text() for t in legend.get_texts()] == ["fedavg", "local (final only)"]
        assert all(t.get_fontsize() >= 10 for t in legend.get_texts())
    finally:
        plt.close(fig)


def test_report_bar_labels_are_horizontal_and_error_bars_span_the_shown_interval(tmp_path):
    """Method names unrotated; an error bar spans what the table shows (here the min-max over
    two seeds; clipped t intervals: see report._yerr in the interval test)."""
    out = _fake_sweep(tmp_path)
    plt, draw, st = _figure(out, "views")
    fig = draw(plt, st, {})
    try:
        ax = fig.axes[0]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["fedavg", "local"]
        assert all(t.get_rotation() == 0 for t in ax.get_xticklabels())
        # fedavg image+text: 0.85, 0.81 over settings (two seeds): the bar spans min to max
        bars = {c.get_label(): c for c in ax.containers}  # a BarContainer per view
        fedavg = bars["image+text"].errorbar.lines[2][0].get_segments()[0]
        assert [y for _, y in fedavg] == [pytest.approx(0.81), pytest.approx(0.85)]
    finally:
        plt.close(fig)


def test_report_explains_every_no_signal_in_one_line_below_it(tmp_path):
    """Every table that says 'no signal' is followed by the one line saying what it means;
    the min-max note stands under the headline table (two seeds)."""
    md = build_report(_fake_sweep(tmp_path))["markdown"].read_text()
    blocks = md.split("\n\n")
    tables = [i for i, b in enumerate(blocks) if b.startswith("|") and "no signal" in b]
    assert len(tables) == 3  # headline, the paired differences, the claim
    line = ("*no signal* (missing-50): the reference `fedavg` does not beat the constant "
            "answer (the test set's most frequent answer; paired over seeds, 95 % interval "
            "above 0), so these numbers cannot tell the methods apart: not ranked, not judged.")
    assert all(blocks[i + 1] == line for i in tables)
    assert blocks[tables[0] + 2].startswith("✗: fails the learnability gate in that setting")
    assert blocks[tables[0] + 3].startswith("Note: with fewer than 3 seeds, `mean (min–max)`")
    assert "`mean ± half-width` is the 95 % Student-t interval" in md


def _render_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "render_report", ROOT / "benchmarks" / "render_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_render_report_says_what_is_missing_in_one_line(tmp_path, capsys, monkeypatch):
    render = _render_script()
    assert render.main([str(tmp_path / "report.html"), str(tmp_path / "r.png")]) == 2
    assert capsys.readouterr().err.strip().endswith("report.html: no such file")
    (tmp_path / "report.html").write_text("<p>x</p>")
    monkeypatch.setattr(render.shutil, "which", lambda name: None)  # no chromium installed
    assert render.main([str(tmp_path / "report.html"), str(tmp_path / "r.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("render_report: no chromium on PATH") and "\n" not in err


@pytest.mark.processes
@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium (a dev tool)")
def test_render_report_draws_the_report_with_chromium(tmp_path):
    """The report in a real headless browser: a PNG of the window's size, not blank."""
    from PIL import Image

    html = build_report(_fake_sweep(tmp_path))["html"]
    png = _render_script().render(html, tmp_path / "report.png", 1000, 1200)
    with Image.open(png) as im:
        assert im.size == (1000, 1200)
        assert len(im.convert("L").getcolors(1 << 16)) > 10  # text and figures drawn


def test_bench_progress_heartbeat_counts_running_cells_and_the_eta():
    import io

    from rich.console import Console

    from fedmllm.report.console import RoundProgress

    buf = io.StringIO()
    with RoundProgress(Console(file=buf, force_terminal=False, width=100), 8, True, 3,
                       heartbeat=0.5, what="cells", eta=True) as progress:
        progress.running = 2
        time.sleep(1.3)
    assert buf.getvalue().splitlines()[0].startswith("... 3/8 cells, 2 running, ")
    assert buf.getvalue().splitlines()[0].endswith(" s, ETA ?")


# ----------------------------------------------------------------------------- a real sweep

# the sweep's process takes SIGINT as a terminal's foreground job does, even where the tests
# run in a background job of a non-interactive shell, which ignores SIGINT (and passes that on)
_FOREGROUND = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
               "from fedmllm.cli import main; sys.exit(main(sys.argv[1:]))")


def _bench(args, env=None, **kw):
    e = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-c", _FOREGROUND, "bench", *args], env=e,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.slow
@pytest.mark.processes
def test_sweep_fails_resumes_and_interrupts(tmp_path):
    text = GRID.replace('"fl.algorithm" = ["fedavg", "local"]', '"fl.algorithm" = ["fedavg"]')
    text = text.replace("seeds = [0, 1]", "seeds = [0]").split("[[settings]]")[0]
    text = text.split("[[claims]]")[0]
    grid = _grid(tmp_path, text)  # two cells: fedavg x seed 0 ... one setting "default"
    grid.write_text(text.replace('"fl.algorithm" = ["fedavg"]',
                                 '"fl.algorithm" = ["fedavg", "fedadam"]'))
    out = tmp_path / "sweep"
    # 1. every cell is killed after its first round's checkpoint: both recorded as failed
    p = _bench([str(grid), "--out", str(out), "--jobs", "2"],
               env={"FEDMLLM_FAILPOINT": "round_checkpointed:1"})
    _, err = p.communicate(timeout=300)
    assert p.returncode == 1 and "2 of 2 cells failed" in err
    state = json.loads((out / "bench.json").read_text())
    assert {s["status"] for s in state["status"].values()} == {"failed"}
    assert all(s["error"] == "killed by SIGKILL" for s in state["status"].values())
    assert "killed by SIGKILL" in (out / "report.md").read_text()
    # 2. without --resume the folder is refused
    p = _bench([str(grid), "--out", str(out)])
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "--resume" in err
    # 3. --resume continues both from their checkpoints
    p = _bench([str(grid), "--out", str(out), "--jobs", "2", "--resume"])
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    for cell in ("default__fedavg__s0", "default__fedadam__s0"):
        run = json.loads((out / "runs" / cell / "run.json").read_text())
        assert run["resumes"] == [1] and run["status"] == "finished"
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 2
    # 3b. a grid that only adds cells (another seed) extends the sweep: only the new cells run
    extended = grid.read_text().replace("seeds = [0]", "seeds = [0, 1]")
    grid.write_text(extended)
    before = (out / "runs" / "default__fedavg__s0" / "summary.json").stat().st_mtime_ns
    p = _bench([str(grid), "--out", str(out), "--jobs", "2", "--resume"])
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert (out / "runs" / "default__fedavg__s0" / "summary.json").stat().st_mtime_ns == before
    assert (out / "runs" / "default__fedadam__s1" / "summary.json").is_file()
    assert len((out / "results.csv").read_text().splitlines()) == 1 + 4 * 2
    grid.write_text(extended.replace("local_steps = 2", "local_steps = 3"))
    p = _bench([str(grid), "--out", str(out), "--resume"])
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "ran with another configuration" in err
    grid.write_text(extended.replace("seeds = [0, 1]", "seeds = [0]"))
    # 4. Ctrl-C: a new sweep is interrupted while its first cell runs (held after its first
    # round's checkpoint: a worker runs the next cell at once, so without the pause a tiny
    # cell could end, and the next start, before the signal lands); finished cells are kept
    out2 = tmp_path / "sweep2"
    p = _bench([str(grid), "--out", str(out2), "--jobs", "1"],
               env={"FEDMLLM_FAILPOINT": "round_checkpointed:1:pause"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (
            out2 / "runs" / "default__fedavg__s0" / "metrics.jsonl").is_file():
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "--resume" in err
    state = json.loads((out2 / "bench.json").read_text())
    assert state["status"]["default__fedavg__s0"]["status"] == "interrupted"
    assert state["status"]["default__fedadam__s0"]["status"] == "pending"
    p = _bench([str(grid), "--out", str(out2), "--resume"])
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    # the same cell gives the same numbers whether it ran alone, beside another, or resumed
    a = json.loads((out / "runs" / "default__fedavg__s0" / "summary.json").read_text())
    b = json.loads((out2 / "runs" / "default__fedavg__s0" / "summary.json").read_text())
    assert a["final"] == b["final"]


def test_overrides_reach_every_cell_but_not_the_grids_own_axes(tmp_path):
    g = load_grid(_grid(tmp_path), ["fl.local_steps=5", "train.lr=0.01"])
    assert {(c.config.fl.local_steps, c.config.train.lr) for c in g.cells} == {(5, 0.01)}
    with pytest.raises(ConfigError, match="fl.algorithm is an axis or setting key"):
        load_grid(_grid(tmp_path), ["fl.algorithm=fedadam"])
    with pytest.raises(ConfigError, match="data.scenario is an axis or setting key"):
        load_grid(_grid(tmp_path), ["data.scenario=cross"])


def test_named_methods_carry_their_own_keys(tmp_path):
    text = GRID.replace('[axes]\n"fl.algorithm" = ["fedavg", "local"]\n', '''
[[methods]]
name = "fedavg"
"fl.algorithm" = "fedavg"

[[methods]]
name = "fedadam-0.01"
"fl.algorithm" = "fedadam"
"fl.strategy.eta" = 0.01
''').replace('worse = { method = "local" }', 'worse = { method = "fedadam-0.01" }')
    g = load_grid(_grid(tmp_path, text))
    assert g.methods == ["fedavg", "fedadam-0.01"] and len(g.cells) == 8
    c = next(c for c in g.cells if c.method == "fedadam-0.01")
    assert c.config.fl.algorithm == "fedadam" and c.config.fl.strategy == {"eta": 0.01}
    assert next(c for c in g.cells if c.method == "fedavg").config.fl.strategy == {}
    bad = text.replace('"fl.strategy.eta" = 0.01', '"fl.strategy.eta" = 0.01\n"seed" = 4')
    with pytest.raises(ConfigError, match="seed: set by the bench"):
        load_grid(_grid(tmp_path, bad, "bad.toml"))


@pytest.mark.slow
@pytest.mark.processes
def test_one_shot_cells_share_one_training(tmp_path):
    """share_uploads: of two one-shot cells that differ in the merge only, the second loads the
    first's uploads; a resume after an added bench key keeps the finished cells."""
    text = """
[bench]
seeds = [0]
share_uploads = true

[fixed]
"model.preset" = "tiny"
"fl.algorithm" = "yoco"
fl = { num_clients = 3 }
"fl.yoco.local_epochs" = 1
data = { train_size = 24, test_size = 8, min_per_client = 4 }
"eval.views" = ["image_text"]

[axes]
"fl.yoco.method" = ["fedavg", "ties"]
"""
    grid = _grid(tmp_path, text)
    out = tmp_path / "sweep"
    p = _bench([str(grid), "--out", str(out), "--jobs", "1"])
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    rows = {c: json.loads((out / "runs" / f"default__{c}__s0" / "metrics.jsonl")
                          .read_text().splitlines()[0]) for c in ("fedavg", "ties")}
    assert rows["fedavg"]["uploads_loaded_from"] is None
    key = rows["ties"]["uploads_loaded_from"]
    assert key and (out / "uploads" / key / "uploads.safetensors").is_file()
    assert rows["ties"]["train_loss"] == rows["fedavg"]["train_loss"]
    grid.write_text(text.replace("share_uploads = true",
                                 'share_uploads = true\nfocus = "ties"\nagainst = ["fedavg"]'))
    p = _bench([str(grid), "--out", str(out), "--resume"])
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert "Verdict: ties" in (out / "report.md").read_text()


def test_results_carry_the_oneshot_step_and_the_calibrated_threshold(tmp_path):
    """A one-shot cell's fedopt_step (summary.json's oneshot block) and a calibrated cell's
    accuracy_calibrated / threshold land in results.csv, read back as a word and numbers."""
    out = _fake_sweep(tmp_path)
    for folder in (out / "runs").glob("aligned__fedavg__s*"):
        summary = json.loads((folder / "summary.json").read_text())
        pm = summary["final"]["per_modality"]["image_text"]
        pm.update(accuracy_calibrated=0.95, threshold=0.41)
        summary["oneshot"] = {"method": "fedadam", "fedopt_step": "research"}
        folder.joinpath("summary.json").write_text(json.dumps(summary))
    build_report(out)
    rows = [r for r in read_results(out / "results.csv") if r["view"] == "image_text"
            and r["setting"] == "aligned"]
    fed = [r for r in rows if r["method"] == "fedavg"]
    assert fed and all(r["fedopt_step"] == "research" and r["accuracy_calibrated"] == 0.95
                       and r["threshold"] == 0.41 for r in fed)
    assert all(r["fedopt_step"] is None and r["threshold"] is None
               for r in rows if r["method"] != "fedavg")
