"""Everything that needs a CUDA device, in one command and one table (``make gpu-check``).

Four checks, each in its own subprocess with its own time limit (a failure or a hang in one
does not stop the others), within :data:`TOTAL_BUDGET_S` (8 minutes) on an H100:

1. **gpu_step** — ``benchmarks/gpu_step.py`` at its defaults (a ~0.5 B LLaVA, batch 8 x 2048
   tokens, 20 timed steps; about 30 s of work): tokens/s, MFU, peak memory.
2. **qlora-4bit** — the ``llava-1.5`` family checkpoint of ``tests/helpers/families.py``
   (tiny, built from its transformers config) trained with a 4-bit base for one round:
   ``fedmllm run --model FOLDER model.quantization=4bit train.device=cuda ...``; its last
   training loss and image+text accuracy. Skipped, with the pip line, without bitsandbytes.
3. **demo-bf16** — ``fedmllm run train.device=cuda train.autocast=bf16`` (the demo's config;
   the tiny model is built and cached first) beside the float32 CPU accuracies of docs/figures.md
   (:data:`CPU_DEMO`); a pass needs image+text accuracy >= :data:`DEMO_JOINT_RULE`, i.e. the
   bf16 run learned the joint image-and-text rule as the CPU run does.
4. **tests-bf16** — ``pytest -m 'gpu or not slow'`` with ``FEDMLLM_TEST_DEVICE=cuda``
   (tests/helpers/devices.py): the fast suite with its runs on the GPU in bf16, the ``gpu``-marked
   tests included; it runs last and gets whatever is left of the budget.

Results are read from the runs' own files (``summary.json``, ``metrics.jsonl``) and from
gpu_step's and pytest's closing lines; every check's output is kept in ``--out``
(``runs/gpu-check``). Exit status 1 when a check fails. Without CUDA the script says so in one
line and exits 0; ``--smoke`` runs the same machinery on the CPU in the tiniest settings (no
quantization, a one-round demo, only the ``gpu`` tests, which skip), to check the code path.

    python benchmarks/gpu_check.py [--smoke] [--markdown FILE] [--out DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOTAL_BUDGET_S = 480.0
VIEWS = ("image_text", "image_only", "text_only")
#: The demo's final accuracies on the float32 CPU (docs/figures.md, "The demo"): image+text,
#: image only, text only.
CPU_DEMO = (1.000, 0.7925, 0.7925)
#: Image+text accuracy above what either modality alone allows (Bayes ceilings 0.8): the run
#: learned the joint rule.
DEMO_JOINT_RULE = 0.95
QLORA_PIP = "pip install 'fedmllm[qlora]'"
NO_GPU = ("gpu_check.py needs a CUDA GPU (bf16 tests, gpu_step throughput, QLoRA, the bf16 "
          "demo); none here, nothing checked. --smoke runs the table machinery on the CPU.")


# ------------------------------------------------------------------------------ the table


@dataclass
class Row:
    """One check's line in the table."""

    check: str
    result: str
    """``pass``, ``fail`` or ``skip``."""
    figure: str = ""
    cpu_ref: str = ""
    seconds: float | None = None
    note: str = ""
    """Printed under the table (why it failed or skipped, where its log is)."""


HEADER = ("check", "result", "figure", "CPU reference", "seconds")


def _cells(row: Row) -> tuple[str, ...]:
    secs = "" if row.seconds is None else f"{row.seconds:.1f}"
    return row.check, row.result, row.figure or "-", row.cpu_ref or "-", secs


def format_table(rows: list[Row]) -> str:
    """The rows as a fixed-width text table (header, rule, one line per row), then the notes."""
    lines = [HEADER, *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]

    def fmt(cells):
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    out = [fmt(HEADER), "  ".join("-" * w for w in widths), *(fmt(c) for c in lines[1:])]
    out += [f"{r.check}: {r.note}" for r in rows if r.note]
    return "\n".join(out)


def format_markdown(rows: list[Row], title: str = "") -> str:
    """The rows as a Markdown table (``|`` in its cells escaped), ``title`` above it, the notes
    as a list below it."""

    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    out = [f"{title}\n" if title else ""]
    out.append("| " + " | ".join(HEADER) + " |")
    out.append("|" + "|".join(["---"] * len(HEADER)) + "|")
    out += ["| " + " | ".join(esc(c) for c in _cells(r)) + " |" for r in rows]
    notes = [f"- {r.check}: {r.note}" for r in rows if r.note]  # a list: no escaping
    if notes:
        out += ["", *notes]
    return "\n".join(out).lstrip("\n") + "\n"


# ------------------------------------------------------------------------------ parsing


