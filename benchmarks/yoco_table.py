"""YOCO and the one-shot baselines vs multi-round FL on the synthetic benchmark, four scenarios.

One documented command produced the single-seed results tables of
docs/yoco_results_corpus_v3.md (the earlier study; docs/yoco_results.md now comes from
`make yoco-study`, benchmarks/grids/yoco.toml):

    python benchmarks/yoco_table.py --epochs 5 --train-size 2000 \
        --targets paper,lora --alpha 0.5,5 [--jobs 8] [--device cpu]

Setting: the pre-trained `tiny` base (`--preset`), synth `binary`, 10 clients, Dirichlet label
skew (`--alpha`, one table per value), the scenarios aligned / missing (rate 0.5) / cross
(3 image-only clients) / hybrid (presence 0.7). LoRA targets (`--targets`, one table per value):
`paper` = YOCO's own (r = alpha = 8, dropout 0.05, the last LM layer's q_proj); `lora` = the
project's defaults (r 8, alpha 16, q/k/v/o in every LM layer). Every row of a table uses that
table's targets, the multi-round rows too.

One-shot methods train every client once for `--epochs` local epochs (fixed: no selection on
the test set) at the constant `train.lr`, and upload once. Multi-round FedAvg/FedAdam use 4 of 10
clients per round, for as many rounds as give each client the same number of local steps in
expectation. Weights are float32 on every device. Accuracy is on the test set with image+text,
image only and text only; AUROC is from the option probabilities (image+text); communication is
the total bytes uploaded by all clients and the paper's unit (rounds x layers x LoRA modules).

Runs are independent processes (`--jobs`). Each setting's table is written between the markers
`<!-- yoco-table TARGETS ALPHA -->` and `<!-- /yoco-table -->` of `--out` (replaced when there,
appended otherwise), so the hand-written reading around the tables is kept and settings can be
produced by separate invocations. `--resume FILE` keeps every finished run's row in FILE (JSON
lines, keyed by setting, scenario, method and sizes) and skips runs already there, so an
interrupted invocation goes on where it stopped.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import re
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SCENARIOS = {
    "aligned": [],
    "missing": ["data.scenario=missing", "data.missing_rate=0.5"],
    "cross": ["data.scenario=cross", "data.image_clients=3"],
    "hybrid": ["data.scenario=hybrid", "data.presence=0.7"],
}

ONE_SHOT = {
    "YOCO init": ["fl.yoco.variant=init"],
    "YOCO init+B": ["fl.yoco.variant=init_b"],
    "YOCO init+B+A": ["fl.yoco.variant=init_ba"],
    "YOCO full": ["fl.yoco.variant=full"],
    "one-shot FedAvg": ["fl.yoco.method=fedavg"],
    "one-shot mean": ["fl.yoco.method=mean"],
    "one-shot FedAdam": ["fl.yoco.method=fedadam"],
    "one-shot TIES": ["fl.yoco.method=ties"],
    "one-shot exact (rank N·r)": ["fl.yoco.method=exact"],
    "ensemble": ["fl.yoco.method=ensemble"],
    "local": ["fl.yoco.method=local"],
}

#: LoRA keys of the multi-round rows, per targets setting (one-shot rows: fl.yoco.targets).
MULTI_LORA = {
    "paper": ["lora.r=8", "lora.alpha=8", "lora.dropout=0.05", "lora.modules=[q_proj]",
              "lora.layers=[-1]"],
    "lora": [],
}

END = "<!-- /yoco-table -->"


def start_marker(targets: str, alpha: float) -> str:
    return f"<!-- yoco-table {targets} {alpha:g} -->"


def _run(job: tuple[list[str], int]) -> dict:
    overrides, threads = job
    import torch

    from fedmllm.config import load_config
    from fedmllm.runtime import run_experiment

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(None, [*overrides, f"output.dir={out}", "output.progress=false",
                                 "output.plot=false"])
        t0 = time.perf_counter()
        result = run_experiment(cfg)
        final, totals = result.final["final"], result.final.get("totals", {})
        up = totals.get("bytes_uploaded")
        if up is None:
            up = sum(row.get("bytes_uploaded", 0) for row in result.rows)
        return {"final": final, "uploaded": up, "units": totals.get("upload_units", "-"),
                "seconds": time.perf_counter() - t0}


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else "-"


def row(scen: str, name: str, r: dict) -> str:
    final = r["final"]
    pm = final.get("per_modality", {})

    def acc(view):
        return pm.get(view, {}).get("accuracy", final.get("accuracy") if view == "image_text"
                                    else None)

    auroc = pm.get("image_text", {}).get("auroc", final.get("auroc"))
    return (f"| {scen} | {name} | {_fmt(acc('image_text'))} | {_fmt(auroc)} | "
            f"{_fmt(acc('image_only'))} | {_fmt(acc('text_only'))} | {r['uploaded'] / 1e6:.3f} | "
            f"{r['units']} | {r['seconds']:.0f} |")


def jobs_for(args, targets: str, alpha: float) -> list[tuple[str, str, list[str]]]:
    common = [f"model.preset={args.preset}", "model.dtype=float32", f"train.device={args.device}",
              "fl.num_clients=10", f"data.alpha={alpha}", f"data.train_size={args.train_size}",
              f"data.test_size={args.test_size}"]
    steps_per_epoch = max(1, round(args.train_size / 10 / 8))
    rounds = max(1, round(args.epochs * 10 / 4))
    multi_common = ["fl.clients_per_round=4", f"fl.rounds={rounds}",
                    f"fl.local_steps={steps_per_epoch}", f"eval.every={rounds}",
                    *MULTI_LORA[targets]]
    multi = {"FedAvg (multi-round)": ["fl.algorithm=fedavg", *multi_common],
             "FedAdam (multi-round)": ["fl.algorithm=fedadam", "fl.strategy.eta=0.01",
                                       *multi_common]}
    out = []
    for scen in args.scenarios.split(","):
        for name, o in ONE_SHOT.items():
            out.append((scen, name, [*common, *SCENARIOS[scen], "fl.algorithm=yoco",
                                     f"fl.yoco.targets={targets}",
                                     f"fl.yoco.local_epochs={args.epochs}", *o]))
        for name, o in multi.items():
            out.append((scen, name, [*common, *SCENARIOS[scen], *o]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=float, default=5.0)
    ap.add_argument("--train-size", type=int, default=2000)
    ap.add_argument("--test-size", type=int, default=200)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--targets", default="paper", help="comma list of paper, lora")
    ap.add_argument("--alpha", default="0.5", help="comma list of Dirichlet alphas")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads per run (0 = cores / jobs)")
    ap.add_argument("--device", default="cpu", help="train.device of every run")
    ap.add_argument("--out", default="docs/yoco_results_corpus_v3.md")
    ap.add_argument("--resume", help="JSON-lines file of finished rows (read and appended)")
    args = ap.parse_args()
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    settings = [(t, float(a)) for t in args.targets.split(",") for a in args.alpha.split(",")]
    for t, _ in settings:
        if t not in MULTI_LORA:
            ap.error(f"--targets: unknown {t!r}; choices: {', '.join(MULTI_LORA)}")
    plan = [(s, j) for s in settings for j in jobs_for(args, *s)]

    def key(setting, job) -> str:
        (targets, alpha), (scen, name, _) = setting, job
        return (f"{targets}|{alpha:g}|{scen}|{name}|{args.epochs:g}|{args.train_size}|"
                f"{args.test_size}|{args.preset}")

    done: dict[str, dict] = {}
    if args.resume and Path(args.resume).exists():
        for line in Path(args.resume).read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                done[rec["key"]] = rec
    todo = [i for i, (st, j) in enumerate(plan) if key(st, j) not in done]
    print(f"{len(plan) - len(todo)} of {len(plan)} runs found in --resume, {len(todo)} to run",
          flush=True)
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
        futures = {pool.submit(_run, (plan[i][1][2], threads)): i for i in todo}
        for n, fut in enumerate(as_completed(futures), 1):
            i = futures[fut]
            (targets, alpha), (scen, name, _) = plan[i]
            rec = {"key": key(*plan[i]), "row": row(scen, name, fut.result()),
                   "device": args.device}
            done[rec["key"]] = rec
            if args.resume:
                with open(args.resume, "a") as f:
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            print(f"[{n}/{len(todo)}] {targets} alpha={alpha:g} {rec['row']}", flush=True)
    wall = time.perf_counter() - t0
    head = ("| scenario | method | acc image+text | AUROC image+text | acc image only | "
            "acc text only | uploaded (MB) | units | seconds |\n"
            "|---|---|---|---|---|---|---|---|---|")
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, device {args.device}, "
               f"{args.jobs} runs in parallel x {threads} threads; {wall / 60:.1f} min for "
               f"{len(todo)} runs")
    if len(todo) < len(plan):
        machine += f"; {len(plan) - len(todo)} rows from --resume"
    path = Path(args.out)
    text = path.read_text() if path.exists() else \
        "# YOCO and one-shot baselines on the synthetic benchmark\n"
    for targets, alpha in settings:
        cmd = (f"python benchmarks/yoco_table.py --epochs {args.epochs:g} --train-size "
               f"{args.train_size} --test-size {args.test_size} --preset {args.preset} "
               f"--targets {targets} --alpha {alpha:g} --scenarios {args.scenarios} "
               f"--device {args.device}")
        lines = [start_marker(targets, alpha),
                 f"### Targets `{targets}`, Dirichlet alpha {alpha:g}", "",
                 f"Produced by `{cmd}` ({machine}).", "", head]
        for job in jobs_for(args, targets, alpha):
            lines.append(done[key((targets, alpha), job)]["row"])
        block = "\n".join([*lines, END])
        pattern = re.compile(re.escape(start_marker(targets, alpha)) + ".*?" + re.escape(END),
                             re.DOTALL)
        found = pattern.search(text)
        if found:
            text = text[:found.start()] + block + text[found.end():]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
