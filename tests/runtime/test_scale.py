"""Scaling: training data encoded per batch (same tensors, same adapter as encoding up front,
nothing encoded before a client trains), gradient checkpointing, the GPU-only options refused
on a CPU machine."""

from __future__ import annotations

import importlib

import pytest
import torch
from helpers import ROOT

from fedmllm.config import load_config
from fedmllm.engine.bundle import build_bundle
from fedmllm.engine.client import make_trainer, train_round
from fedmllm.engine.factory import plan_run
from fedmllm.model.collate import EncodedSamples, collate
from fedmllm.runtime import build_driver
from fedmllm.runtime.session import encode_samples


def tiny_cfg(*extra):
    return load_config(None, [
        "model.preset=tiny", "fl.num_clients=3", "fl.clients_per_round=2", "fl.local_steps=3",
        "data.train_size=60", "data.test_size=8", "data.scenario=missing",
        "lora.dropout=0.1", "train.batch_size=4", "output.progress=false", *extra])


@pytest.fixture(scope="module")
def setup(tiny_dir):
    from fedmllm.data import build_federated_data

    cfg = tiny_cfg()
    plan = plan_run(cfg)
    bundle = build_bundle(plan)
    data = build_federated_data(cfg.data, cfg.fl.num_clients, cfg.seed)
    return cfg, plan, bundle, data


def test_per_batch_encoding_gives_the_tensors_of_up_front_encoding(setup):
    cfg, _, b, data = setup
    samples = data.clients[0]  # image+text, image-only and text-only samples (scenario missing)
    assert len({s.modality for s in samples}) > 1
    eager = encode_samples(b.processor, samples, "plain", cfg.train.max_seq_len)
    lazy = EncodedSamples(b.processor, samples, "plain", cfg.train.max_seq_len)
    assert len(lazy) == len(eager)
    for i, e in enumerate(eager):
        got = lazy[i]
        assert torch.equal(got.input_ids, e.input_ids) and torch.equal(got.labels, e.labels)
        assert got.prompt_len == e.prompt_len and got.vision.keys() == e.vision.keys()
        assert all(torch.equal(got.vision[k], e.vision[k]) for k in e.vision)
    pad = b.processor.tokenizer.pad_token_id
    order = [5, 0, 3, 1]
    want = collate([eager[i] for i in order], pad)
    got = collate(lazy.subset(order)[:], pad)
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def test_a_client_trained_on_per_batch_encoding_ends_with_the_same_adapter(setup):
    """The same local run (batches, dropout, 3 AdamW steps) on samples encoded up front and
    encoded per batch: the adapters are equal bit for bit."""
    cfg, plan, b, data = setup
    trainer = make_trainer(cfg, plan, b)
    start = b.adapter.get()
    samples = data.clients[1]
    runs = []
    for items in (encode_samples(b.processor, samples, "plain", cfg.train.max_seq_len),
                  EncodedSamples(b.processor, samples, "plain", cfg.train.max_seq_len)):
        fit = train_round(trainer, cfg, items, 1, 2, 5e-3, start, {})
        runs.append(fit.update)
    eager, lazy = runs
    assert eager.metrics == lazy.metrics
    assert any(not torch.equal(eager.state[k], start[k]) for k in start)  # it trained
    assert all(torch.equal(eager.state[k], lazy.state[k]) for k in eager.state)


def test_a_run_encodes_only_the_batches_it_trains(setup, tmp_path, monkeypatch):
    """Set-up encodes no training sample; a client's local run encodes exactly its batches."""
    cfg, _, b, data = setup
    collate_mod = importlib.import_module("fedmllm.model.collate")
    calls = []
    real = collate_mod.encode_sample
    monkeypatch.setattr(collate_mod, "encode_sample",
                        lambda *a, **k: calls.append(k.get("sample_id")) or real(*a, **k))
    run = build_driver(tiny_cfg(f"output.dir={tmp_path}"), bundle=b, data=data)
    assert calls == []
    k = max(range(cfg.fl.num_clients), key=lambda c: len(data.clients[c]))
    assert len(data.clients[k]) >= cfg.fl.local_steps * cfg.train.batch_size
    run.train_client(k, 1, 5e-3, {})
    assert len(calls) == cfg.fl.local_steps * cfg.train.batch_size  # 3 batches of 4
    assert set(calls) <= {s.id for s in data.clients[k]}



