"""Checks that only mean something on a CUDA device: bf16 training and bf16 forwards of the
tiny model against the float32 CPU reference. Marked ``gpu``: skipped without CUDA (conftest.py);
``benchmarks/gpu_check.py`` runs them with the rest of the fast suite in bf16 (docs/gpu.md)."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

pytestmark = pytest.mark.gpu

#: The run overrides of these tests: the GPU, in bf16 (weights from ``model.dtype=auto``).
ON_GPU = ["train.device=cuda", "train.autocast=bf16"]
GPU = "cuda"

#: bf16 against float32: bfloat16 keeps 8 bits of mantissa (2^-9 relative per rounding),
#: accumulated over the tiny model's layers. Its logits span about +-12 (std 2.3); bf16 compute
#: emulated on the CPU moved them by 0.011 on average and 0.18 at most, the answer
#: probabilities by 0.006: the bounds below leave about 3x to 5x room for the GPU's kernels.
LOGIT_MAX, LOGIT_MEAN = 0.5, 0.05
#: answer-option probabilities (what evaluation scores) may move this much in absolute terms;
#: the answer itself must not change where the float32 margin exceeds twice this.
PROB_TOL = 0.03


def _bundle_and_samples(*extra):
    from fedmllm.config import load_config
    from fedmllm.data import build_federated_data
    from fedmllm.engine.bundle import build_bundle
    from fedmllm.engine.client import make_trainer
    from fedmllm.engine.factory import plan_run
    from fedmllm.runtime.session import encode_samples

    cfg = load_config(None, ["model.preset=tiny", "lora.dropout=0.0", "fl.num_clients=2",
                             "data.train_size=40", "data.test_size=16", *ON_GPU, *extra])
    plan = plan_run(cfg)
    bundle = build_bundle(plan)
    data = build_federated_data(cfg.data, cfg.fl.num_clients, cfg.seed)
    items = encode_samples(bundle.processor, data.test[:8], "plain", cfg.train.max_seq_len)
    return bundle, make_trainer(cfg, plan, bundle), data, items


def test_bf16_autocast_training_on_cuda_lowers_a_finite_loss(tiny_dir):
    """The engine's client trainer on the GPU (bf16 weights, bf16 autocast, AdamW, clipping):
    30 steps on 8 samples lower their loss by at least 10 %, every loss and weight finite."""
    bundle, trainer, _, items = _bundle_and_samples()
    assert bundle.device.type == GPU and bundle.autocast == torch.bfloat16

    def loss_at(state):  # one step's loss is measured before that step changes anything
        fit = trainer.fit(state, {}, itertools.repeat(items), [1e-3], 0, num_examples=8)
        return fit.update.metrics["train_loss"]

    start = bundle.adapter.get()
    trained = trainer.fit(start, {}, itertools.repeat(items), [5e-3] * 30, 0,
                          num_examples=8).update
    before, after = loss_at(start), loss_at(trained.state)
    assert math.isfinite(before) and math.isfinite(after)
    assert math.isfinite(trained.metrics["train_loss"])
    assert all(torch.isfinite(t).all() for t in trained.state.values())
    assert after < 0.9 * before, (before, after)


def test_bf16_forward_matches_the_float32_cpu_reference(tiny_dir):
    """The tiny model with a LoRA adapter (B drawn at std 0.26, so that the answers differ from
    sample to sample), copied to the GPU in bf16 weights (as ``model.dtype=auto`` runs it) and
    in float32 weights, both under bf16 autocast: its logits and answer probabilities are the
    float32 CPU ones within bf16's tolerance (:data:`LOGIT_MAX`, :data:`LOGIT_MEAN`,
    :data:`PROB_TOL`), and it picks the same answer wherever the CPU's margin exceeds twice
    :data:`PROB_TOL`."""
    import copy

    from fedmllm.config import load_config
    from fedmllm.data import build_federated_data
    from fedmllm.eval.evaluate import predict
    from fedmllm.model.collate import collate
    from fedmllm.model.loading import load_vlm
    from fedmllm.model.lora import wrap_lora
    from fedmllm.runtime.session import encode_samples

    cfg = load_config(None, ["model.preset=tiny", "data.train_size=40", "data.test_size=32"])
    samples = build_federated_data(cfg.data, 2, 0).test[:16]
    base, processor = load_vlm(tiny_dir)
    torch.manual_seed(0)
    ref = wrap_lora(base, r=4, alpha=8, dropout=0.0)
    with torch.no_grad():
        for n, p in ref.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.26)
    ref.eval()
    batch = collate(encode_samples(processor, samples, "plain", 256),
                    processor.tokenizer.pad_token_id)
    keep = batch["attention_mask"].bool()
    with torch.no_grad():
        want = ref(**batch).logits.float()[keep]
    want_p = predict(ref, processor, samples, batch_size=16)["probs"]
    margin = (want_p[:, 0] - want_p[:, 1]).abs()
    sure = margin > 2 * PROB_TOL
    assert sure.any()  # the comparison of answers below compares something

    dev = torch.device(GPU)
    for dtype in (torch.bfloat16, torch.float32):
        model = copy.deepcopy(ref).to(device=dev, dtype=dtype)
        on_dev = {k: v.to(dev) for k, v in batch.items()}
        with torch.no_grad(), torch.autocast(GPU, dtype=torch.bfloat16):
            got = model(**on_dev).logits.float().cpu()[keep]
            got_p = predict(model, processor, samples, batch_size=16, device=dev,
                            dtype=dtype)["probs"].float().cpu()
        assert torch.isfinite(got).all()
        diff = (got - want).abs()
        assert diff.max() <= LOGIT_MAX and diff.mean() <= LOGIT_MEAN, (dtype, diff.max())
        assert (got_p - want_p).abs().max() <= PROB_TOL, dtype
        assert torch.equal(got_p[sure].argmax(1), want_p[sure].argmax(1)), dtype


def test_tiny_run_in_bf16_on_cuda_finishes_with_finite_losses(tmp_path, tiny_dir):
    """Two federated rounds of the tiny configuration on the GPU in bf16 write a finished run:
    finite train losses every round, accuracies in [0, 1] for every modality view."""
    from helpers.tiny_runs import tiny_run

    out = tiny_run(tmp_path / "run", *ON_GPU)
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(math.isfinite(r["train_loss_mean"]) for r in rows)
    per_modality = summary["final"]["per_modality"]
    assert set(per_modality) == {"image_text", "image_only", "text_only"}
    assert all(0.0 <= v["accuracy"] <= 1.0 for v in per_modality.values())
