"""Small finished runs on the tiny preset for the eval, model card and plot tests."""

from __future__ import annotations

from pathlib import Path

from helpers.devices import run_overrides

TINY = ["model.preset=tiny", "fl.rounds=2", "fl.num_clients=3", "fl.clients_per_round=2",
        "fl.local_steps=4", "data.train_size=60", "data.test_size=16", "eval.every=1",
        "train.lr=5e-3", "output.progress=false", *run_overrides()]


def tiny_run(out: Path, *extra: str) -> Path:
    """A finished run of the tiny configuration (with ``extra`` overrides) in ``out``."""
    from fedmllm.config import load_config
    from fedmllm.runtime import run_experiment

    run_experiment(load_config(None, [*TINY, f"output.dir={out}", *extra]))
    return Path(out)
