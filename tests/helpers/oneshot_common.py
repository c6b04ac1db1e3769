"""Shared set-up of the one-shot driver tests: a 3-client tiny configuration, a bundle loaded
once per module (see the ``pissa``/``plain`` fixtures in conftest.py) and a run helper that
resets the bundle's adapter before every run."""

import torch

from fedmllm.config import load_config
from fedmllm.engine.bundle import build_bundle
from fedmllm.engine.factory import plan_run
from fedmllm.runtime import build_driver
from fedmllm.runtime.session import encode_samples
from helpers.devices import run_overrides

N_CLIENTS = 3


def base_cfg(out, *extra):
    return load_config(None, [
        "model.preset=tiny", "fl.algorithm=yoco", f"fl.num_clients={N_CLIENTS}",
        "fl.yoco.local_epochs=1", "data.train_size=24", "data.test_size=16",
        "train.batch_size=4", "data.min_per_client=4",
        "eval.views=[image_text]", f"output.dir={out}", "output.progress=false",
        "output.plot=false", *run_overrides(), *extra])


def shared_bundle(tmp_path_factory, *extra):
    """(bundle, its initial adapter state, the federated data) for ``base_cfg(*extra)``."""
    from fedmllm.data import build_federated_data

    cfg = base_cfg(tmp_path_factory.mktemp("o"), *extra)
    bundle = build_bundle(plan_run(cfg))
    return bundle, bundle.adapter.get(), build_federated_data(cfg.data, N_CLIENTS, cfg.seed)


def run(shared, out, *extra):
    bundle, pristine, data = shared
    bundle.adapter.set(pristine)
    sim = build_driver(base_cfg(out, *extra), bundle=bundle, data=data)
    return sim, sim.run()


def sample_batch(bundle, data):
    """Four test samples of ``data``, collated on the bundle's device."""
    from fedmllm.model.collate import collate

    enc = encode_samples(bundle.processor, data.test[:4], "plain", 256)
    batch = collate(enc, bundle.processor.tokenizer.pad_token_id)
    return {k: v.to(bundle.device) for k, v in batch.items()}


def logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(**batch).logits.float().cpu()


def base_model(bundle):
    """The original base model, on the bundle's device and dtype."""
    from fedmllm.model.loading import load_vlm

    model, _ = load_vlm(bundle.source, device=bundle.device, dtype=bundle.dtype)
    return model


def tol(bundle) -> dict:
    """Logit tolerance: float32 round-off, or bfloat16's (8 bits of mantissa) on a GPU."""
    return {"atol": 1e-4, "rtol": 1e-4} if bundle.dtype == torch.float32 else \
        {"atol": 0.1, "rtol": 0.05}
