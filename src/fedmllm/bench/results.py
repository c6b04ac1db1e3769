"""A sweep's results as one table: ``results.csv``, a row per cell and modality view.

Read from the cells' own run folders (``summary.json``, ``metrics.jsonl``), never from
anything the runner kept in memory, so the table can be rebuilt at any time
(``fedmllm report DIR``). A cell that failed has one row with its status and error and no
metrics. A local-only cell's metrics are the mean over its clients' own adapters.

Beside the final metrics, a row has what its accuracy curve says (the evaluated rounds of
``metrics.jsonl``): ``rounds_to_target``, the first evaluated round whose accuracy reaches the
grid's ``bench.target`` (``never`` where none does), and ``accuracy_area``, the area under the
accuracy curve (:func:`curve_area`); and ``client_steps``, the local steps its clients ran
(``summary.json``'s ``compute.client_steps``, where the run counts them).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import statistics
from pathlib import Path

from ..files import atomic_write_text
from .grid import TARGET

__all__ = ["COLUMNS", "METRICS", "ONESHOT", "collect", "curve_area", "oneshot_diagnostics",
           "read_curves", "read_results", "rounds_to_target", "view_metrics", "write_results"]

VIEWS = ("image_text", "image_only", "text_only")
METRICS = ("accuracy", "macro_f1", "auroc", "auc_hard", "invalid_rate",
           "accuracy_calibrated", "threshold")
CLIENT = ("client_accuracy_mean", "client_accuracy_std", "client_accuracy_min",
          "client_accuracy_max")
#: One-shot diagnostics (:func:`oneshot_diagnostics`), empty for multi-round cells.
ONESHOT = ("rho_B", "rho_B_update", "dB_rel", "dW_rel", "client_lr", "base_s1_sr", "base_gap",
           "base_energy")
COLUMNS = ("cell", "setting", "method", "seed", "status", "view", "n", *METRICS, "constant",
           "bytes_uploaded", "bytes_downloaded", "train_seconds", "seconds", "privacy_epsilon",
           "fedopt_step",
           *CLIENT, *ONESHOT,
           "client_steps", "rounds_to_target", "accuracy_area",
           "error")


def _constant(m: dict) -> float | None:
    """The accuracy of always giving the test set's most frequent answer (from the confusion
    matrix, whose rows are the true classes): the floor a model must beat to have learned."""
    conf = m.get("confusion")
    if not conf:
        return None
    total = sum(sum(row) for row in conf)
    return max(sum(row) for row in conf) / total if total else None


def view_metrics(final: dict, view: str) -> dict:
    """The metrics of one view from a summary's ``final`` block (for a local-only run, the
    mean over its clients), with ``constant``, the accuracy of the constant majority answer."""
    if "per_client" in final:
        per = [m.get("per_modality", {}).get(view) for m in final["per_client"].values()]
        per = [m for m in per if m]
        out = {}
        for key in ("n", *METRICS):
            vals = [m[key] for m in per if isinstance(m.get(key), (int, float))]
            if vals:
                out[key] = statistics.fmean(vals)
        if per:
            out["constant"] = _constant(per[0])
        return out
    m = final.get("per_modality", {}).get(view, {})
    return {**m, "constant": _constant(m)} if m else {}


def _client_eval(final: dict) -> dict:
    ce = final.get("client_eval", {}).get("accuracy", {})
    return {f"client_accuracy_{k}": ce.get(k) for k in ("mean", "std", "min", "max")}


def _median(values) -> float | None:
    values = [float(v) for v in values if isinstance(v, (int, float))]
    return statistics.median(values) if values else None


def oneshot_diagnostics(folder: str | Path) -> dict:
    """A one-shot cell's diagnostics from its ``metrics.jsonl`` row: the sign-conflict rate of
    the uploaded B (``rho_B``) and of their updates ``B_i - B0`` (``rho_B_update``), the median
    over clients of ``||dB||/||B0||`` and ``||dW||/||B0 A0||`` (empty where ``B0 = 0``), the
    median client learning rate, and the base's spectrum at rank ``r`` (median over the
    targeted modules: ``s_1/s_r``, ``s_r/s_{r+1}``, the top-``r`` energy share)."""
    try:
        row = json.loads((Path(folder) / "metrics.jsonl").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return {}
    if "drift" not in row:
        return {}
    modules = ((row.get("spectrum") or {}).get("modules") or {}).values()
    spectrum = {key: _median(m.get(key) for m in modules) for key in ("s1_sr", "gap", "energy")}
    drift = row["drift"].values()
    return {"rho_B": row.get("conflict", {}).get("lora_B", {}).get("rho_bar"),
            "rho_B_update": row.get("conflict_update", {}).get("lora_B", {}).get("rho_bar"),
            "dB_rel": _median(d.get("dB_rel") for d in drift),
            "dW_rel": _median(d.get("dW_rel") for d in drift),
            "client_lr": _median((row.get("client_lr") or {}).values()) or row.get("lr"),
            "base_s1_sr": spectrum.get("s1_sr"), "base_gap": spectrum.get("gap"),
            "base_energy": spectrum.get("energy")}


def rounds_to_target(curve: list[tuple[int, float]], target: float) -> int | str | None:
    """The first round of ``curve`` (``(round, accuracy)``, in order) whose accuracy is at least
    ``target``; ``"never"`` where none is; ``None`` without a curve."""
    if not curve:
        return None
    return next((r for r, v in curve if v >= target), "never")


def curve_area(curve: list[tuple[int, float]]) -> float | None:
    """The area under the curve ``(round, value)`` with its rounds mapped to [0, 1] (first
    evaluated round 0, last 1), by the trapezoid rule: the curve's mean over the rounds,
    ``sum (x_{i+1} - x_i) (y_i + y_{i+1}) / 2``; the value itself for one round; ``None``
    without a curve."""
    if not curve:
        return None
    if len(curve) == 1:
        return curve[0][1]
    (r0, _), (r1, _) = curve[0], curve[-1]
    area = sum((b - a) * (u + v) / 2 for (a, u), (b, v) in itertools.pairwise(curve))
    return area / (r1 - r0)


def _curve_measures(out: Path, cid: str, view: str, target: float) -> dict:
    curve = read_curves(out, cid, view, "accuracy")
    return {"rounds_to_target": rounds_to_target(curve, target),
            "accuracy_area": curve_area(curve)}


def collect(out: str | Path) -> list[dict]:
    """Every cell's rows (see the module docstring), in the grid's order."""
    out = Path(out)
    state = json.loads((out / "bench.json").read_text())
    target = state.get("target", TARGET)
    statuses = state.get("status", {})
    rows: list[dict] = []
    for cell in state["cells"]:
        cid = cell["id"]
        st = statuses.get(cid, {})
        base = {"cell": cid, "setting": cell["setting"], "method": cell["method"],
                "seed": cell["seed"], "seconds": st.get("seconds")}
        folder = out / "runs" / cid
        try:
            summary = json.loads((folder / "summary.json").read_text())
        except (OSError, ValueError):
            rows.append({**base, "status": st.get("status", "pending"),
                         "error": st.get("error", "")})
            continue
        final, totals = summary.get("final", {}), summary.get("totals", {})
        extra = {"status": "done", "bytes_uploaded": totals.get("bytes_uploaded"),
                 "bytes_downloaded": totals.get("bytes_downloaded"),
                 "train_seconds": totals.get("train_seconds"),
                 "privacy_epsilon": (summary.get("privacy") or {}).get("epsilon"),
                 "fedopt_step": (summary.get("oneshot") or {}).get("fedopt_step"),
                 **_client_eval(final),
                 "client_steps": (summary.get("compute") or {}).get("client_steps"),
                 **oneshot_diagnostics(folder)}
        for view in VIEWS:
            m = view_metrics(final, view)
            if m:
                rows.append({**base, **extra, "view": view,
                             **{k: m.get(k) for k in ("n", *METRICS, "constant")},
                             **_curve_measures(out, cid, view, target)})
    return rows


def write_results(out: str | Path, rows: list[dict]) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})
    return atomic_write_text(Path(out) / "results.csv", buf.getvalue())


def read_results(path: str | Path) -> list[dict]:
    """``results.csv`` back as dicts with numbers as numbers (empty cells as ``None``)."""
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            row: dict = {}
            for k, v in r.items():
                if v == "":
                    row[k] = None
                elif k in ("cell", "setting", "method", "status", "view", "error",
                           "fedopt_step"):
                    row[k] = v
                else:
                    try:
                        row[k] = int(v) if k == "seed" else float(v)
                    except ValueError:
                        row[k] = v
            rows.append(row)
    return rows


def read_curves(out: str | Path, cell: str, view: str, metric: str) -> list[tuple[int, float]]:
    """``(round, metric)`` of a cell's evaluated rounds (from its ``metrics.jsonl``)."""
    path = Path(out) / "runs" / cell / "metrics.jsonl"
    points = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return points
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        ev = row.get("eval")
        if not isinstance(ev, dict) or "round" not in row:
            continue
        value = view_metrics(ev, view).get(metric)
        if isinstance(value, (int, float)):
            points.append((int(row["round"]), float(value)))
    return points
