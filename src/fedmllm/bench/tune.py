"""Tuning a grid's methods on seeds of their own, scored on the clients' held-out samples.

A grid's optional ``[tune]`` table (read and checked with the grid, :class:`.grid.Tuning`)
names, per method, the keys to search and their candidate values (crossed per method, in file
order)::

    [tune]
    seeds = [100, 101]                  # disjoint from bench.seeds (the load refuses overlap)
    settings = ["aligned", "missing-50"]  # optional: a subset of the grid's (default: all)
    metric = "accuracy"                 # optional: accuracy, macro_f1 or auroc (default: the
                                        # grid's)
    holdout = 0.2                       # optional: the validation fraction (default 0.2)

    [tune.methods.fedadam]
    "fl.strategy.eta" = [0.001, 0.003, 0.01]
    "fl.strategy.tau" = [1e-3, 1e-2]

The protocol (``fedmllm bench`` runs it before the report cells):

- A *tune cell* is (tune setting, method, candidate, tune seed): the method's keys in that
  setting (as its report cells have them), the candidate's keys, ``eval.client_holdout =
  holdout`` (each client holds out that share of its training samples, :mod:`fedmllm.runtime`)
  and ``eval.max_samples = 1`` (the test set is scored on one sample, a number the tuning never
  reads: it costs nothing and tells nothing).
- Its *score* is the mean over clients of their held-out ``metric`` at the end of training
  (``client_eval`` of ``summary.json``: the global model, or a local-only client's own
  adapter); a candidate's is the mean over tune seeds x tune settings. The best candidate
  wins; one within :data:`TIE` of an earlier one loses to it (list the cheaper first).
- The tune cells are a sweep of their own in ``OUT/tune/`` (:func:`~.runner.run_bench`,
  resumable); every one must finish before anything is chosen. The choice is written to
  ``OUT/tune/chosen.json`` and applied on top of the method's own keys in each of its report
  cells (recorded as the cell's ``tuned`` keys, part of its overrides and command). A resumed
  sweep reuses ``chosen.json``, and refuses a ``[tune]`` table that changed since.

Methods without a ``[tune.methods.X]`` table keep their keys; zero-shot trains nothing and
cannot be tuned.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path

from ..errors import OutputError
from ..files import atomic_write_json
from .grid import Grid, Tuning, build_cell, cells_digest, tuned_label

__all__ = ["CHOSEN", "TIE", "apply_chosen", "cell_score", "choose", "run_tuning",
           "tuning_section"]

CHOSEN = "chosen.json"
STATE = "bench.json"  # a sweep folder's state (bench/runner.py)
TIE = 1e-9
"""Candidates whose scores differ by at most this are tied: the first listed wins."""


def cell_score(folder: Path, metric: str) -> float | None:
    """A finished tune cell's score: the mean over clients of their held-out ``metric``
    (``summary.json``'s ``client_eval``; clients where it is undefined, such as AUROC on
    one class, are left out); ``None`` without one."""
    try:
        final = json.loads((Path(folder) / "summary.json").read_text())["final"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    per = (final.get("client_eval") or {}).get("per_client") or {}
    values = [float(m[metric]) for m in per.values()
              if isinstance(m.get(metric), (int, float)) and math.isfinite(m[metric])]
    return statistics.fmean(values) if values else None


def choose(t: Tuning, folder: Path) -> dict:
    """Every candidate's scores (per tune cell) and mean, and each method's best candidate:
    the content of ``chosen.json``. Every tune cell must have a score."""
    methods = {}
    for method, cands in t.candidates.items():
        rows, best = [], 0
        for i, cand in enumerate(cands):
            scores = {c.id: cell_score(folder / "runs" / c.id, t.metric)
                      for c in t.cells(method, cand)}
            missing = [cid for cid, v in scores.items() if v is None]
            if missing:
                raise OutputError(f"{folder}: tune cell {missing[0]} has no validation score "
                                  f"({len(missing)} of candidate {tuned_label(cand)} of {method}); "
                                  "see its log and continue with --resume")
            rows.append({"keys": cand, "scores": scores,
                         "mean": statistics.fmean(scores.values())})
            if rows[i]["mean"] > rows[best]["mean"] + TIE:
                best = i
        methods[method] = {"chosen": cands[best], "index": best, "candidates": rows}
    return {**t.to_json(), "methods": methods}


def apply_chosen(grid: Grid, chosen: dict) -> Grid:
    """``grid`` with each tuned method's chosen keys on top of its own keys in every report
    cell (before the seed), each such cell rebuilt and validated, and the digest anew."""
    cells = []
    for c in grid.cells:
        keys = chosen["methods"].get(c.method, {}).get("chosen")
        if not keys:
            cells.append(c)
            continue
        overrides = {**{k: v for k, v in c.overrides.items() if k != "seed"}, **keys,
                     "seed": c.seed}
        cell = build_cell(grid.path, grid.base, c.id, c.setting, c.method, c.seed, overrides)
        cell.tuned = dict(keys)
        cells.append(cell)
    return dataclasses.replace(grid, cells=cells, digest=cells_digest(cells))


def run_tuning(grid: Grid, out: str | Path, sweep, jobs: int = 1, resume: bool = False,
               threads: int | None = None, console=None) -> Grid:
    """The tuning phase of ``fedmllm bench``: run (or continue) the tune cells in
    ``OUT/tune/`` with ``sweep`` (:func:`~fedmllm.bench.runner.run_bench`, which calls this
    first), choose, write ``chosen.json`` atomically (a resumed sweep reuses it), and return
    ``grid`` with the chosen keys applied (:func:`apply_chosen`)."""
    out, t = Path(out), grid.tune
    folder = out / "tune"
    chosen_file = folder / CHOSEN
    if resume and chosen_file.is_file():
        try:
            chosen = json.loads(chosen_file.read_text())
        except ValueError:
            raise OutputError(f"{chosen_file}: unreadable; choose another --out") from None
        if chosen.get("digest") != t.digest:
            raise OutputError(f"{out}: the grid's [tune] table (or a cell it tunes) changed "
                              f"since the tuning chose ({chosen_file}); choose another --out")
        return apply_chosen(grid, chosen)
    if resume and (out / STATE).is_file() and not folder.is_dir():
        raise OutputError(f"{out}: its sweep ran without tuning and the grid has a [tune] "
                          "table now; choose another --out")
    if resume and not folder.is_dir():
        raise OutputError(f"{out}: no sweep to resume ({STATE} missing)")
    if not resume and out.is_dir() and any(out.iterdir()):
        raise OutputError(f"{out}: holds a sweep; continue it with --resume, or choose another "
                          "--out" if (out / STATE).is_file() or folder.is_dir() else
                          f"{out}: not empty and not a bench folder; choose another --out")
    if console is not None:
        console.print(f"fedmllm bench: tuning {', '.join(t.candidates)} first "
                      f"({len(t.grid.cells)} tune cells in {folder})")
    sweep(t.grid, folder, jobs=jobs, resume=resume and (folder / STATE).is_file(),
          threads=threads, console=console)
    chosen = choose(t, folder)
    atomic_write_json(chosen_file, chosen)
    return apply_chosen(grid, chosen)


def tuning_section(doc, out: Path) -> None:
    """The report's "Tuning" section (when ``OUT/tune/`` exists): per tuned method each
    candidate's validation score, mean and 95 % interval over tune seeds x settings, the
    chosen one marked, and what the score was computed on."""
    from .stats import UNIT, mean_ci

    folder = Path(out) / "tune"
    if not folder.is_dir():
        return
    doc.h(2, "Tuning")
    try:
        ch = json.loads((folder / CHOSEN).read_text())
    except (OSError, ValueError):
        doc.p(f"The tuning in {folder} has not finished: the report cells have not run.")
        return
    try:
        report_seeds = json.loads((Path(out) / "bench.json").read_text())["seeds"]
    except (OSError, ValueError, KeyError):
        report_seeds = []
    apart = not set(report_seeds) & set(ch["seeds"])
    n = len(ch["seeds"]) * len(ch["settings"])
    doc.p(f"Tune seeds {', '.join(map(str, ch['seeds']))}, tune settings "
          f"{', '.join(ch['settings'])}. Each candidate ran in every tune setting with every "
          f"tune seed, each client holding out {ch['holdout']:g} of its training samples "
          "(`eval.client_holdout`); its score is the mean over clients of their held-out "
          f"{ch['metric']} at the end of training, shown as the mean and 95 % interval over "
          f"the {n} tune cells (seeds x settings). The best candidate (ties within {TIE:g} go "
          "to the first listed) runs in every report cell of its method (the cell's `tuned` "
          "keys in bench.json); the methods not listed keep their own keys.")
    doc.p(("The report seeds (" + ", ".join(map(str, report_seeds)) + ") are disjoint from "
           "the tune seeds, and " if apart else "**The report seeds overlap the tune seeds**; ")
          + "the score never touched the test set: it reads only the clients' held-out "
          "samples (a tune cell scores one test sample, a number never read).")
    rows = []
    for method, entry in ch["methods"].items():
        for i, cand in enumerate(entry["candidates"]):
            chosen = i == entry["index"]
            text = ", ".join(f"{k} = {json.dumps(v)}" for k, v in cand["keys"].items())
            rows.append([method if i == 0 else "", f"**{text}**" if chosen else text,
                         mean_ci(cand["scores"].values(), UNIT).text(),
                         "chosen" if chosen else ""])
    doc.table(["method", "candidate", f"validation {ch['metric']}", ""], rows)
