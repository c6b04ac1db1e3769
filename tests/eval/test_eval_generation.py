"""Multiple choice by generation: strict parse -> invalid counted, research numbers beside it;
end-of-turn stopping; left padding (batched == unbatched) for scoring and generation."""

from __future__ import annotations

import importlib
import json

import pytest
import torch

from fedmllm.cli import main
from fedmllm.data.prompts import SYNTH_BINARY_OPTIONS, build_prompt, mc_answer
from fedmllm.data.types import Sample
from fedmllm.eval.evaluate import evaluate, predict, view
from fedmllm.eval.parsing import parse_option
from fedmllm.eval.scoring import decode_answers, generate, stop_token_ids

# the module (the package re-exports the function under the same name)
evaluate_mod = importlib.import_module("fedmllm.eval.evaluate")


def _perturbed_lora(tiny_dir, std: float):
    from fedmllm.model.loading import load_vlm
    from fedmllm.model.lora import wrap_lora

    base, processor = load_vlm(tiny_dir)
    torch.manual_seed(0)  # LoRA-A's random init too: the adapter must not depend on test order
    model = wrap_lora(base, r=4, alpha=8, dropout=0.0)
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, std)
    return model.eval(), processor


@pytest.fixture(scope="module")
def perturbed(tiny_dir):
    """The tiny model with LoRA-B perturbed enough that some answers become unreadable."""
    return _perturbed_lora(tiny_dir, 0.26)


@pytest.fixture
def generate_adapter(tmp_path, perturbed, tiny_dir):
    model, _ = perturbed
    path = tmp_path / "adapter"
    model.save_pretrained(path)
    (path / "fedmllm.json").write_text(json.dumps({"base_model": str(tiny_dir)}))
    return path


def _mixed_samples(n: int = 8) -> list[Sample]:
    """Synth test samples alternating image+text and text only: prompt lengths differ a lot."""
    from fedmllm.data.synth import make_synth

    test = make_synth("binary", 0, n, 0)[1]
    return [view([s], "text_only" if i % 2 else "image_text")[0] for i, s in enumerate(test)]


# ---------------------------------------------------------------- parse -> metrics (no model)


def _fake_samples(labels):
    opts = SYNTH_BINARY_OPTIONS
    return [Sample(id=f"s{i}", task="synth_binary", answer=mc_answer(opts, y), text="t",
                   label=y, options=opts) for i, y in enumerate(labels)]


def test_generate_mode_counts_invalid_and_never_maps_it_to_a_class(monkeypatch):
    texts = ["(B) unsafe", "Based on the image", "A"]
    seen = {}

    def fake_generate(model, processor, prompts, images, max_new_tokens=16, *a, **k):
        seen["max_new_tokens"] = max_new_tokens
        return list(texts)

    monkeypatch.setattr(evaluate_mod, "generate", fake_generate)
    samples = _fake_samples([1, 1, 0])
    res = evaluate(None, None, samples, views=("text_only",), mode="generate",
                   max_new_tokens=5, return_predictions=True)
    assert seen["max_new_tokens"] == 5
    _, pred = res["_predictions"]["text_only"]
    assert pred["parsed"] == [1, None, 0]
    assert pred["research"] == [1, 1, 0]  # the research parser reads "Based" as option B

    m = res["per_modality"]["text_only"]
    assert m is not None and res["accuracy"] == m["accuracy"]
    assert m["invalid"] == 1 and m["invalid_rate"] == pytest.approx(1 / 3)
    assert m["invalid_by_class"] == [0, 1]
    assert m["accuracy"] == pytest.approx(2 / 3)  # the invalid one counts as wrong
    assert m["confusion"] == [[1, 0], [0, 1]]  # ... and is in no confusion cell
    assert m["auroc"] is None  # no probabilities when generating
    # research numbers from the research parse of the same texts: all three "correct"
    assert m["accuracy_research"] == pytest.approx(1.0)
    assert m["auc_hard"] == pytest.approx(1.0)
    assert m["macro_f1_research"] == pytest.approx(1.0)
    assert m["research_parse_differs"] == pytest.approx(1 / 3)
    # strict macro-F1: class 1 has TP=1, FN=1 (the invalid), FP=0 -> 2/3; class 0 -> 1
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3) / 2)


def test_generate_mode_research_failure_ranks_above_class_1(monkeypatch):
    # "I cannot tell" has no capital A-G: the research parser maps it to 2, the strict one to None
    monkeypatch.setattr(evaluate_mod, "generate",
                        lambda *a, **k: ["(A) safe", "i cannot tell", "(B)", "(A)"])
    res = evaluate(None, None, _fake_samples([0, 0, 1, 1]), views=("text_only",),
                   mode="generate")
    from sklearn.metrics import roc_auc_score

    assert res["invalid"] == 1
    assert res["accuracy"] == pytest.approx(0.5)
    assert res["auc_hard"] == pytest.approx(roc_auc_score([0, 0, 1, 1], [0, 2, 1, 0]))


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="mode"):
        evaluate(None, None, _fake_samples([0]), mode="sample")


# ---------------------------------------------------------------- decoding and stopping


