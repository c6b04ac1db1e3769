"""Federated round overhead: one simulated round vs the same optimizer steps in a plain peft loop.

Both sides use the same peft model, the same batches (same collation) and fresh AdamW state per
client; the round additionally loads the global adapter into the model per client, runs the
client-objective hooks, copies the client's adapter out and aggregates (FedAvg). The figure is
``time(round) / time(plain loop)``, medians over repeats measured alternately in one process.
Target: <= 1.03.

    python benchmarks/round_overhead.py [--preset tiny|small] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from fedmllm.config import load_config
from fedmllm.engine.client import batch_stream
from fedmllm.fl import sample_clients
from fedmllm.model.collate import collate
from fedmllm.runtime import build_driver
from fedmllm.seeding import torch_generator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small", choices=["tiny", "small"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--local-steps", type=int, default=12)
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    out = tempfile.mkdtemp(prefix="fedmllm-bench-")
    cfg = load_config(None, [f"model.preset={args.preset}", f"fl.local_steps={args.local_steps}",
                             "fl.clients_per_round=3", f"output.dir={out}",
                             "train.grad_clip=null", "output.progress=false"])
    sim = build_driver(cfg)
    b = sim.bundle
    lr = sim.session.plan.lr
    pad = b.processor.tokenizer.pad_token_id
    steps = cfg.fl.local_steps
    r = 1
    chosen = sample_clients(cfg.fl.num_clients, cfg.fl.clients_per_round, r, cfg.seed)

    def fed_round() -> float:
        t0 = time.perf_counter()
        updates = [sim.train_client(k, r, lr, {}).update for k in chosen]
        sim.strategy.aggregate(sim.global_state, updates, r)
        return time.perf_counter() - t0

    def plain_loop() -> float:
        """The same batches and steps, as a plain peft training loop would run them."""
        params = [p for p in b.model.parameters() if p.requires_grad]
        t0 = time.perf_counter()
        b.model.train()
        for k in chosen:
            opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.train.weight_decay)
            stream = batch_stream(sim.session.clients[k], cfg.train.batch_size,
                                  torch_generator(cfg.seed, "batches", r, k))
            for _ in range(steps):
                batch = collate(next(stream), pad)
                loss = b.model(**batch).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return time.perf_counter() - t0

    fed_round(), plain_loop()  # warm-up
    fed, plain = [], []
    for _ in range(args.repeats):
        fed.append(fed_round())
        plain.append(plain_loop())
    f, p = statistics.median(fed), statistics.median(plain)
    n = steps * len(chosen)
    print(f"preset={args.preset} clients/round={len(chosen)} steps/client={steps} "
          f"optimizer steps/round={n} threads={torch.get_num_threads()}")
    print(f"federated round: {f:.3f} s   plain peft loop: {p:.3f} s   (medians of {args.repeats})")
    print(f"ratio round/plain = {f / p:.3f}   (target <= 1.03)")
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