def _loss_and_grads(b, batch, seed):
    b.model.train()
    b.model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the LoRA dropout draws
    loss = b.model(**batch).loss
    loss.backward()
    grads = {k: p.grad.clone() for k, p in b.adapter.params.items()}
    b.model.eval()
    return loss.detach(), grads


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(setup):
    """A training step with ``train.gradient_checkpointing=true`` (decoder layers recomputed in
    the backward pass, LoRA dropout on) has the loss and LoRA gradients of the plain step; the
    layers really are run twice."""
    from fedmllm.model.loading import language_model

    _, _, plain, data = setup
    ckpt = build_bundle(plan_run(tiny_cfg("train.gradient_checkpointing=true")))
    ckpt.adapter.set(plain.adapter.get())
    items = encode_samples(plain.processor, data.clients[0][:4], "plain", 256)
    batch = collate(items, plain.processor.tokenizer.pad_token_id)
    mlp = language_model(ckpt.model).layers[0].mlp  # inside the checkpointed forward
    runs = []
    handle = mlp.register_forward_pre_hook(lambda *_: runs.append(1))  # (recomputation
    # stops once it has what the backward needs: a pre-hook sees it start)
    try:
        loss_c, grads_c = _loss_and_grads(ckpt, batch, seed=7)
    finally:
        handle.remove()
    loss_p, grads_p = _loss_and_grads(plain, batch, seed=7)
    assert len(runs) == 2  # forward, then recomputed in the backward pass
    torch.testing.assert_close(loss_c, loss_p, rtol=0, atol=1e-6)
    assert grads_c.keys() == grads_p.keys()
    for k in grads_p:
        torch.testing.assert_close(grads_c[k], grads_p[k], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(("overrides", "bnb", "words"), [
    (["model.quantization=4bit", "train.device=cpu"], None,
     ("model.quantization: 4bit needs bitsandbytes, which is not installed: pip install "
      "'fedmllm[qlora]' (on the CPU: bitsandbytes>=0.50)")),
    (["model.quantization=8bit", "train.device=cpu"], (0, 45),
     "model.quantization: 8bit on the CPU needs bitsandbytes>=0.50 (installed: 0.45)"),
    (["train.autocast=bf16", "train.device=cpu"], None,
     "train.autocast: bf16 needs a CUDA device"),
])
def test_cpu_options_it_cannot_run_are_one_line_errors(overrides, bnb, words, capsys,
                                                        monkeypatch):
    """QLoRA on the CPU needs a bitsandbytes with the CPU backend (the installed release is
    faked here); bf16 autocast needs CUDA."""
    from fedmllm.cli import main
    from fedmllm.config import ConfigError
    from fedmllm.model import loading

    monkeypatch.setattr(loading, "_bnb_version", lambda: bnb)
    with pytest.raises(ConfigError) as e:
        plan_run(load_config(None, overrides))
    assert str(e.value).startswith(words)
    assert main(["run", *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"fedmllm: error: {words}") and "\n" not in err


def test_qlora_is_accepted_on_the_cpu_with_a_recent_bitsandbytes(monkeypatch):
    from fedmllm.model import loading

    monkeypatch.setattr(loading, "_bnb_version", lambda: (0, 50))
    for mode in ("4bit", "8bit"):
        plan_run(load_config(None, [f"model.quantization={mode}", "train.device=cpu"]))
    assert loading.quantization_problem("4bit", "mps").startswith(
        "model.quantization: 4bit needs a CUDA GPU or the CPU (bitsandbytes)")
    assert loading.quantization_compute_dtype(torch.device("cpu"), torch.bfloat16) == torch.float32


def test_quantization_without_bitsandbytes_names_the_extra(monkeypatch):
    """On a CUDA machine without bitsandbytes (CUDA faked here) the error names the package
    and the extra that installs it; a PiSSA start is refused with quantization."""
    import importlib.util

    from fedmllm.config import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(ConfigError, match=r"^model.quantization: 4bit needs bitsandbytes, "
                       r"which is not installed: pip install 'fedmllm\[qlora\]'$"):
        plan_run(load_config(None, ["model.quantization=4bit"]))
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(ConfigError, match="cannot start from fl.yoco.init = pissa"):
        plan_run(load_config(None, ["model.quantization=4bit", "fl.algorithm=yoco"]))
    plan_run(load_config(None, ["model.quantization=4bit"]))  # accepted: checks pass


def test_quantization_and_autocast_settings():
    from fedmllm.model.loading import quantization_config, resolve_autocast

    q4 = quantization_config("4bit", torch.bfloat16)
    assert q4.load_in_4bit and q4.bnb_4bit_quant_type == "nf4" and q4.bnb_4bit_use_double_quant
    assert q4.bnb_4bit_compute_dtype == torch.bfloat16
    assert quantization_config("8bit").load_in_8bit and quantization_config("none") is None
    from fedmllm.errors import ModelError

    cpu = torch.device("cpu")
    assert resolve_autocast("auto", cpu) is None and resolve_autocast("off", cpu) is None
    with pytest.raises(ModelError, match="^train.autocast: bf16 needs a CUDA device"):
        resolve_autocast("bf16", cpu)
    if not torch.cuda.is_available():  # a CUDA device named on a machine without one
        assert resolve_autocast("auto", torch.device("cuda")) is None


def _gpu_step():
    import importlib.util

    path = ROOT / "benchmarks" / "gpu_step.py"
    spec = importlib.util.spec_from_file_location("gpu_step", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_benchmark_needs_a_gpu_and_its_flops_formula_matches_torchs_count(capsys):
    """``benchmarks/gpu_step.py`` exits 0 saying it needs a GPU; on its miniature model the
    model-FLOPs formula behind its MFU equals PyTorch's operator count of a training step."""
    import argparse

    gs = _gpu_step()
    if not torch.cuda.is_available():
        assert gs.main([]) == 0
        assert "needs a CUDA GPU" in capsys.readouterr().out
    assert gs.peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert gs.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gs.peak_tflops("NVIDIA H200") == 989.4 and gs.peak_tflops("NVIDIA L4") == 121.0
    assert gs.peak_tflops("NVIDIA L40S") == 362.1 and gs.peak_tflops("Tesla T4") is None
    args = argparse.Namespace(smoke=True, rank=4, dropout=0.0, gradient_checkpointing=False,
                              modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    cfg, bundle, trainer = gs.build(args, torch.device("cpu"), torch.float32)
    items = gs.make_batch(cfg, 2, 16, torch.Generator().manual_seed(0))
    lora = sum(p.numel() for p in bundle.adapter.params.values())
    formula = gs.step_flops(bundle.model, cfg, 2, 16, lora)["model"]
    assert formula == pytest.approx(gs.count_with_torch(trainer, items), rel=1e-3)