def test_decode_cuts_at_the_first_stop_token(tiny_dir):
    from fedmllm.model.loading import load_vlm

    model, processor = load_vlm(tiny_dir)
    tok = processor.tokenizer
    end = tok.convert_tokens_to_ids("<|end|>")
    assert end in stop_token_ids(model, processor)
    # without a generation-config eos the chat template's end-of-turn still stops decoding
    model.generation_config.eos_token_id = None
    tok_eos, tok.eos_token = tok.eos_token, None
    try:
        assert stop_token_ids(model, processor) == [end]
    finally:
        tok.eos_token = tok_eos
    ans = tok("(B) unsafe", add_special_tokens=False).input_ids
    more = tok(" more words", add_special_tokens=False).input_ids
    pad = tok.pad_token_id
    rows = torch.tensor([ans + [end] + more, ans + more + [end], ans + more + [pad]])
    got = decode_answers(tok, rows, [end])
    assert got == ["(B) unsafe", "(B) unsafe more words", "(B) unsafe more words"]
    # a stop id that is an ordinary (non-special) token is cut too
    assert decode_answers(tok, rows[:1], [more[0]]) == ["(B) unsafe"]


def test_generation_stops_at_end_of_turn(tiny_dir):
    from fedmllm.model.loading import load_vlm

    model, processor = load_vlm(tiny_dir)
    samples = _mixed_samples(4)
    prompts = [build_prompt(s, "plain") for s in samples]
    texts = generate(model, processor, prompts, [s.image for s in samples], max_new_tokens=24,
                     batch_size=4)
    for t in texts:
        assert t and "<|end|>" not in t and "<pad>" not in t and "<|assistant|>" not in t
        # the pre-trained tiny model answers "(X) word" and then ends its turn
        assert len(processor.tokenizer(t, add_special_tokens=False).input_ids) < 24


# ---------------------------------------------------------------- left padding


def test_batched_scoring_equals_unbatched(perturbed):
    model, processor = perturbed
    samples = _mixed_samples(8)
    p1 = predict(model, processor, samples, batch_size=1)["probs"]
    p8 = predict(model, processor, samples, batch_size=8)["probs"]
    assert p1.shape == (8, 2)
    assert torch.allclose(p1, p8, atol=1e-5, rtol=0)
    assert (p1[:, 0] - p1[:, 0].mean()).abs().max() > 1e-3  # not a constant answer


def test_batched_generation_equals_unbatched(perturbed):
    model, processor = perturbed
    samples = _mixed_samples(8)
    g1 = predict(model, processor, samples, batch_size=1, mode="generate", max_new_tokens=5)
    g8 = predict(model, processor, samples, batch_size=8, mode="generate", max_new_tokens=5)
    assert g1["texts"] == g8["texts"]
    assert g1["parsed"] == g8["parsed"]


def test_evaluate_reports_progress_once_per_sample_and_view(perturbed):
    from fedmllm.eval import evaluate

    model, processor = perturbed
    samples = _mixed_samples(6)
    calls = []
    evaluate(model, processor, samples, views=("image_text", "text_only"), batch_size=4,
             progress=lambda: calls.append(1))
    assert len(calls) == 6 * 2


# ---------------------------------------------------------------- end to end


def test_eval_cli_generate_mode(generate_adapter, tmp_path, capsys):
    out = tmp_path / "ev"
    n = 16
    assert main(["eval", "--adapter", str(generate_adapter), "--dataset", "synth",
                 "--test-size", str(n), "--mode", "generate", "--max-new-tokens", "8",
                 "--out", str(out)]) == 0
    ev = json.loads((out / "eval.json").read_text())
    assert ev["meta"]["mode"] == "generate"
    for key in ("accuracy", "macro_f1", "auroc", "auc_hard", "invalid_rate", "confusion",
                "accuracy_research", "macro_f1_research"):
        assert key in ev, key
    assert set(ev["per_modality"]) == {"image_text", "image_only", "text_only"}
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * n
    options = list(SYNTH_BINARY_OPTIONS)
    total_invalid = 0
    for name, m in ev["per_modality"].items():
        assert m["n"] == n and m["auroc"] is None
        assert 0.0 <= m["invalid_rate"] <= 1.0
        assert sum(map(sum, m["confusion"])) + m["invalid"] == n
        vr = [r for r in rows if r["modality"] == name]
        assert {"id", "prompt", "text", "prediction", "correct"} <= set(vr[0])
        nulls = [r for r in vr if r["prediction"] is None]
        assert len(nulls) == m["invalid"]
        assert all(not r["correct"] for r in nulls)
        assert sum(r["correct"] for r in vr) / n == pytest.approx(m["accuracy"])
        for r in vr:
            k = parse_option(r["text"], options)
            assert r["prediction"] == (None if k is None else "AB"[k])
            assert "<|end|>" not in r["text"]
        total_invalid += m["invalid"]
    # The perturbed weights make some answers free text (13 of 48 when written; the count
    # depends on the device), so the invalid-answer checks above did see invalid rows.
    assert 0 < total_invalid <= 3 * n
    assert "accuracy_research" in capsys.readouterr().out