_PYTEST_WORDS = ("passed", "failed", "skipped", "deselected", "error", "errors", "xfailed",
                 "xpassed")
_PYTEST_END = re.compile(r"^=*\s*(?P<body>(?:no tests ran|\d+ \w+.*?))\s+in\s+"
                         r"(?P<secs>[\d.]+)s\b")


def parse_pytest(text: str) -> dict:
    """Counts from pytest's closing line (``3 failed, 680 passed, 9 skipped in 201.33s``), the
    seconds it states, and the ids of the ``FAILED``/``ERROR`` lines of its short summary.
    ``{}`` when there is no closing line (killed before it printed one)."""
    for line in reversed(text.splitlines()):
        m = _PYTEST_END.match(line.strip())
        if not m:
            continue
        counts = {w: 0 for w in ("passed", "failed", "skipped", "deselected", "errors")}
        for n, word in re.findall(r"(\d+) (\w+)", m["body"]):
            if word in _PYTEST_WORDS:
                key = "errors" if word in ("error", "errors") else word
                counts[key] = counts.get(key, 0) + int(n)
        failed = [m2[1] for m2 in re.finditer(r"^(?:FAILED|ERROR) (\S+)", text, re.MULTILINE)]
        return {**counts, "seconds": float(m["secs"]), "failed_ids": failed}
    return {}


def parse_gpu_step(text: str) -> dict:
    """gpu_step.py's figures: ``device``, ``step_ms``, ``tokens_per_s``, ``tflops``,
    ``peak_gib`` (allocated), ``mfu`` (a fraction); a key is absent when its line is."""
    out: dict = {}
    patterns = {
        "device": (r"^device: (.+?);", str),
        "step_ms": (r"^step: ([\d.]+) ms", float),
        "tokens_per_s": (r"([\d,]+) tokens/s", lambda s: float(s.replace(",", ""))),
        "tflops": (r"= ([\d.]+) TFLOP/s", float),
        "peak_gib": (r"^peak memory: ([\d.]+) GiB allocated", float),
        "mfu": (r"^MFU: ([\d.]+)%", lambda s: float(s) / 100),
    }
    for key, (pattern, conv) in patterns.items():
        m = re.search(pattern, text, re.MULTILINE)
        if m:
            out[key] = conv(m[1])
    return out


