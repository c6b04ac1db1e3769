"""The model card (``README.md``) beside every saved adapter: written once the run's summary is
known, with the algorithm, data, LoRA, final metrics, communication, a loading snippet that
runs, and the citations (YOCO's for one-shot runs); never peft's empty template."""

from __future__ import annotations

import json
import re

import pytest
from helpers.tiny_runs import tiny_run

from fedmllm.errors import OutputError
from fedmllm.report.modelcard import adapter_card, write_model_card

TEMPLATE = "[More Information Needed]"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_dir):
    root = tmp_path_factory.mktemp("runs")
    return {
        "fedprox": tiny_run(root / "fedprox", "fl.algorithm=fedprox", "data.scenario=missing",
                            "data.missing_rate=0.4"),
        "yoco": tiny_run(root / "yoco", "fl.algorithm=yoco", "fl.yoco.local_epochs=1",
                         "eval.views=[image_text]"),
        "local": tiny_run(root / "local", "fl.algorithm=local", "fl.rounds=1",
                          "eval.views=[image_text]"),
    }


def _summary(run) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_card_of_a_multi_round_run(runs):
    run = runs["fedprox"]
    card = (run / "adapter" / "README.md").read_text()
    assert TEMPLATE not in card
    final = _summary(run)["final"]
    assert "fedprox" in card
    assert f"{final['per_modality']['image_text']['accuracy']:.4f}" in card
    assert f"{final['per_modality']['text_only']['auroc']:.4f}" in card
    for needle in ("arXiv:2411.14717", "Xu, Binqian", "fedmllm-preset:tiny",
                   "| Rounds | 2 |", "3 total, 2 per round", "prox (prox_mu=0.01)",
                   "missing (missing rate β = 0.4)", "Dirichlet α = 0.5", "| Rank r | 8 |",
                   "| Alpha | 16 |", "q_proj, k_proj, v_proj, o_proj", "Uploaded",
                   f"fedmllm eval --run {run}", "PeftModel.from_pretrained"):
        assert needle in card, needle
    assert "You Only Communicate Once" not in card  # YOCO is cited for one-shot runs only
    totals = _summary(run)["totals"]
    assert f"{totals['bytes_uploaded']:,} bytes" in card


def test_card_of_a_one_shot_run_cites_yoco(runs):
    card = (runs["yoco"] / "adapter" / "README.md").read_text()
    assert TEMPLATE not in card
    assert "You Only Communicate Once" in card and "NeurIPS" in card
    assert "arXiv:2411.14717" in card
    assert "one-shot (yoco), method yoco" in card
    acc = _summary(runs["yoco"])["final"]["per_modality"]["image_text"]["accuracy"]
    assert f"| image_text | {acc:.4f} |" in card


def test_every_client_adapter_of_a_local_only_run_has_its_card(runs):
    run = runs["local"]
    per_client = _summary(run)["final"]["per_client"]
    for k, metrics in per_client.items():
        card = (run / "adapters" / f"client_{k}" / "README.md").read_text()
        assert TEMPLATE not in card
        assert f"Client {k}'s" in card
        acc = metrics["per_modality"]["image_text"]["accuracy"]
        assert f"| image_text | {acc:.4f} |" in card
        assert f"fedmllm eval --run {run}` `--client {k}`" in card


def test_the_loading_snippet_runs(runs):
    card = (runs["fedprox"] / "adapter" / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", card, re.DOTALL).group(1)
    assert len(code.strip().splitlines()) <= 6
    scope: dict = {}
    exec(code, scope)  # noqa: S102 - the card's own snippet
    assert type(scope["model"]).__name__ == "PeftModel"


def test_adapter_card_before_the_summary_and_write_model_card_errors(tmp_path):
    card = adapter_card({"base_model": "/cache/tiny-pt-x", "base_model_name":
                         "fedmllm-preset:tiny-init", "algorithm": "fedavg"}, tmp_path)
    assert TEMPLATE not in card and "fedavg" in card
    assert 'ensure_tiny("tiny", False)' in card  # the random-init preset
    hub = adapter_card({"base_model": "org/vlm", "algorithm": "fedavg"}, tmp_path)
    assert "base_model: org/vlm" in hub and 'base = "org/vlm"' in hub
    with pytest.raises(OutputError, match="summary.json"):
        write_model_card(tmp_path)
    assert write_model_card(tmp_path, on_error="warn") == []
