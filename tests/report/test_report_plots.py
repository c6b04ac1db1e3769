"""The per-run plot and ``fedmllm plot``: a legend per view / per run, distinct colours,
integer round ticks, train loss beside the metric, a title; one-line errors."""

from __future__ import annotations

import json

import pytest
import yaml

from fedmllm.cli import main
from fedmllm.errors import OutputError
from fedmllm.report.plots import metrics_figure, plot_metrics, runs_figure

PNG = b"\x89PNG\r\n\x1a\n"


def _row(r: int, acc: dict[str, float], loss=(2.0, 1.0), **extra) -> dict:
    ev = {"per_modality": {v: {"accuracy": a, "auroc": a / 2, "macro_f1": a / 3}
                           for v, a in acc.items()}}
    return {"round": r, "train_loss": {"0": loss[0] / r, "1": loss[1] / r},
            "train_loss_mean": sum(loss) / 2 / r, "eval": ev, **extra}


def _rows(n=7, views=("image_text", "image_only", "text_only")):
    return [_row(r, {v: 0.5 + 0.01 * r + 0.1 * i for i, v in enumerate(views)})
            for r in range(1, n + 1)]


def _run(folder, algorithm="fedavg", rows=None, scenario="aligned", finished=True):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(
        {"fl": {"algorithm": algorithm}, "data": {"dataset": "synth", "task": "binary",
                                                  "scenario": scenario}}))
    rows = _rows() if rows is None else rows
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if finished:
        (folder / "summary.json").write_text(json.dumps({"algorithm": algorithm}))
    return folder


def _integer_ticks(ax) -> bool:
    return all(float(t).is_integer() for t in ax.get_xticks())


def test_run_plot_has_a_legend_per_view_distinct_colours_and_integer_rounds(tmp_path):
    fig = metrics_figure(_rows(), title="fedavg on synth/binary (aligned)")
    ax_metric, ax_loss = fig.axes
    handles, labels = ax_metric.get_legend_handles_labels()
    assert labels == ["image_text", "image_only", "text_only"]
    assert len({h.get_color() for h in handles}) == 3
    assert len({h.get_linestyle() for h in handles}) == 3
    assert _integer_ticks(ax_metric) and _integer_ticks(ax_loss)
    loss_labels = ax_loss.get_legend_handles_labels()[1]
    assert "mean over clients" in loss_labels
    assert fig._suptitle.get_text() == "fedavg on synth/binary (aligned)"
    assert "loss" in ax_loss.get_ylabel() and "accuracy" in ax_metric.get_ylabel()
    out = plot_metrics(_rows(), tmp_path / "metrics.png", title="t")
    assert out.read_bytes()[:8] == PNG


def test_plots_text_is_readable(tmp_path):
    """Every piece of text in both figures at 9 points or more; titles at 11."""
    a, b = _run(tmp_path / "a"), _run(tmp_path / "b", "local", _rows(3, ("text_only",)))
    for fig in (metrics_figure(_rows(), title="t"), runs_figure([a, b])):
        texts = [t for t in fig.findobj(lambda o: hasattr(o, "get_fontsize")
                                        and hasattr(o, "get_text")) if t.get_text()]
        assert texts and min(t.get_fontsize() for t in texts) >= 9
        assert all(ax.title.get_fontsize() >= 11 for ax in fig.axes)


def test_run_plot_of_one_round_and_of_vqa(tmp_path):
    fig = metrics_figure([_row(1, {"image_text": 0.4})])  # a one-shot run: one point
    assert fig.axes[0].get_legend_handles_labels()[1] == ["image_text"]
    assert _integer_ticks(fig.axes[0]) and _integer_ticks(fig.axes[1])
    vqa = [{"round": r, "train_loss_mean": 1.0 / r,
            "eval": {"per_modality": {"image_text": {"overall": 0.2 * r}}}} for r in (1, 2)]
    fig = metrics_figure(vqa)
    line = fig.axes[0].get_lines()[0]
    assert list(line.get_ydata()) == [0.2, 0.4]  # VQA: overall accuracy stands for accuracy


