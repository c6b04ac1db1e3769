"""QLoRA on the CPU: bitsandbytes' CPU backend (0.50+) loads the frozen base 4-bit (NF4, double
quantization) or 8-bit (LLM.int8) and the LoRA adapters train on it through the real
federated path (local training, aggregation, evaluation, the adapter saved)."""

import math
import os

import pytest
import torch

from fedmllm.config import load_config
from fedmllm.engine.factory import plan_run
from fedmllm.model.loading import quantization_problem

pytestmark = pytest.mark.slow

RUN = ["train.device=cpu", "fl.rounds=2", "fl.num_clients=2", "fl.clients_per_round=2",
       "fl.local_steps=2", "data.train_size=16", "data.test_size=8", "eval.every=1",
       "eval.views=[image_text]", "train.batch_size=4", "lora.dropout=0",
       "output.progress=false"]


def _grads(bundle, batch) -> dict[str, torch.Tensor]:
    model = bundle.model
    model.train()
    model.zero_grad()
    model(**batch).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("mode", ["4bit", "8bit"])
def test_qlora_trains_on_the_cpu(mode, tmp_path):
    from safetensors.torch import load_file

    from fedmllm.engine.bundle import build_bundle
    from fedmllm.runtime import run_experiment

    # imported here, not at collection (importing bitsandbytes takes seconds), and before the
    # tiny model is built (no tiny_dir fixture): a machine without it skips at once
    # (make test installs it beside the venv and sets FEDMLLM_TEST_QLORA=1: there a missing
    # bitsandbytes is a failure, not a skip)
    if os.environ.get("FEDMLLM_TEST_QLORA") == "1":
        import bitsandbytes as bnb
    else:
        bnb = pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes: pip "
                                  "install 'fedmllm[qlora]'")
    if problem := quantization_problem(mode, "cpu"):  # a release without the CPU backend
        pytest.skip(problem)
    quantized = {"4bit": bnb.nn.Linear4bit, "8bit": bnb.nn.Linear8bitLt}[mode]
    cfg = load_config(None, [*RUN, f"model.quantization={mode}", f"output.dir={tmp_path}"])
    bundle = build_bundle(plan_run(cfg))
    targets = [m for m in bundle.model.modules() if hasattr(m, "lora_A")]
    assert targets and all(isinstance(m.base_layer, quantized) for m in targets)
    assert bundle.device.type == "cpu"
    if mode == "4bit":  # NF4, double quantization, float32 compute on the CPU
        state = targets[0].base_layer.weight.quant_state
        assert state.quant_type == "nf4" and state.nested
        assert targets[0].base_layer.compute_dtype == torch.float32
    initial = {k: v.clone() for k, v in bundle.adapter.get().items()}

    # an evaluation pass (eval mode, no gradients) leaves the training gradients as they were:
    # bitsandbytes would otherwise repack 4-bit weights into a CPU layout without a backward
    ids = torch.randint(5, 60, (2, 10), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "labels": ids}
    for k, p in bundle.adapter.params.items():  # non-zero B: every LoRA A gets a gradient
        if "lora_B" in k:
            torch.nn.init.normal_(p, std=0.1)
    before = _grads(bundle, batch)
    bundle.model.eval()
    with torch.no_grad():
        bundle.model(input_ids=ids)
    after = _grads(bundle, batch)
    assert before.keys() == after.keys() and len(before) == len(initial)
    for k in before:
        torch.testing.assert_close(after[k], before[k], rtol=1e-5, atol=1e-7)
    del bundle

    result = run_experiment(cfg)
    losses = [r["train_loss_mean"] for r in result.rows]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert all(r["eval"]["per_modality"]["image_text"]["n"] == 8 for r in result.rows)
    saved = load_file(result.out_dir / "adapter" / "adapter_model.safetensors")
    assert len(saved) == len(initial)
    changed = [k for k in initial if not torch.equal(saved[k].float(), initial[k].float())]
    assert len(changed) == len(initial)  # every LoRA A and B moved off its start
    assert all(torch.isfinite(v).all() for v in saved.values())

