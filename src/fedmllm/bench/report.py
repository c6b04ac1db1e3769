"""A sweep's report: ``report.md`` (figures beside it) and one self-contained ``report.html``.

Built from ``results.csv`` and the cells' ``metrics.jsonl`` (:mod:`fedmllm.bench.results`):

1. the headline table: mean and 95 % confidence interval over seeds of the grid's metric, per
   method and setting;
2. the ranking: every method's mean rank over the settings, and paired comparisons across
   seeds against the reference method (the grid's ``bench.reference``, else the first method);
3. the grid's claims, each checked setting by setting: it holds where the better side's
   interval lies wholly above the worse side's (the paired difference is given beside it);
4. the modality views (image+text, image only, text only), client-side evaluation (mean, std,
   min and max over the clients' own held-out samples, where the cells measured it), and
   communication against accuracy;
5. figures: the radar across settings (one polygon per method, the FedMLLM paper's overview
   figure), per-round curves, per-view bars, communication vs accuracy;
6. the cells that failed, with their one-line errors.
"""

from __future__ import annotations

import base64
import html
import itertools
import json
import math
import statistics
from pathlib import Path

from ..files import atomic_write_text
from .results import VIEWS, collect, read_curves, read_results, write_results
from .stats import Interval, mean_ci, paired

__all__ = ["build_report"]

_VIEW_NAMES = {"image_text": "image+text", "image_only": "image only", "text_only": "text only"}


class _Doc:
    """Blocks rendered twice: Markdown and HTML."""

    def __init__(self):
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def table(self, head: list[str], rows: list[list[str]]):
        if rows:
            self.blocks.append(("table", head, rows))

    def raw(self, markdown: str):
        """Markdown written by hand (a grid's ``notes``), kept as it is."""
        self.blocks.append(("raw", markdown))

    def img(self, path: Path, alt: str):
        if path.is_file():
            self.blocks.append(("img", path, alt))

    def markdown(self, folder: Path) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] in ("p", "raw"):
                out.append(b[1].rstrip())
            elif b[0] == "table":
                head, rows = b[1], b[2]
                out.append("| " + " | ".join(head) + " |")
                out.append("|" + "|".join("---" for _ in head) + "|")
                out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
            else:
                rel = b[1].relative_to(folder) if b[1].is_relative_to(folder) else b[1]
                out.append(f"![{b[2]}]({rel.as_posix()})")
            out.append("")
        return "\n".join(out)

    def html(self, title: str) -> str:
        out = ["<!doctype html><html><head><meta charset='utf-8'>",
               f"<title>{html.escape(title)}</title><style>",
               ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;"
               "padding:0 1em;color:#222}table{border-collapse:collapse;margin:1em 0;"
               "font-size:14px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
               "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
               "img{max-width:100%}code{background:#f3f3f3;padding:0 3px}"),
               "</style></head><body>"]
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h{b[1]}>{html.escape(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                out.append(f"<p>{_inline_code(html.escape(b[1]))}</p>")
            elif b[0] == "raw":
                out.append("<div style='white-space:pre-wrap'>"
                           f"{_inline_code(html.escape(b[1]))}</div>")
            elif b[0] == "table":
                out.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in b[1])
                           + "</tr>")
                out += ["<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r)
                        + "</tr>" for r in b[2]]
                out.append("</table>")
            else:
                data = base64.b64encode(b[1].read_bytes()).decode()
                out.append(f"<p><img alt='{html.escape(b[2])}' "
                           f"src='data:image/png;base64,{data}'></p>")
        out.append("</body></html>")
        return "\n".join(out)


def _inline_code(text: str) -> str:
    parts = text.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _values(rows, method, setting, view, metric) -> dict[int, float]:
    """seed -> value for one (method, setting, view)."""
    return {r["seed"]: r[metric] for r in rows
            if r["method"] == method and r["setting"] == setting and r["view"] == view
            and isinstance(r.get(metric), float)}


