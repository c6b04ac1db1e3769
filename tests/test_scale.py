"""Scaling: training data encoded per batch (same tensors, same adapter as encoding up front,
nothing encoded before a client trains)."""

from __future__ import annotations

import importlib

import pytest
import torch

from fedmllm.config import load_config
from fedmllm.engine.client import make_trainer, train_round
from fedmllm.engine.factory import plan_run
from fedmllm.model.collate import EncodedSamples, collate
from fedmllm.runtime import build_driver
from fedmllm.runtime.session import encode_samples, load_bundle


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
    bundle = load_bundle(cfg, plan)
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