def read_run(folder: Path) -> dict:
    """A finished run's ``accuracy`` per modality view (``summary.json``) and the last round's
    mean training loss ``loss`` (``metrics.jsonl``, ``None`` without one). ``{}``: not
    finished (no readable summary)."""
    try:
        summary = json.loads((Path(folder) / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    per = summary.get("final", {}).get("per_modality", {})
    acc = {v: per[v]["accuracy"] for v in VIEWS if "accuracy" in per.get(v, {})}
    loss = None
    try:
        lines = (Path(folder) / "metrics.jsonl").read_text().splitlines()
        losses = [json.loads(x).get("train_loss_mean") for x in lines if x.strip()]
        losses = [x for x in losses if x is not None]
        loss = losses[-1] if losses else None
    except (OSError, ValueError):
        pass
    return {"accuracy": acc, "loss": loss}


def accuracies(acc: dict) -> str:
    """``1.0000 / 0.7975 / 0.7925``: image+text / image only / text only (``-`` if absent)."""
    return " / ".join(f"{acc[v]:.4f}" if v in acc else "-" for v in VIEWS)


# ------------------------------------------------------------------------------ running


@dataclass
class Proc:
    rc: int | None
    output: str
    seconds: float
    timed_out: bool


def run_proc(cmd: list[str], timeout: float, log: Path, env: dict | None = None) -> Proc:
    """``cmd`` in the repository root, stdout and stderr together into ``log``. Past
    ``timeout`` its process group gets SIGINT (pytest then prints its summary so far), then
    SIGKILL 20 s later."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, errors="replace",
                         start_new_session=True)
    timed_out = False
    try:
        out, _ = p.communicate(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(p.pid, signal.SIGINT)
        try:
            out, _ = p.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, _ = p.communicate()
    seconds = time.perf_counter() - t0
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n{out}\n[rc {p.returncode}, {seconds:.1f} s"
                f"{', timed out' if timed_out else ''}]\n")
    return Proc(None if timed_out else p.returncode, out, seconds, timed_out)


def _failure(proc: Proc, log: Path) -> str:
    """Why a subprocess failed, in one note: timeout or exit status, its last line, its log."""
    if proc.timed_out:
        why = f"timed out after {proc.seconds:.0f} s"
    else:
        last = next((x.strip() for x in reversed(proc.output.splitlines()) if x.strip()), "")
        why = f"exit {proc.rc}" + (f": {last[:160]}" if last else "")
    return f"{why} (log {log})"


@dataclass
class Context:
    smoke: bool
    out: Path
    env: dict
    deadline: float

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def limit(self, budget: float) -> float:
        """A check's time limit: its budget, or what is left of the total if less."""
        return min(budget, self.left())


def fedmllm(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedmllm.cli", *args]


def check_gpu_step(ctx: Context) -> Row:
    log = ctx.out / "gpu_step.log"
    proc = run_proc([sys.executable, "benchmarks/gpu_step.py", *(["--smoke"] if ctx.smoke
                                                                  else [])],
                    ctx.limit(75), log, ctx.env)
    f = parse_gpu_step(proc.output)
    row = Row("gpu_step (0.5 B LLaVA, LoRA, bf16)", "fail", seconds=proc.seconds)
    if "tokens_per_s" in f:
        parts = [f"{f['tokens_per_s']:,.0f} tokens/s"]
        if "mfu" in f:
            parts.append(f"MFU {f['mfu']:.1%} (goal >= 40%)")
        if "peak_gib" in f:
            parts.append(f"peak {f['peak_gib']:.1f} GiB")
        row.figure = ", ".join(parts)
    if proc.rc == 0 and "tokens_per_s" in f:
        row.result = "pass"
    else:
        row.note = _failure(proc, log)
    return row


#: Writes the tiny ``llava-1.5`` checkpoint of tests/helpers/families.py into argv[1].
_BUILD_FAMILY = ("import sys; from pathlib import Path; sys.path.insert(0, 'tests'); "
                 "from helpers.families import FAMILIES, build_folder; "
                 "fam = next(f for f in FAMILIES if f.name == 'llava-1.5'); "
                 "build_folder(fam, Path(sys.argv[1]))")


def check_qlora(ctx: Context) -> Row:
    row = Row("qlora-4bit (llava-1.5 family, 1 round)", "skip")
    quant = "none" if ctx.smoke else "4bit"
    if not ctx.smoke and importlib.util.find_spec("bitsandbytes") is None:
        row.figure = f"bitsandbytes not installed: {QLORA_PIP}"
        return row
    log, folder, run = ctx.out / "qlora.log", ctx.out / "llava-1.5", ctx.out / "qlora-run"
    t0 = time.perf_counter()
    shutil.rmtree(folder, ignore_errors=True)
    proc = run_proc([sys.executable, "-c", _BUILD_FAMILY, str(folder)], ctx.limit(30), log,
                    ctx.env)
    if proc.rc == 0:
        device = ["train.device=cpu", "train.autocast=off"] if ctx.smoke else \
            ["train.device=cuda"]
        proc = run_proc(fedmllm(
            "run", "--model", str(folder), "--overwrite", f"model.quantization={quant}",
            *device, "fl.rounds=1", "fl.num_clients=2", "fl.clients_per_round=2",
            "fl.local_steps=4", "train.batch_size=4", "data.train_size=24", "data.test_size=8",
            "data.min_per_client=4", "eval.every=1", "eval.batch_size=8", "lora.r=4",
            "train.lr=1e-2", "lora.dropout=0.0", f"output.dir={run}", "output.progress=false",
            "output.plot=false"), ctx.limit(60 - (time.perf_counter() - t0)), log, ctx.env)
    row.seconds = time.perf_counter() - t0
    res = read_run(run) if proc.rc == 0 else {}
    loss, acc = res.get("loss"), res.get("accuracy", {})
    if loss is not None:
        row.figure = f"loss {loss:.3f}, image+text accuracy " + (
            f"{acc['image_text']:.3f}" if "image_text" in acc else "-")
    if proc.rc == 0 and loss is not None and math.isfinite(loss):
        row.result = "pass"
        if ctx.smoke:
            row.note = "smoke: no quantization, on the CPU"
    else:
        row.result = "fail"
        row.note = _failure(proc, log) if proc.rc != 0 else f"no finite loss in {run}"
    return row


def check_demo(ctx: Context) -> Row:
    log, run = ctx.out / "demo.log", ctx.out / "demo-run"
    row = Row("demo-bf16 (fedmllm run; accuracy image+text / image / text)", "fail",
              cpu_ref=f"{accuracies(dict(zip(VIEWS, CPU_DEMO, strict=True)))} (docs/figures.md)")
    t0 = time.perf_counter()
    build = ["--no-pretrain"] if ctx.smoke else []
    proc = run_proc(fedmllm("model", "build", "--preset", "tiny", *build), ctx.limit(90), log,
                    ctx.env)
    if proc.rc == 0:
        if ctx.smoke:
            extra = ["model.pretrain=false", "fl.rounds=1", "fl.local_steps=1",
                     "fl.num_clients=2", "fl.clients_per_round=2", "data.train_size=20",
                     "data.test_size=8", "eval.every=1", "train.device=cpu",
                     "train.autocast=off"]
        else:
            extra = ["train.device=cuda", "train.autocast=bf16"]
        proc = run_proc(fedmllm("run", "--overwrite", *extra, f"output.dir={run}",
                                "output.progress=false"),
                        ctx.limit(150 - (time.perf_counter() - t0)), log, ctx.env)
    row.seconds = time.perf_counter() - t0
    acc = read_run(run).get("accuracy", {}) if proc.rc == 0 else {}
    if acc:
        row.figure = accuracies(acc)
    if proc.rc != 0 or not acc:
        row.note = _failure(proc, log) if proc.rc != 0 else f"no accuracies in {run}"
    elif ctx.smoke:
        row.result, row.note = "pass", "smoke: 1 round on the CPU, untrained base"
    elif acc.get("image_text", 0.0) >= DEMO_JOINT_RULE:
        row.result = "pass"
    else:
        row.note = (f"image+text accuracy below {DEMO_JOINT_RULE}: the bf16 run did not learn "
                    f"the joint rule the CPU run learns (log {log})")
    return row


def check_tests(ctx: Context) -> Row:
    log = ctx.out / "pytest.log"
    if ctx.smoke:
        args, env = ["-m", "gpu", "tests/runtime/test_gpu.py"], ctx.env
    else:
        args, env = ["-m", "gpu or not slow"], {**ctx.env, "FEDMLLM_TEST_DEVICE": "cuda"}
    proc = run_proc([sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider",
                     *args], ctx.left(), log, env)
    got = parse_pytest(proc.output)
    row = Row("tests-bf16 (pytest -m 'gpu or not slow', FEDMLLM_TEST_DEVICE=cuda)", "fail",
              seconds=proc.seconds)
    if ctx.smoke:
        row.check = "tests (smoke: pytest -m gpu tests/runtime/test_gpu.py, no CUDA)"
    if got:
        row.figure = (f"{got['passed']} passed, {got['failed'] + got['errors']} failed, "
                      f"{got['skipped']} skipped")
    if proc.rc == 0 and got and got["passed"] + got["skipped"] > 0:
        row.result = "pass"
    else:
        ids = got.get("failed_ids", []) if got else []
        shown = ", ".join(ids[:8]) + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")
        row.note = _failure(proc, log) + (f"; failed: {shown}" if shown else "")
    return row


#: The checks in the order they run: the fixed-size ones first, the suite last (it gets what
#: is left of the total budget).
CHECKS: tuple[Callable[[Context], Row], ...] = (check_gpu_step, check_qlora, check_demo,
                                                check_tests)


def device_line(torch) -> str:
    if not torch.cuda.is_available():
        return f"device: cpu; torch {torch.__version__}"
    return (f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}, "
            f"CUDA {torch.version.cuda}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true",
                    help="the same machinery on the CPU in the tiniest settings (no GPU needed)")
    ap.add_argument("--markdown", metavar="FILE", help="also write the table as Markdown")
    ap.add_argument("--out", default="runs/gpu-check",
                    help="folder for the checks' logs and runs (default runs/gpu-check)")
    args = ap.parse_args(argv)
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print(NO_GPU)
        return 0
    out = Path(args.out)
    if not out.is_absolute():
        out = ROOT / out
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.log"):
        old.unlink()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
           "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}
    env.pop("FEDMLLM_TEST_DEVICE", None)
    t0 = time.perf_counter()
    ctx = Context(args.smoke, out, env, t0 + TOTAL_BUDGET_S)
    rows = []
    for check in CHECKS:
        name = check.__name__.removeprefix("check_")
        print(f"[gpu-check] {name} ({ctx.left():.0f} s of the budget left) ...", file=sys.stderr,
              flush=True)
        if ctx.left() < 5:
            rows.append(Row(name, "fail", note="no time left in the 8-minute budget"))
            continue
        try:
            rows.append(check(ctx))
        except Exception as e:  # noqa: BLE001 - a broken check must not hide the other rows
            rows.append(Row(name, "fail", note=f"{type(e).__name__}: {e}"))
    total = time.perf_counter() - t0
    head = f"{device_line(torch)}; total {total:.0f} s (budget {TOTAL_BUDGET_S:.0f} s)" + (
        "; SMOKE (CPU, tiniest settings)" if args.smoke else "")
    print(head)
    print(format_table(rows))
    if args.markdown:
        Path(args.markdown).write_text(format_markdown(rows, head))
        print(f"wrote {args.markdown}")
    return 1 if any(r.result == "fail" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