def test_run_plot_without_evaluation_per_round_says_so():
    rows = [{"round": r, "train_loss": {"0": 1.0}, "train_loss_mean": 1.0} for r in (1, 2)]
    fig = metrics_figure(rows)  # a local-only run: no global model per round
    assert fig.axes[0].get_legend_handles_labels()[1] == []
    assert any("no test accuracy" in t.get_text() for t in fig.axes[0].texts)


def test_runs_figure_one_colour_per_run_labelled_by_folder_and_algorithm(tmp_path):
    a = _run(tmp_path / "a", "fedavg")
    b = _run(tmp_path / "b", "fedadam", rows=_rows(4))
    c = _run(tmp_path / "c", "yoco", rows=[_row(1, {"image_text": 0.6})], finished=False)
    fig = runs_figure([a, b, c], metric="auroc", view="image_text")
    ax_metric, ax_loss = fig.axes
    handles, labels = ax_metric.get_legend_handles_labels()
    assert labels == ["a (fedavg)", "b (fedadam)", "c (yoco), unfinished"]
    assert len({h.get_color() for h in handles}) == 3
    assert ax_loss.get_legend_handles_labels()[1] == labels
    assert [h.get_color() for h in ax_loss.get_legend_handles_labels()[0]] == \
        [h.get_color() for h in handles]
    assert _integer_ticks(ax_metric) and _integer_ticks(ax_loss)
    assert "AUROC" in ax_metric.get_ylabel() and "image_text" in ax_metric.get_title()
    assert "3 runs on synth/binary (aligned)" == fig._suptitle.get_text()
    y = list(ax_metric.get_lines()[0].get_ydata())
    assert y == pytest.approx([(0.5 + 0.01 * r) / 2 for r in range(1, 8)])


def test_runs_figure_tells_same_named_folders_apart(tmp_path):
    a = _run(tmp_path / "x" / "run", "fedavg")
    b = _run(tmp_path / "y" / "run", "fedavg", scenario="missing")
    fig = runs_figure([a, b])
    assert fig.axes[0].get_legend_handles_labels()[1] == ["x/run (fedavg)", "y/run (fedavg)"]
    assert fig._suptitle.get_text() == "2 runs"  # different scenarios: not in the title


def test_plot_command_writes_a_png(tmp_path, capsys):
    a, b = _run(tmp_path / "a"), _run(tmp_path / "b", "scaffold")
    out = tmp_path / "plots" / "cmp.png"
    assert main(["plot", str(a), str(b), "--out", str(out), "--metric", "macro_f1",
                 "--view", "text_only"]) == 0
    assert out.read_bytes()[:8] == PNG
    assert str(out) in capsys.readouterr().out
    svg = tmp_path / "cmp.svg"
    assert main(["plot", str(a), "--out", str(svg)]) == 0
    assert svg.read_text().lstrip().startswith("<?xml")


@pytest.mark.parametrize("case", ["no_metrics", "missing", "bad_json", "empty", "suffix",
                                  "folder_out"])
def test_plot_errors_are_one_line(tmp_path, capsys, case):
    good = _run(tmp_path / "good")
    out = tmp_path / "p.png"
    bad = tmp_path / "bad"
    if case == "no_metrics":
        bad.mkdir()
        (bad / "config.yaml").write_text("fl: {}\n")
        expect = f"{bad}: no metrics.jsonl"
    elif case == "missing":
        expect = f"{bad}: no such run folder"
    elif case == "bad_json":
        _run(bad)
        (bad / "metrics.jsonl").write_text('{"round": 1}\n{oops\n')
        expect = "metrics.jsonl:2: not valid JSON"
    elif case == "empty":
        _run(bad, rows=[])
        expect = "no round recorded yet"
    elif case == "suffix":
        bad = good
        out = tmp_path / "p.txt"
        expect = "cannot write a .txt plot"
    else:
        bad = good
        out = tmp_path
        expect = "is a folder"
    assert main(["plot", str(good), str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expect in err, err
    if case not in ("suffix", "folder_out"):
        assert not out.exists()


def test_runs_figure_checks_metric_and_view(tmp_path):
    a = _run(tmp_path / "a")
    with pytest.raises(OutputError, match="unknown metric"):
        runs_figure([a], metric="loss")
    with pytest.raises(OutputError, match="unknown view"):
        runs_figure([a], view="audio")
