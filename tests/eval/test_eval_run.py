"""``fedmllm eval --run RUN``: a finished run evaluated again with its own configuration gives
its own final numbers; local-only runs; overrides; one-line errors (exit 2)."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers.tiny_runs import tiny_run

from fedmllm.cli import main


@pytest.fixture(scope="module")
def fedavg_run(tmp_path_factory, tiny_dir):
    return tiny_run(tmp_path_factory.mktemp("runs") / "fedavg")


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, tiny_dir):
    return tiny_run(tmp_path_factory.mktemp("runs") / "local", "fl.algorithm=local",
                    "fl.clients_per_round=3")


def _summary(run):
    return json.loads((run / "summary.json").read_text())


def _err_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_eval_run_reproduces_the_runs_final_metrics(fedavg_run, capsys):
    assert main(["eval", "--run", str(fedavg_run)]) == 0
    ev = json.loads((fedavg_run / "eval" / "eval.json").read_text())
    final = _summary(fedavg_run)["final"]
    assert ev["per_modality"].keys() == final["per_modality"].keys()
    for view, theirs in final["per_modality"].items():
        mine = ev["per_modality"][view]
        # the same samples through the same model: equal, not close
        assert mine["accuracy"] == theirs["accuracy"], view
        assert mine["auroc"] == theirs["auroc"], view
        assert mine["n"] == theirs["n"] == 16
    assert ev["per_modality"]["image_text"]["accuracy"] == \
        final["per_modality"]["image_text"]["accuracy"]
    assert ev["meta"]["test_set"] == "run" and ev["meta"]["run"] == str(fedavg_run)
    rows = (fedavg_run / "eval" / "predictions.jsonl").read_text().splitlines()
    assert len(rows) == 3 * 16
    assert "same numbers as the run's summary.json" in capsys.readouterr().out


def test_eval_run_repeats_a_calibrated_threshold(tmp_path, capsys, tiny_dir):
    """A run with eval.threshold = calibrated: the threshold it recorded per view is applied
    again, and accuracy_calibrated is repeated exactly, beside the fixed figures."""
    run = tiny_run(tmp_path / "cal", "eval.client_holdout=0.25", "eval.threshold=calibrated")
    assert main(["eval", "--run", str(run)]) == 0
    ev = json.loads((run / "eval" / "eval.json").read_text())
    for view, theirs in _summary(run)["final"]["per_modality"].items():
        mine = ev["per_modality"][view]
        assert isinstance(theirs["threshold"], float), view
        assert mine["threshold"] == theirs["threshold"], view
        assert mine["accuracy_calibrated"] == theirs["accuracy_calibrated"], view
        assert mine["accuracy"] == theirs["accuracy"], view
    assert "same numbers as the run's summary.json" in capsys.readouterr().out


def test_eval_run_repeats_each_local_clients_own_threshold(tmp_path, capsys, tiny_dir):
    """Local-only with eval.threshold = calibrated: each client chose its own threshold on its
    own held-out samples; evaluated again, client K's adapter is read at client K's threshold,
    for every client (and the mean over clients) and for --client K alone."""
    run = tiny_run(tmp_path / "localcal", "fl.algorithm=local", "fl.clients_per_round=3",
                   "eval.client_holdout=0.25", "eval.threshold=calibrated")
    final = _summary(run)["final"]
    thresholds = {k: c["per_modality"]["image_text"].get("threshold")
                  for k, c in final["per_client"].items()}
    # (a client without held-out samples has none; two that differ tell per-client from global)
    assert len({t for t in thresholds.values() if isinstance(t, float)}) >= 2, thresholds
    assert main(["eval", "--run", str(run)]) == 0
    ev = json.loads((run / "eval" / "eval.json").read_text())
    assert ev["per_client"].keys() == final["per_client"].keys()
    for k, theirs in final["per_client"].items():
        for view, m in theirs["per_modality"].items():
            mine = ev["per_client"][k]["per_modality"][view]
            assert mine.get("threshold") == m.get("threshold") == thresholds[k], (k, view)
            assert mine.get("accuracy_calibrated") == m.get("accuracy_calibrated"), (k, view)
    assert ev["accuracy_calibrated"] == final["accuracy_calibrated"]
    assert "same numbers as the run's summary.json" in capsys.readouterr().out
    k = next(k for k, t in thresholds.items() if isinstance(t, float) and t != 0.5)
    out = tmp_path / "one"
    assert main(["eval", "--run", str(run), "--client", k, "--out", str(out)]) == 0
    one = json.loads((out / "eval.json").read_text())
    assert one["per_modality"]["image_text"]["threshold"] == thresholds[k]
    assert one["accuracy_calibrated"] == final["per_client"][k]["accuracy_calibrated"]


def test_eval_run_options_override_the_runs(fedavg_run, tmp_path):
    out = tmp_path / "ev"
    assert main(["eval", "--run", str(fedavg_run), "--views", "image_only", "--max-samples",
                 "8", "--out", str(out)]) == 0
    ev = json.loads((out / "eval.json").read_text())
    assert list(ev["per_modality"]) == ["image_only"] and ev["meta"]["n"] == 8
    assert ev["per_modality"]["image_only"]["n"] == 8
    # another synth test set: the run's adapter on 12 fresh samples (seed 5)
    out2 = tmp_path / "ev2"
    assert main(["eval", "--run", str(fedavg_run), "--test-size", "12", "--seed", "5",
                 "--views", "image_text", "--out", str(out2)]) == 0
    assert json.loads((out2 / "eval.json").read_text())["meta"]["n"] == 12


def test_eval_run_with_adapter_none_is_the_base_model_on_the_runs_test_set(fedavg_run,
                                                                          tmp_path):
    out = tmp_path / "base"
    assert main(["eval", "--run", str(fedavg_run), "--adapter", "none", "--views",
                 "image_text", "--out", str(out)]) == 0
    ev = json.loads((out / "eval.json").read_text())
    assert ev["meta"]["adapter"] == "none" and ev["meta"]["n"] == 16


def test_eval_run_of_a_local_only_run_evaluates_every_client(local_run, tmp_path, capsys):
    assert main(["eval", "--run", str(local_run)]) == 0
    ev = json.loads((local_run / "eval" / "eval.json").read_text())
    final = _summary(local_run)["final"]
    assert set(ev["per_client"]) == set(final["per_client"]) == {"0", "1", "2"}
    assert ev["accuracy"] == final["accuracy"]
    assert ev["accuracy_std"] == final["accuracy_std"]
    assert ev["meta"]["clients"] == [0, 1, 2]
    rows = [json.loads(x) for x in
            (local_run / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert {r["client"] for r in rows} == {0, 1, 2} and len(rows) == 3 * 3 * 16
    assert "mean over 3 clients" in capsys.readouterr().out
    out = tmp_path / "c1"
    assert main(["eval", "--run", str(local_run), "--client", "1", "--out", str(out)]) == 0
    one = json.loads((out / "eval.json").read_text())
    assert one["accuracy"] == final["per_client"]["1"]["accuracy"]
    assert one["meta"]["client"] == 1 and "per_client" not in one


def test_eval_run_errors_are_one_line(tmp_path, fedavg_run, local_run, capsys):
    assert main(["eval", "--run", str(tmp_path / "nope")]) == 2
    assert "no such run folder" in _err_line(capsys)

    (tmp_path / "empty").mkdir()
    assert main(["eval", "--run", str(tmp_path / "empty")]) == 2
    assert "not a fedmllm run folder (no config.yaml)" in _err_line(capsys)

    unfinished = tmp_path / "unfinished"
    shutil.copytree(fedavg_run, unfinished)
    (unfinished / "summary.json").unlink()
    assert main(["eval", "--run", str(unfinished)]) == 2
    err = _err_line(capsys)
    assert "unfinished" in err and f"fedmllm run --resume {unfinished}" in err

    assert main(["eval", "--run", str(fedavg_run), "--client", "0"]) == 2
    assert "one global adapter" in _err_line(capsys)

    assert main(["eval", "--run", str(local_run), "--client", "7"]) == 2
    assert "no adapter for client 7" in _err_line(capsys)

    no_adapter = tmp_path / "no_adapter"
    shutil.copytree(fedavg_run, no_adapter)
    shutil.rmtree(no_adapter / "adapter")
    assert main(["eval", "--run", str(no_adapter)]) == 2
    assert "saved no adapter" in _err_line(capsys)

    assert main(["eval", "--run", str(fedavg_run), "--views", "image_txt"]) == 2
    assert "unknown view 'image_txt'" in _err_line(capsys)


def test_eval_without_run_names_what_is_missing(tmp_path, capsys):
    assert main(["eval", "--dataset", "synth", "--out", str(tmp_path)]) == 2
    assert "--adapter is required" in _err_line(capsys)
    assert main(["eval", "--adapter", "none", "--model", "x", "--out", str(tmp_path)]) == 2
    assert "--dataset is required" in _err_line(capsys)
    assert main(["eval", "--adapter", "none", "--dataset", "synth", "--client", "1",
                 "--out", str(tmp_path)]) == 2
    assert "--client" in _err_line(capsys)


def test_eval_adapter_given_a_run_folder_points_to_run(fedavg_run, tmp_path, capsys):
    assert main(["eval", "--adapter", str(fedavg_run), "--dataset", "synth",
                 "--out", str(tmp_path / "o")]) == 2
    err = _err_line(capsys)
    assert f"--run {fedavg_run}" in err and f"--adapter {fedavg_run / 'adapter'}" in err
