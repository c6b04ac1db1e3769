"""Server aggregation throughput on LoRA-sized adapters, against ``torch.clone`` bandwidth.

The adapter is rank-8 LoRA on q/k/v/o of a 7B-class language model (Qwen2-7B shapes: hidden
3584, grouped-query k/v width 512, 28 layers -> 224 tensors, 5.05 M parameters, 20 MB in
float32). For N clients a round of each rule must move, at the least (S = one adapter):

    fedavg        reads the N client states, writes the new global            (N + 1) S
    fedavgm       + reads the global, reads and writes the momentum            (N + 4) S
    fedadam/...   + reads the global, reads and writes m and v                 (N + 6) S
    scaffold      + reads the global and N control deltas, reads/writes c      (2N + 4) S
    median/trim   reads the N client states and the global, writes the global (N + 2) S
    krum          reads the N states for the pairwise distances, then the chosen one and the
                  global, writes the global                                    (N + 3) S
    multikrum     reads the N states for the distances, then the m <= N chosen ones and the
    / bulyan      global, writes the global (bounded with m = N)              (2N + 2) S

Reported per rule and N: best-of-``--repeats`` seconds per round (round 1, which allocates the
optimizer state, is not timed), those bytes per second, and their ratio to two baselines over
the same client tensors, measured in the same run before and after the rules (the better of
the two measurements counts): ``/clone``, ``torch.clone`` of every tensor with the result
discarded (2 bytes moved per byte; the allocator hands back the same cache-warm memory, so its
writes are cheap: a demanding baseline), and ``/copy``, ``copy_`` into preallocated buffers
(every byte read from and written to memory once). One pass over the client states is the
physical limit of a mean.

Client states come in two layouts (``--layout``): ``packed`` (each client's tensors end to end in
one buffer, as ``fedmllm.model`` hands adapter copies out and as a deserialised upload is, see
``fedmllm.fl.pack_state``) and ``tensors`` (one allocation per tensor). The global state is
packed (after round 1 it is the strategy's own output, which is).

Seen on the 2-core development machine (1 thread, other jobs running; ratios vary by about
+-5 points between runs): fedavg packed 64-71 % of clone and 80-90 % of copy at N = 10 and
100; fedadam packed 42-54 % (N = 10) and 60-66 % (N = 100) of clone, 54-69 % / 79-84 % of copy.
The per-tensor layout pays one kernel per tensor: about 40-50 % of clone. With ``--threads 2``
on the busy machine every rule ran about 10x slower (OpenMP barriers).

    python benchmarks/aggregate.py            # fedavg and fedadam, N = 10 and 100 (~1 min)
    python benchmarks/aggregate.py --quick    # 4 layers, N = 10 and 20 (seconds)
    python benchmarks/aggregate.py --strategies fedavg fedavgm fedadam scaffold median
    python benchmarks/aggregate.py --quick --strategies krum multikrum bulyan

One intra-op thread by default: every LoRA tensor is below PyTorch's 32K-element parallel grain,
and on a shared, busy machine OpenMP barriers can cost far more than they save (``--threads 0``
shows it). The clone baseline runs under the same setting.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from fedmllm.fl import ClientUpdate, make_strategy
from fedmllm.fl.aggregation import pack_state

HIDDEN, KV, RANK = 3584, 512, 8
DEFAULT_STRATEGIES = ("fedavg", "fedadam")
MOVED = {  # bytes moved per round in units of S: (per client, fixed)
    "fedavg": (1, 1), "fedprox": (1, 1), "fedavgm": (1, 4), "fedadagrad": (1, 6),
    "fedadam": (1, 6), "fedyogi": (1, 6), "scaffold": (2, 4), "median": (1, 2),
    "trimmed_mean": (1, 2), "krum": (1, 3), "multikrum": (2, 2), "bulyan": (2, 2),
}


def adapter_shapes(layers: int) -> dict[str, tuple[int, int]]:
    shapes = {}
    for layer in range(layers):
        for proj, out_dim in (("q", HIDDEN), ("k", KV), ("v", KV), ("o", HIDDEN)):
            prefix = f"base_model.model.model.language_model.layers.{layer}.self_attn.{proj}_proj"
            shapes[f"{prefix}.lora_A.weight"] = (RANK, HIDDEN)
            shapes[f"{prefix}.lora_B.weight"] = (out_dim, RANK)
    return shapes


def make_states(shapes, n: int, dtype: torch.dtype, seed: int):
    """Global state and ``n`` client states, each tensor its own allocation."""
    gen = torch.Generator().manual_seed(seed)
    glob = {
        k: torch.empty(s, dtype=dtype).uniform_(-1, 1, generator=gen) for k, s in shapes.items()
    }
    clients = [
        {k: g + torch.empty_like(g).uniform_(-1e-3, 1e-3, generator=gen) for k, g in glob.items()}
        for _ in range(n)
    ]
    return glob, clients


def nbytes(state) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def clone_bandwidth(clients, repeats: int) -> float:
    """Bytes moved (read + written) per second by ``torch.clone`` of every client tensor, the
    results discarded (so the allocator hands the same, cache-warm memory back): best of
    ``repeats`` runs after one warm-up run."""
    tensors = [t for c in clients for t in c.values()]
    moved = 2 * sum(t.numel() * t.element_size() for t in tensors)

    def run():
        for t in tensors:
            t.clone()

    run()
    return moved / best_of(run, repeats)


def copy_bandwidth(clients, repeats: int) -> float:
    """Bytes moved per second by ``Tensor.copy_`` of every client tensor into its own
    preallocated (already touched) buffer: each byte read once from memory and written once
    to memory, without the allocator in the way. Best of ``repeats`` runs."""
    tensors = [t for c in clients for t in c.values()]
    out = [torch.empty_like(t) for t in tensors]
    moved = 2 * sum(t.numel() * t.element_size() for t in tensors)

    def run():
        for o, t in zip(out, tensors, strict=True):
            o.copy_(t)

    run()
    return moved / best_of(run, repeats)


def time_strategy(name, glob, clients, controls, repeats: int) -> float:
    kwargs = {"num_clients": len(clients)} if name == "scaffold" else {}
    strategy = make_strategy(name, **kwargs)
    updates = [
        ClientUpdate(c, 10 + i, i, extras={"control_delta": controls[i]} if controls else {})
        for i, c in enumerate(clients)
    ]
    strategy.aggregate(glob, updates, 1)  # round 1 allocates the optimizer state: not timed
    best, spent = float("inf"), 0.0
    for rnd in range(2, repeats + 2):
        t0 = time.perf_counter()
        strategy.aggregate(glob, updates, rnd)
        elapsed = time.perf_counter() - t0
        best, spent = min(best, elapsed), spent + elapsed
        if spent > 5.0:  # slow robust reductions: a few timings are enough
            break
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, nargs="+", default=None)
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--strategies", nargs="+", default=list(DEFAULT_STRATEGIES),
                    choices=sorted(MOVED))
    ap.add_argument("--layout", choices=["packed", "tensors", "both"], default="both")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float64"], default="float32")
    ap.add_argument("--quick", action="store_true", help="4 layers, N = 10 and 20")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1; 0 = torch's default)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    layers = args.layers or (4 if args.quick else 28)
    client_counts = args.clients or ([10, 20] if args.quick else [10, 100])
    layouts = ["packed", "tensors"] if args.layout == "both" else [args.layout]
    dtype = getattr(torch, args.dtype)
    shapes = adapter_shapes(layers)
    params = sum(a * b for a, b in shapes.values())
    print(f"adapter: {len(shapes)} tensors, {params / 1e6:.2f} M params, "
          f"{params * dtype.itemsize / 2**20:.1f} MiB ({args.dtype}); "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    header = (f"{'strategy':<14}{'layout':<9}{'N':>5}{'seconds':>10}{'GB/s moved':>12}"
              f"{'/clone':>9}{'/copy':>9}")
    for n in client_counts:
        glob, per_tensor = make_states(shapes, n, dtype, seed=n)
        glob = pack_state(glob)  # rounds after the first: the strategy's own (packed) output
        size = nbytes(glob)
        packed = [pack_state(c) for c in per_tensor] if "packed" in layouts else None
        controls = None
        if "scaffold" in args.strategies:
            controls = [pack_state({k: torch.full_like(g, 1e-3 * i) for k, g in glob.items()})
                        for i in range(n)]
        states = {"packed": packed, "tensors": per_tensor}
        # baselines before and after the rules, the best of both: a busy moment cannot favour us
        clone_bw = clone_bandwidth(per_tensor, 5)
        copy_bw = copy_bandwidth(per_tensor, 3)
        rows = []
        for name in args.strategies:
            per_client, fixed = MOVED[name]
            moved = (per_client * n + fixed) * size
            for layout in layouts:
                secs = time_strategy(name, glob, states[layout],
                                     controls if name == "scaffold" else None, args.repeats)
                rows.append((name, layout, secs, moved / secs))
        clone_bw = max(clone_bw, clone_bandwidth(per_tensor, 5))
        copy_bw = max(copy_bw, copy_bandwidth(per_tensor, 3))
        print(f"\nN = {n}: torch.clone {clone_bw / 1e9:.2f} GB/s moved (read + write; the "
              f"output discarded), copy_ into preallocated memory {copy_bw / 1e9:.2f} GB/s")
        print(header)
        for name, layout, secs, bw in rows:
            print(f"{name:<14}{layout:<9}{n:>5}{secs:>10.4f}{bw / 1e9:>12.2f}"
                  f"{bw / clone_bw:>9.0%}{bw / copy_bw:>9.0%}")
        del glob, per_tensor, packed, controls, states


if __name__ == "__main__":
    main()
