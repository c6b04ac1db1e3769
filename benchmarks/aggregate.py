"""Server aggregation throughput of every fedmllm.fl strategy on LoRA-sized adapters.

The adapter is rank-8 LoRA on q/k/v/o of a 7B-class language model (Qwen2-7B shapes: hidden
3584, grouped-query k/v width 512, 28 layers -> 224 tensors, 5.05 M parameters, 20 MB in
float32). For N clients, one round reads N client adapters (plus SCAFFOLD's N control deltas).

Reported per strategy and N: best-of-``--repeats`` seconds per round and the achieved client
bytes read per second as a fraction of ``torch.clone`` bandwidth on the very same tensors,
measured in the same run (clone reads every byte once and writes it once).

    python benchmarks/aggregate.py            # N = 10 and 100, full 7B shape (~1 min, 2 cores)
    python benchmarks/aggregate.py --quick    # 4 layers, N = 10 and 20 (seconds)

One intra-op thread by default: every LoRA tensor is below PyTorch's 32K-element parallel grain,
so only a few transcendental kernels (sqrt) would use a second thread, and on a shared, busy
machine their OpenMP barriers can cost 100x (``--threads 0`` shows it). The clone baseline runs
under the same setting.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from fedmllm.fl import ClientUpdate, make_strategy

HIDDEN, KV, RANK = 3584, 512, 8
DEFAULT_STRATEGIES = (
    "fedavg", "fedavgm", "fedadagrad", "fedadam", "fedyogi", "scaffold", "median", "trimmed_mean",
)


def adapter_shapes(layers: int) -> dict[str, tuple[int, int]]:
    shapes = {}
    for layer in range(layers):
        for proj, out_dim in (("q", HIDDEN), ("k", KV), ("v", KV), ("o", HIDDEN)):
            prefix = f"base_model.model.model.language_model.layers.{layer}.self_attn.{proj}_proj"
            shapes[f"{prefix}.lora_A.weight"] = (RANK, HIDDEN)
            shapes[f"{prefix}.lora_B.weight"] = (out_dim, RANK)
    return shapes


def make_states(shapes, n: int, dtype: torch.dtype, seed: int):
    """Global state and ``n`` client states, each its own memory (no shared storage)."""
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


def clone_bandwidth(clients, repeats: int) -> float:
    """Bytes read per second by ``torch.clone`` over every client tensor (best of repeats)."""
    total = sum(nbytes(c) for c in clients)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for c in clients:
            for t in c.values():
                t.clone()
        best = min(best, time.perf_counter() - t0)
    return total / best


def time_strategy(name, glob, clients, controls, repeats: int) -> float:
    kwargs = {"num_clients": len(clients)} if name == "scaffold" else {}
    strategy = make_strategy(name, **kwargs)
    updates = [
        ClientUpdate(c, 10 + i, i, extras={"control_delta": controls[i]} if controls else {})
        for i, c in enumerate(clients)
    ]
    best, spent = float("inf"), 0.0
    for rnd in range(1, repeats + 1):  # round 1 also allocates optimizer state
        t0 = time.perf_counter()
        strategy.aggregate(glob, updates, rnd)
        elapsed = time.perf_counter() - t0
        best, spent = min(best, elapsed), spent + elapsed
        if spent > 3.0:  # slow robust reductions: one timing is enough
            break
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, nargs="+", default=None)
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--strategies", nargs="+", default=list(DEFAULT_STRATEGIES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float64"], default="float32")
    ap.add_argument("--quick", action="store_true", help="4 layers, N = 10 and 20")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1; 0 = torch's default)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    layers = args.layers or (4 if args.quick else 28)
    client_counts = args.clients or ([10, 20] if args.quick else [10, 100])
    dtype = getattr(torch, args.dtype)
    shapes = adapter_shapes(layers)
    params = sum(a * b for a, b in shapes.values())
    print(f"adapter: {len(shapes)} tensors, {params / 1e6:.2f} M params, "
          f"{params * dtype.itemsize / 2**20:.1f} MiB ({args.dtype}); "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    header = f"{'strategy':<14}{'N':>5}{'seconds':>10}{'GB/s read':>11}{'of clone':>10}"
    for n in client_counts:
        glob, clients = make_states(shapes, n, dtype, seed=n)
        controls = None
        if "scaffold" in args.strategies:
            controls = [{k: torch.full_like(g, 1e-3 * i) for k, g in glob.items()}
                        for i in range(n)]
        client_bytes = sum(nbytes(c) for c in clients)
        rows = []
        for name in args.strategies:
            read = client_bytes + nbytes(glob)
            if name == "scaffold":
                read += sum(nbytes(c) for c in controls)
            secs = time_strategy(name, glob, clients, controls if name == "scaffold" else None,
                                 args.repeats)
            rows.append((name, secs, read / secs))
        # the baseline: best of clone runs before and after, so a busy moment cannot favour us
        clone_bw = max(clone_bandwidth(clients, 5), clone_bandwidth(clients, 5))
        print(f"\nN = {n}: clone bandwidth {clone_bw / 1e9:.2f} GB/s (bytes read)")
        print(header)
        for name, secs, bw in rows:
            print(f"{name:<14}{n:>5}{secs:>10.3f}{bw / 1e9:>11.2f}{bw / clone_bw:>9.0%}")
        del glob, clients, controls


if __name__ == "__main__":
    main()