def _ranks(means: dict[str, float]) -> dict[str, float]:
    """Rank 1 = best (highest); ties share the mean of their ranks."""
    order = sorted(means, key=lambda m: -means[m])
    ranks: dict[str, float] = {}
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and means[order[j + 1]] == means[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _claim_pairs(claim: dict, methods: list[str], settings: list[str]):
    b, w = claim["better"], claim["worse"]
    bm, wm = b.get("method") or w.get("method"), w.get("method") or b.get("method")
    bs, ws = b.get("setting") or w.get("setting"), w.get("setting") or b.get("setting")
    mpairs = list(zip(methods, methods, strict=True)) if bm is None else \
        list(itertools.product(bm, wm))
    spairs = list(zip(settings, settings, strict=True)) if bs is None else \
        list(itertools.product(bs, ws))
    for (mb, mw), (sb, sw) in itertools.product(mpairs, spairs):
        if (mb, sb) != (mw, sw):
            yield (mb, sb), (mw, sw)


def _label(method: str, setting: str, settings: list[str]) -> str:
    return method if len(settings) == 1 else f"{method} @ {setting}"


# ----------------------------------------------------------------------------- figures

def _figures(out: Path, state: dict, rows: list[dict], metric: str, view: str) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = out / "figures"
    figs.mkdir(exist_ok=True)
    methods, settings = state["methods"], state["settings"]
    colours = {m: plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")(i % 20)
               for i, m in enumerate(methods)}
    made: dict[str, Path] = {}

    def mean_of(m, s, v=view, key=metric):
        vals = list(_values(rows, m, s, v, key).values())
        return statistics.fmean(vals) if vals else math.nan

    if len(settings) >= 3:  # the radar: one spoke per setting
        angles = [2 * math.pi * i / len(settings) for i in range(len(settings))]
        fig = plt.figure(figsize=(7.5, 7.5))
        ax = fig.add_subplot(projection="polar")
        for m in methods:
            vals = [mean_of(m, s) for s in settings]
            if all(math.isnan(v) for v in vals):
                continue
            ax.plot(angles + angles[:1], vals + vals[:1], color=colours[m], label=m, lw=1.6)
            ax.fill(angles + angles[:1], vals + vals[:1], color=colours[m], alpha=0.05)
        ax.set_xticks(angles)
        ax.set_xticklabels(settings, fontsize=8)
        ax.set_title(f"{metric} ({_VIEW_NAMES[view]}), mean over seeds", pad=20)
        ax.legend(loc="upper right", bbox_to_anchor=(1.32, 1.1), fontsize=8)
        made["radar"] = figs / "radar.png"
        fig.savefig(made["radar"], dpi=110, bbox_inches="tight")
        plt.close(fig)

    # per-round curves: one panel per setting, mean over seeds per method
    cells = state["cells"]
    ncol = min(4, len(settings))
    nrow = math.ceil(len(settings) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 2.8 * nrow), squeeze=False)
    any_curve = False
    for i, s in enumerate(settings):
        ax = axes[i // ncol][i % ncol]
        for m in methods:
            per_round: dict[int, list[float]] = {}
            for c in cells:
                if c["setting"] == s and c["method"] == m:
                    for r, v in read_curves(out, c["id"], view, metric):
                        per_round.setdefault(r, []).append(v)
            if per_round:
                any_curve = True
                xs = sorted(per_round)
                ax.plot(xs, [statistics.fmean(per_round[x]) for x in xs], marker="o", ms=3,
                        color=colours[m], label=m)
        ax.set_title(s, fontsize=9)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.tick_params(labelsize=7)
    for j in range(len(settings), nrow * ncol):
        axes[j // ncol][j % ncol].axis("off")
    if any_curve:
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(6, len(methods)), fontsize=8)
        fig.suptitle(f"{metric} ({_VIEW_NAMES[view]}) per round, mean over seeds", fontsize=10)
        fig.tight_layout(rect=(0, 0.06, 1, 0.96))
        made["curves"] = figs / "curves.png"
        fig.savefig(made["curves"], dpi=100)
    plt.close(fig)

    # per-view bars: mean over settings, interval over seeds of that mean
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(methods) + 2), 3.8))
    width = 0.8 / len(VIEWS)
    for j, v in enumerate(VIEWS):
        ivs = [_over_settings(rows, m, settings, v, metric) for m in methods]
        xs = [i + (j - 1) * width for i in range(len(methods))]
        ax.bar(xs, [iv.mean for iv in ivs], width,
               yerr=[0 if math.isnan(iv.half) else iv.half for iv in ivs],
               label=_VIEW_NAMES[v], capsize=2)
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels(methods, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per modality view (mean over settings; 95 % interval over seeds)",
                 fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    made["views"] = figs / "views.png"
    fig.savefig(made["views"], dpi=100)
    plt.close(fig)

    # communication vs accuracy
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    plotted = False
    for m in methods:
        mb = [(r["bytes_uploaded"] or 0) + (r["bytes_downloaded"] or 0) for r in rows
              if r["method"] == m and r["view"] == view and r.get("bytes_uploaded") is not None]
        iv = _over_settings(rows, m, settings, view, metric)
        if mb and not math.isnan(iv.mean):
            plotted = True
            x = max(statistics.fmean(mb) / 1e6, 1e-3)
            ax.errorbar([x], [iv.mean], yerr=[0 if math.isnan(iv.half) else iv.half],
                        fmt="o", color=colours[m], capsize=3, label=m)
    if plotted:
        ax.set_xscale("log")
        ax.set_xlabel("MB sent per run (up + down; 0 shown at 0.001)")
        ax.set_ylabel(f"{metric} ({_VIEW_NAMES[view]})")
        ax.set_title("communication vs accuracy (mean over settings)", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        made["communication"] = figs / "communication.png"
        fig.savefig(made["communication"], dpi=100)
    plt.close(fig)
    return made


def _over_settings(rows, method, settings, view, metric) -> Interval:
    """Per seed, the mean over the settings that seed has; then the interval over seeds."""
    per_seed: dict[int, list[float]] = {}
    for s in settings:
        for seed, v in _values(rows, method, s, view, metric).items():
            per_seed.setdefault(seed, []).append(v)
    full = [statistics.fmean(v) for v in per_seed.values() if len(v) == len(settings)]
    return mean_ci(full)


# ----------------------------------------------------------------------------- the report

def build_report(out: str | Path, recollect: bool = True,
                 publish: str | Path | None = None) -> dict[str, Path]:
    """Write ``results.csv`` (re-read from the run folders when ``recollect``), ``report.md``,
    ``report.html`` and ``figures/`` in the sweep folder ``out``; return their paths.

    ``publish`` (a ``.md`` path, e.g. ``docs/results.md``) also writes the Markdown report
    there, its figures copied beside it into ``<name>_figures/``: a document for the
    repository, made by one command."""
    out = Path(out)
    state = json.loads((out / "bench.json").read_text())
    if recollect:
        rows = collect(out)
        write_results(out, rows)
    rows = read_results(out / "results.csv")
    metric, view = state.get("metric", "accuracy"), state.get("view", "image_text")
    methods, settings = state["methods"], state["settings"]
    seeds = state["seeds"]
    reference = state.get("reference") or methods[0]
    done = {r["cell"] for r in rows if r["status"] == "done"}
    failed = [r for r in rows if r["status"] == "failed"]  # one row per unfinished cell
    pending = [r for r in rows if r["status"] not in ("done", "failed")]

    doc = _Doc()
    title = f"Benchmark: {Path(state['grid']).name}"
    doc.h(1, title)
    if state.get("description"):
        doc.p(state["description"])
    doc.p(f"{len(state['cells'])} cells: {len(settings)} settings x {len(methods)} methods x "
          f"{len(seeds)} seeds (seeds {', '.join(map(str, seeds))}); {len(done)} done, "
          f"{len(failed)} failed, {len(pending)} not run. Headline: {metric} on the "
          f"{_VIEW_NAMES[view]} view of the test set. Intervals are 95 % Student-t intervals "
          "over seeds (mean ± half-width); a seed fixes the data, the partition, the test set "
          "and every random draw of a cell. Rebuild with `fedmllm report "
          f"{out}`; rerun any cell with the command in `bench.json`.")

    figs = _figures(out, state, rows, metric, view)

    # the learnability gate: which methods beat the constant majority answer (paired over
    # seeds: a seed fixes the test set, hence its majority class)
    above: dict[str, list[str]] = {}
    constant: dict[str, Interval] = {}
    if metric == "accuracy":
        for s in settings:
            const = {r["seed"]: r["constant"] for r in rows if r["setting"] == s
                     and r["view"] == view and isinstance(r.get("constant"), float)}
            if const:
                constant[s] = mean_ci(const.values())
                above[s] = [m for m in methods
                            if paired(_values(rows, m, s, view, metric), const).verdict
                            == "better"]
    gate = [m for m in state.get("gate", []) if m in methods]
    if gate:  # every gate method must beat the constant answer
        no_signal = [s for s in settings if s in above and not set(gate) <= set(above[s])]
    else:
        no_signal = [s for s in settings if s in above and not above[s]]

    # 1. headline
    doc.h(2, f"{metric} ({_VIEW_NAMES[view]}) per method and setting")
    if no_signal:
        who = (f"{' and '.join(gate)} do not all beat" if gate else "No method beats")
        doc.p(f"{who} the constant answer in {', '.join(no_signal)} (marked "
              "'no signal'): those settings are left out of the ranks, and their numbers say "
              "nothing about which method is better.")
    head = ["method", *(f"{s} (no signal)" if s in no_signal else s for s in settings),
            "mean rank"]
    table_rows = []
    ranks: dict[str, list[float]] = {m: [] for m in methods}
    for s in settings:
        if s in no_signal:
            continue
        means = {m: mean_ci(_values(rows, m, s, view, metric).values()).mean for m in methods}
        means = {m: v for m, v in means.items() if not math.isnan(v)}
        for m, r in _ranks(means).items():
            ranks[m].append(r)
    for m in methods:
        cells = [mean_ci(_values(rows, m, s, view, metric).values()).text() for s in settings]
        rank = f"{statistics.fmean(ranks[m]):.1f}" if ranks[m] else "-"
        table_rows.append([m, *cells, rank])
    doc.table(head, table_rows)
    if len(seeds) > 1:
        doc.h(3, f"{metric}: mean (standard deviation over seeds)")
        sd_rows = []
        for m in methods:
            cells = []
            for s in settings:
                iv = mean_ci(_values(rows, m, s, view, metric).values())
                cells.append("-" if not iv.n else f"{iv.mean:.3f}" if iv.n == 1 else
                             f"{iv.mean:.3f} ({iv.sd:.3f})")
            sd_rows.append([m, *cells])
        doc.table(["method", *settings], sd_rows)
    for extra in state.get("metrics", []):
        if extra == metric:
            continue
        doc.h(3, f"{extra} ({_VIEW_NAMES[view]})")
        doc.table(["method", *settings],
                  [[m, *(mean_ci(_values(rows, m, s, view, extra).values()).text()
                         for s in settings)] for m in methods])
    if constant:
        doc.h(3, "Learnability gate")
        doc.p("The accuracy of always giving the test set's most frequent answer, and the "
              "methods whose accuracy beats it (paired over seeds, 95 % interval above 0)."
              + (f" A setting is ranked only where {' and '.join(gate)} all beat it."
                 if gate else ""))
        doc.table(["setting", "constant answer", "methods above it"],
                  [[s, constant[s].text(), ", ".join(above[s]) or "none: no signal"]
                   for s in settings if s in constant])
    doc.img(figs.get("radar", Path()), "radar across settings")

    _verdict(doc, state, rows, settings, no_signal, view, metric, reference)

    # 2. ranking and paired comparisons
    doc.h(2, "Ranking")
    order = sorted((m for m in methods if ranks[m]), key=lambda m: statistics.fmean(ranks[m]))
    doc.p(f"Mean rank over the settings (1 = best). Paired comparison against `{reference}` "
          "per setting: mean difference over the seeds both have, its 95 % interval, and "
          "wins/ties/losses; 'better'/'worse' where the interval excludes 0.")
    rank_rows = []
    for m in order:
        verdicts = {"better": 0, "worse": 0, "no clear difference": 0, "too few seeds": 0}
        diffs = []
        if m != reference:
            for s in settings:
                if s in no_signal:
                    continue
                pr = paired(_values(rows, m, s, view, metric),
                            _values(rows, reference, s, view, metric))
                if pr.diff.n:
                    verdicts[pr.verdict] += 1
                    diffs.append(pr.diff.mean)
        vs = "(reference)" if m == reference else (
            f"better in {verdicts['better']}, worse in {verdicts['worse']}, unclear in "
            f"{verdicts['no clear difference'] + verdicts['too few seeds']}")
        mean_diff = f"{statistics.fmean(diffs):+.3f}" if diffs else "-"
        rank_rows.append([m, f"{statistics.fmean(ranks[m]):.2f}", mean_diff, vs])
    doc.table(["method", "mean rank", f"mean diff vs {reference}", "settings"], rank_rows)
    detail = []
    for s in settings:
        for m in methods:
            if m == reference:
                continue
            pr = paired(_values(rows, m, s, view, metric),
                        _values(rows, reference, s, view, metric))
            if pr.diff.n:
                detail.append([s, m, pr.diff.text(), f"{pr.wins}/{pr.ties}/{pr.losses}",
                               pr.verdict])
    if detail:
        doc.h(3, f"Paired differences against {reference}, per setting")
        doc.table(["setting", "method", "difference", "wins/ties/losses", "verdict"], detail)

    # 3. claims
    if state.get("claims"):
        doc.h(2, "Claims")
        for claim in state["claims"]:
            cm, cv = claim.get("metric") or metric, claim.get("view") or view
            lines, held, checked = [], 0, 0
            for (mb, sb), (mw, sw) in _claim_pairs(claim, methods, settings):
                a, b = _values(rows, mb, sb, cv, cm), _values(rows, mw, sw, cv, cm)
                ia, ib = mean_ci(a.values()), mean_ci(b.values())
                if not ia.n or not ib.n:
                    continue
                if sb in no_signal or sw in no_signal:
                    lines.append([_label(mb, sb, settings), ia.text(), _label(mw, sw, settings),
                                  ib.text(), paired(a, b).diff.text(), "no signal"])
                    continue
                checked += 1
                ok = ia.n > 1 and ib.n > 1 and ia.lo > ib.hi
                held += ok
                pr = paired(a, b)
                lines.append([_label(mb, sb, settings), ia.text(), _label(mw, sw, settings),
                              ib.text(), pr.diff.text(), "holds" if ok else "not shown"])
            doc.h(3, claim["name"])
            skipped = ("settings that fail the learnability gate" if gate else
                       "settings where no method beats the constant answer")
            doc.p(f"{cm} ({_VIEW_NAMES[cv]}): holds in {held} of {checked} comparisons "
                  "(the better side's 95 % interval wholly above the worse side's; "
                  f"{skipped} are not counted).")
            doc.table(["better", cm, "worse", cm, "paired difference", "verdict"], lines)

    # 4. views, client-side evaluation, communication
    doc.h(2, "Modality views")
    doc.p(f"{metric} on the test set seen with image+text, image only and text only: mean over "
          "the settings, interval over seeds.")
    doc.table(["method", *(_VIEW_NAMES[v] for v in VIEWS)],
              [[m, *(_over_settings(rows, m, settings, v, metric).text() for v in VIEWS)]
               for m in methods])
    doc.img(figs.get("views", Path()), "per modality view")
    client_rows = []
    for m in methods:
        for s in settings:
            sel = [r for r in rows if r["method"] == m and r["setting"] == s
                   and r["view"] == view and r.get("client_accuracy_mean") is not None]
            if sel:
                client_rows.append([m, s, *(
                    mean_ci([r[f"client_accuracy_{k}"] for r in sel]).text()
                    for k in ("mean", "std", "min", "max"))])
    if client_rows:
        doc.h(2, "Client-side evaluation (fairness)")
        doc.p("The global model on each client's own held-out samples (as the client holds "
              "them: its modalities); accuracy mean, std, min and max over the clients, each "
              "averaged over seeds with its interval.")
        doc.table(["method", "setting", "mean", "std", "min", "max"], client_rows)
    comm_rows = []
    for m in methods:
        sel = [r for r in rows if r["method"] == m and r["view"] == view
               and r.get("bytes_uploaded") is not None]
        if sel:
            up = statistics.fmean(r["bytes_uploaded"] for r in sel) / 1e6
            down = statistics.fmean(r["bytes_downloaded"] for r in sel) / 1e6
            secs = [r["train_seconds"] for r in sel if r.get("train_seconds") is not None]
            comm_rows.append([m, f"{up:.2f}", f"{down:.2f}", up + down,
                              _over_settings(rows, m, settings, view, metric).text(),
                              f"{statistics.fmean(secs):.1f}" if secs else "-"])
    ref_total = next((r[3] for r in comm_rows if r[0] == reference), None)
    for r in comm_rows:
        r[3] = f"{r[3] / ref_total:.3f}" if ref_total else "-"
    doc.h(2, "Communication")
    if state.get("share_uploads"):
        doc.p("Train seconds of 0: the cell loaded its clients' uploads from a cell that "
              "trained them (share_uploads); that cell's row carries the cost.")
    doc.table(["method", "MB up per run", "MB down per run", f"bytes / {reference}'s", metric,
               "train s per run"], comm_rows)
    doc.img(figs.get("communication", Path()), "communication vs accuracy")
    if "curves" in figs:
        doc.h(2, "Per-round curves")
        doc.img(figs["curves"], "per-round curves")

    _oneshot_diagnostics(doc, rows, methods, settings, view)
    if state.get("notes"):
        try:
            doc.raw(Path(state["notes"]).read_text())
        except OSError:
            doc.p(f"(notes file {state['notes']} not found)")

    # 5. failures
    if failed or pending:
        doc.h(2, "Cells not finished")
        doc.table(["cell", "status", "error"],
                  [[r["cell"], r["status"], r.get("error") or ""] for r in failed + pending])

    paths = {"results": out / "results.csv", "markdown": out / "report.md",
             "html": out / "report.html"}
    atomic_write_text(paths["markdown"], doc.markdown(out))
    atomic_write_text(paths["html"], doc.html(title))
    if publish is not None:
        paths["published"] = _publish(doc, Path(publish))
    return paths


def _bytes(rows, method, setting, view) -> float | None:
    sel = [r["bytes_uploaded"] + r["bytes_downloaded"] for r in rows
           if r["method"] == method and r["setting"] == setting and r["view"] == view
           and r.get("bytes_uploaded") is not None and r.get("bytes_downloaded") is not None]
    return statistics.fmean(sel) if sel else None


def _verdict(doc: _Doc, state, rows, settings, no_signal, view, metric, reference) -> None:
    """The grid's ``focus`` method against each ``against`` method, setting by setting: its
    score, the paired difference over seeds with its interval and verdict, and its bytes (up
    and down) as a fraction of the reference's."""
    focus, against = state.get("focus"), state.get("against") or []
    if not focus or not against:
        return
    doc.h(2, f"Verdict: {focus}, setting by setting")
    doc.p(f"{metric} ({_VIEW_NAMES[view]}) of `{focus}` and its paired difference over seeds "
          "against each method (95 % interval; 'better'/'worse' where it excludes 0); bytes: "
          f"what `{focus}` sends up and down per run as a fraction of `{reference}`'s. A "
          "setting that fails the learnability gate says 'no signal' and is not judged.")
    head = ["setting", focus, *(f"- {m}" for m in against), f"bytes / {reference}'s"]
    table = []
    for s in settings:
        mine = _values(rows, focus, s, view, metric)
        cells = [s, mean_ci(mine.values()).text()]
        for m in against:
            pr = paired(mine, _values(rows, m, s, view, metric))
            word = "no signal" if s in no_signal else pr.verdict
            cells.append(f"{pr.diff.text()} ({word})" if pr.diff.n else "-")
        mb, rb = _bytes(rows, focus, s, view), _bytes(rows, reference, s, view)
        cells.append(f"{mb / rb:.3f}" if mb is not None and rb else "-")
        table.append(cells)
    doc.table(head, table)


def _oneshot_diagnostics(doc: _Doc, rows, methods, settings, view) -> None:
    """The one-shot cells' diagnostics (:func:`fedmllm.bench.results.oneshot_diagnostics`),
    per method and setting: mean over seeds."""
    keys = ("rho_B", "rho_B_update", "dB_rel", "dW_rel", "client_lr")
    table = []
    for s in settings:
        groups: dict[tuple, list[str]] = {}  # methods of one training show the same values
        for m in methods:
            sel = [r for r in rows if r["method"] == m and r["setting"] == s
                   and r["view"] == view and r.get("client_lr") is not None]
            if not sel:
                continue
            cells = []
            for k in keys:
                vals = [r[k] for r in sel if isinstance(r.get(k), float)]
                cells.append(f"{statistics.fmean(vals):.3g}" if vals else "-")
            groups.setdefault(tuple(cells), []).append(m)
        table += [[", ".join(ms), s, *cells] for cells, ms in groups.items()]
    if not table:
        return
    doc.h(2, "One-shot diagnostics")
    doc.p("Mean over seeds; methods that merged the same uploads share a row. rho(B): the "
          "sign-conflict rate of the uploaded LoRA-B across "
          "clients (YOCO's rho_bar); rho(B - B0): the same for the updates; dB/B0 and "
          "dW/W0: the median over clients of ||B_i - B0|| / ||B0|| and "
          "||B_i A_i - B0 A0|| / ||B0 A0|| ('-' where B0 = 0); client lr: the median rate "
          "the clients chose (or were given).")
    doc.table(["methods", "setting", "rho(B)", "rho(B - B0)", "dB/B0", "dW/W0", "client lr"],
              table)
    spectra: dict[tuple, list[str]] = {}  # the same targets give the same spectrum
    for m in methods:
        sel = [r for r in rows if r["method"] == m and r["view"] == view
               and isinstance(r.get("base_s1_sr"), float)]
        if sel:
            values = tuple(f"{statistics.fmean(r[k] for r in sel):.3g}"
                           for k in ("base_s1_sr", "base_gap", "base_energy"))
            spectra.setdefault(values, []).append(m)
    base = [[", ".join(ms), *values] for values, ms in spectra.items()]
    if base:
        doc.h(3, "The base's spectrum at the LoRA rank")
        doc.p("Median over the targeted weights W of the base: s_1/s_r, the gap s_r/s_(r+1) "
              "(1 = none) and the share of ||W||^2 in the top r singular values: how much "
              "shared structure an SVD initialisation finds.")
        doc.table(["methods", "s_1/s_r", "s_r/s_(r+1)", "top-r energy"], base)


def _publish(doc: _Doc, target: Path) -> Path:
    import shutil

    figures = target.parent / f"{target.stem}_figures"
    figures.mkdir(parents=True, exist_ok=True)
    blocks = []
    for b in doc.blocks:
        if b[0] == "img":
            copy = figures / b[1].name
            shutil.copyfile(b[1], copy)
            b = ("img", copy, b[2])
        blocks.append(b)
    published = _Doc()
    published.blocks = blocks
    atomic_write_text(target, published.markdown(target.parent))
    return target
