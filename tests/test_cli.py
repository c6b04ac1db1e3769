"""The command line: help everywhere, clean one-line errors, prepare/stats/eval end to end."""

import json
import subprocess
import sys

import pytest
import torch
from helpers.fixtures_data import BAD_IMAGES, bad_image, make_hateful

from fedmllm.cli import build_parser, main

COMMANDS = [[], ["run"], ["config"], ["config", "show"], ["model"], ["model", "build"],
            ["prepare"], ["data"], ["data", "stats"], ["eval"], ["flower"], ["flower", "local"],
            ["flower", "certs"], ["flower", "node-key"]]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_every_command_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    assert "usage: fedmllm" in capsys.readouterr().out


def test_top_level_help_lists_commands():
    text = build_parser().format_help()
    for name in ("run", "config", "prepare", "data", "eval", "model"):
        assert name in text


def test_config_show_prints_defaults(capsys):
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "algorithm: fedavg" in out and "preset: tiny" in out


def test_bad_config_is_one_line_exit_2(capsys):
    assert main(["run", "fl.roundz=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "fedmllm: error: unknown config key 'fl.roundz'; did you mean 'fl.rounds'?"
    assert main(["config", "show", "fl.rounds=many"]) == 2
    assert "fl.rounds" in capsys.readouterr().err


@pytest.mark.processes
def test_console_script_entry_point():
    r = subprocess.run([sys.executable, "-m", "fedmllm.cli", "config", "show", "seed=5"],
                       capture_output=True, text=True, check=True)
    assert "seed: 5" in r.stdout


def test_prepare_and_stats_on_synth(tmp_path, capsys):
    out = tmp_path / "prep"
    assert main(["prepare", "--dataset", "synth", "--scenario", "missing", "--missing-rate",
                 "0.4", "--clients", "4", "--train-size", "80", "--test-size", "20",
                 "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert {"client_0.json", "client_3.json", "test.json", "manifest.json"} <= set(names)
    rec = json.loads((out / "client_0.json").read_text())[0]
    assert rec["conversations"][0]["role"] == "user"
    assert main(["data", "stats", str(out)]) == 0
    assert (out / "data_stats.png").is_file()
    assert "client" in capsys.readouterr().out
    # existing output: one-line error, exit 2, folder untouched
    before = sorted(p.name for p in out.iterdir())
    assert main(["prepare", "--dataset", "synth", "--out", str(out)]) == 2
    assert sorted(p.name for p in out.iterdir()) == before


@pytest.mark.parametrize("kind", BAD_IMAGES)
def test_prepare_bad_image_is_one_line_exit_2_or_skipped(tmp_path, capsys, kind):
    """The bad-input corpus through ``fedmllm prepare``: one line naming the file and the
    sample and the flag that skips it, nothing written; ``--skip-bad`` counts it."""
    root = make_hateful(tmp_path / "hm", n_train=8, n_test=4)
    path = bad_image(root / "img" / "10005.png", kind)
    out = tmp_path / "prep"
    argv = ["prepare", "--dataset", "hateful_memes", "--data-dir", str(root), "--clients", "2",
            "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"fedmllm: error: {path}, sample 10005: ")
    assert err.rstrip().endswith("(skip it with --skip-bad)") and not out.exists()
    assert main([*argv, "--skip-bad"]) == 0
    skipped = json.loads((out / "manifest.json").read_text())["skipped"]
    assert skipped["count"] == 1 and skipped["items"][0]["file"] == str(path)


@pytest.fixture
def saved_adapter(tmp_path, tiny_dir):
    from fedmllm.model.loading import load_vlm
    from fedmllm.model.lora import wrap_lora

    base, _ = load_vlm(tiny_dir)
    torch.manual_seed(0)  # LoRA-A init and the perturbation below: independent of test order
    model = wrap_lora(base, r=4, alpha=8, dropout=0.0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    path = tmp_path / "adapter"
    model.save_pretrained(path)
    (path / "fedmllm.json").write_text(json.dumps({"base_model": str(tiny_dir)}))
    return path


def test_eval_saved_adapter_writes_every_field(saved_adapter, tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(["eval", "--adapter", str(saved_adapter), "--dataset", "synth",
                 "--test-size", "24", "--out", str(out)]) == 0
    ev = json.loads((out / "eval.json").read_text())
    for key in ("accuracy", "macro_f1", "auroc", "auc_hard", "invalid_rate", "confusion"):
        assert key in ev, key
    assert set(ev["per_modality"]) == {"image_text", "image_only", "text_only"}
    for m in ev["per_modality"].values():
        assert 0.0 <= m["accuracy"] <= 1.0 and m["n"] == 24
        assert sum(map(sum, m["confusion"])) + m["invalid"] == 24
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 24
    r = rows[0]
    assert {"id", "modality", "prompt", "prediction", "probabilities", "correct"} <= set(r)
    assert abs(sum(r["probabilities"]) - 1) < 1e-4
    acc = sum(x["correct"] for x in rows if x["modality"] == "image_text") / 24
    assert acc == pytest.approx(ev["per_modality"]["image_text"]["accuracy"])
    assert "image_only" in capsys.readouterr().out


def test_eval_base_model_and_vqa(tmp_path, tiny_dir):
    out = tmp_path / "ev"
    assert main(["eval", "--adapter", "none", "--model", str(tiny_dir), "--dataset", "synth",
                 "--task", "vqa", "--test-size", "8", "--views", "image_text",
                 "--out", str(out)]) == 0
    ev = json.loads((out / "eval.json").read_text())
    for key in ("closed_accuracy", "open_exact", "open_recall", "overall"):
        assert key in ev, key


def test_eval_errors_are_one_line(tmp_path, capsys):
    assert main(["eval", "--adapter", str(tmp_path), "--model", str(tmp_path), "--dataset",
                 "synth", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_eval_broken_adapter_metadata_is_one_line(tmp_path, capsys):
    (tmp_path / "fedmllm.json").write_text("{not json")
    assert main(["eval", "--adapter", str(tmp_path), "--dataset", "synth",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fedmllm.json: not a JSON object" in err


def test_eval_checks_dataset_images_first(tmp_path, capsys):
    root = make_hateful(tmp_path / "hm", n_train=2, n_test=4)
    (root / "img/30002.png").unlink()  # in test_seen, what --split test means here
    out = tmp_path / "ev"
    assert main(["eval", "--adapter", "none", "--model", str(tmp_path / "no-model"),
                 "--dataset", "hateful_memes", "--data-dir", str(root), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "30002.png, sample 30002: image not found" in err
    assert not out.exists()


def test_data_stats_bad_label_is_one_line(tmp_path, capsys):
    out = tmp_path / "prep"
    assert main(["prepare", "--dataset", "synth", "--clients", "2", "--train-size", "40",
                 "--test-size", "8", "--out", str(out)]) == 0
    path = out / "client_0.json"
    recs = json.loads(path.read_text())
    recs[0]["fedmllm"]["label"] = 7
    path.write_text(json.dumps(recs))
    capsys.readouterr()
    assert main(["data", "stats", str(out), "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "client_0.json, item 0" in err and "'fedmllm.label'" in err


def test_run_model_flag_loads_a_local_folder(tmp_path, tiny_dir, capsys):
    out = tmp_path / "out"
    assert main(["run", "--model", str(tiny_dir), "fl.algorithm=zeroshot", "data.train_size=40",
                 "data.test_size=8", "eval.views=[image_text]", f"output.dir={out}"]) == 0
    assert json.loads((out / "adapter" / "fedmllm.json").read_text())["base_model"] == str(tiny_dir)
    assert f"model   {tiny_dir};" in capsys.readouterr().out  # the run's header names it
    assert main(["run", "--model", str(tmp_path), f"output.dir={out}"]) == 2
    assert "not a model folder" in capsys.readouterr().err


@pytest.mark.processes
def test_misspelt_algorithm_fails_before_anything_loads(tmp_path):
    """One line with a suggestion, exit 2, no output folder, and no model library imported."""
    code = ("import sys; from fedmllm.cli import main; "
            f"rc = main(['run', 'fl.algorithm=fedadm', 'output.dir={tmp_path / 'out'}']); "
            "print(rc, 'transformers' in sys.modules, 'peft' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=tmp_path, check=False)
    assert r.stdout.split() == ["2", "False", "False"]
    assert r.stderr.count("\n") == 1 and "did you mean 'fedadam'" in r.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def test_config_show_runs_the_checks_and_prints_what_auto_resolved(capsys):
    assert main(["config", "show", "fl.algorithm=fedprox"]) == 0
    out = capsys.readouterr().out
    assert "objective: auto" in out and "# resolved: fl.client.objective = prox" in out
    assert main(["config", "show", "fl.algorithm=fedprox", "fl.client.objective=ce"]) == 2
    assert "fl.client.objective" in capsys.readouterr().err


@pytest.mark.processes
def test_run_help_shows_resume_and_overwrite():
    text = subprocess.run([sys.executable, "-m", "fedmllm.cli", "run", "--help"],
                          capture_output=True, text=True, check=True).stdout
    assert "--resume DIR" in text and "--overwrite" in text


def test_resume_and_output_folder_errors_are_one_line(tmp_path, capsys):
    assert main(["run", "--resume", str(tmp_path / "nope")]) == 2
    assert "no config.yaml" in capsys.readouterr().err
    a_file = tmp_path / "f"
    a_file.write_text("x")
    assert main(["run", f"output.dir={a_file}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(a_file) in err and "not a folder" in err
    assert main(["run", "--resume", str(tmp_path), "--overwrite"]) == 2
    assert "--resume" in capsys.readouterr().err


def test_disk_full_while_writing_is_one_line_and_resumable(tmp_path, tiny_dir, capsys,
                                                             monkeypatch):
    import errno

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "x"))

    monkeypatch.setattr("safetensors.torch.save_file", full)  # the checkpoint's tensors
    out = tmp_path / "out"
    rc = main(["run", "model.preset=tiny", "fl.rounds=1", "fl.num_clients=2", "fl.local_steps=1",
               "data.train_size=16", "data.test_size=4", "eval.views=[image_text]",
               "output.progress=false", f"output.dir={out}"])
    err = capsys.readouterr().err
    assert rc == 2 and "No space left on device" in err and "Traceback" not in err
    assert f"fedmllm run --resume {out}" in err
    assert json.loads((out / "run.json").read_text())["status"] == "failed"
    assert not (out / "summary.json").exists()


def test_overrides_may_follow_options(tmp_path, capsys):
    exp = tmp_path / "exp.toml"
    exp.write_text("[fl]\nrounds = 7\n")
    assert main(["config", "show", "seed=3", "--config", str(exp), "fl.local_steps=5"]) == 0
    out = capsys.readouterr().out
    assert "seed: 3" in out and "local_steps: 5" in out and "rounds: 7" in out
    with pytest.raises(SystemExit) as e:
        main(["config", "show", "--bogus"])
    assert e.value.code == 2


def test_ctrl_c_marks_the_run_interrupted_and_says_how_to_resume(tmp_path, tiny_dir, capsys,
                                                                 monkeypatch):
    from fedmllm.runtime.simulation import MultiRoundRun

    def interrupted(self, resume=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(MultiRoundRun, "run", interrupted)
    out = tmp_path / "out"
    rc = main(["run", "model.preset=tiny", "fl.num_clients=2", "data.train_size=16",
               "data.test_size=4", "output.progress=false", f"output.dir={out}"])
    assert rc == 130
    assert f"continue with: fedmllm run --resume {out}" in capsys.readouterr().err
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"


def test_flower_certs_and_node_keys_are_made_offline(tmp_path, capsys):
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key

    certs = tmp_path / "certs"
    assert main(["flower", "certs", "--out", str(certs), "--host", "10.0.0.5",
                 "--host", "link.example.org"]) == 0
    cert = x509.load_pem_x509_certificate((certs / "server.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {"10.0.0.5"}
    assert sans.get_values_for_type(x509.DNSName) == ["link.example.org"]
    assert (certs / "server.key").stat().st_mode & 0o077 == 0
    assert main(["flower", "certs", "--out", str(certs), "--host", "x"]) == 2  # not empty
    assert main(["flower", "node-key", "--out", str(tmp_path / "keys"), "--name", "site-0"]) == 0
    load_ssh_public_key((tmp_path / "keys" / "site-0.pub").read_bytes())
    assert "flwr supernode register" in capsys.readouterr().out


@pytest.mark.processes
def test_verbose_and_quiet_anywhere_and_python_dash_m(tmp_path):
    r = subprocess.run([sys.executable, "-m", "fedmllm", "config", "show", "-v", "seed=4"],
                       capture_output=True, text=True, check=True)
    assert "seed: 4" in r.stdout
    r = subprocess.run([sys.executable, "-m", "fedmllm", "-q", "config", "show", "--verbose"],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 2 and "exclude each other" in r.stderr


def test_a_run_prints_a_short_header_and_a_summary_table(tmp_path, tiny_dir, capsys):
    out = tmp_path / "out"
    assert main(["run", "model.preset=tiny", "fl.rounds=1", "fl.num_clients=2",
                 "fl.local_steps=1", "data.train_size=16", "data.test_size=8",
                 "output.progress=false", f"output.dir={out}"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].startswith("fedmllm run — starting in") and len(lines) < 25
    assert "  fl      fedavg, client objective ce" in text
    assert "fl.clients_per_round = 2: there are only 2 clients" in text
    assert "yoco:" not in text and "gamma_max" not in text  # no dump of the whole tree
    assert "accuracy" in text and "macro-F1" in text and "image_only" in text
    out2 = tmp_path / "quiet"
    assert main(["run", "-q", "model.preset=tiny", "fl.rounds=1", "fl.num_clients=2",
                 "fl.local_steps=1", "data.train_size=16", "data.test_size=8",
                 f"output.dir={out2}"]) == 0
    quiet = capsys.readouterr().out.splitlines()
    assert len(quiet) == 2 and quiet[0].startswith("final test accuracy")


def test_progress_in_a_log_is_a_line_at_least_every_few_seconds():
    """Without a terminal there is no bar, but a heartbeat line while work goes on."""
    import io
    import time

    from rich.console import Console

    from fedmllm.report.console import RoundProgress

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=100)
    with RoundProgress(console, 4, True, heartbeat=0.5) as progress:
        progress.client_done()
        time.sleep(2.2)
    lines = [x for x in buf.getvalue().splitlines() if x.startswith("...")]
    assert 2 <= len(lines) <= 4 and lines[0].startswith("... 1/4 client updates")
    buf2 = io.StringIO()
    with RoundProgress(Console(file=buf2, force_terminal=False), 4, False, heartbeat=0.5):
        time.sleep(1.2)
    assert buf2.getvalue() == ""
    buf3 = io.StringIO()  # nested (the evaluation inside a round): only the outer one speaks
    console3 = Console(file=buf3, force_terminal=False, width=100)
    with RoundProgress(console3, 2, True, heartbeat=0.5) as outer:
        with RoundProgress(console3, 9, True, heartbeat=0.5, what="test samples scored"):
            time.sleep(1.2)
        outer.client_done()
    assert "test samples" not in buf3.getvalue() and "client updates" in buf3.getvalue()
