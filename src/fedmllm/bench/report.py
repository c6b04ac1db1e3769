"""A sweep's report: ``report.md`` (figures beside it) and one self-contained ``report.html``.

Built from ``results.csv`` and the cells' ``metrics.jsonl`` (:mod:`fedmllm.bench.results`):

1. the headline table: mean and 95 % confidence interval over seeds of the grid's metric, per
   method and setting, shown within the metric's range [0, 1] and, with fewer than 3 seeds, as
   the min–max over the seeds (:meth:`fedmllm.bench.stats.Interval.text`); the AUROC beside it
   where the cells have one; the learnability gate, per method and setting (✗ where a method
   fails it; a setting has no signal only where the reference, or ``bench.signal``, fails);
   a one-line explanation under every table that says 'no signal';
2. the ranking: every method's mean rank over the settings, and paired comparisons across
   seeds against the reference method (the grid's ``bench.reference``, else the first method);
3. the grid's claims, each checked comparison by comparison: it holds where the paired
   difference (better - worse) is above 0 after Holm's correction over the claim's
   comparisons. Every verdict of the report (ranking, verdict table, claims) is the same test
   (:func:`fedmllm.bench.stats.paired`: the paired t test, or the permutation test where the
   comparison is two-valued) corrected over the same kind of family (:func:`_family`);
4. beside the mean: the seeds that reach ``bench.target``, the rounds to it and the area under
   the accuracy curve;
5. the modality views (image+text, image only, text only), client-side evaluation (mean, std,
   min and max over the clients' own held-out samples, where the cells measured it), and
   communication and compute (client steps) against accuracy;
6. figures: the radar across settings (one polygon per method, the FedMLLM paper's overview
   figure), per-round curves (every method, one y range), per-view bars, communication vs
   accuracy; error bars are the intervals the tables show;
7. the cells that failed, with their one-line errors.
"""

from __future__ import annotations

import base64
import html
import itertools
import json
import math
import shutil
import statistics
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from ..files import atomic_write_text
from .grid import TARGET
from .results import VIEWS, collect, read_curves, read_results, write_results
from .stats import ALPHA, GAP, MIN_SEEDS, UNIT, Interval, Paired, holm, mean_ci, paired
from .tune import tuning_section

__all__ = ["build_report"]

_VIEW_NAMES = {"image_text": "image+text", "image_only": "image only", "text_only": "text only"}

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;"
          "padding:0 1em;color:#222}table{border-collapse:collapse;margin:1em 0;"
          "font-size:14px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
          "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
          "img{max-width:100%}code{background:#f3f3f3;padding:0 3px}")


class _Doc:
    """The report's blocks, written as Markdown; the HTML is that Markdown rendered by
    markdown-it-py (CommonMark with tables, raw HTML escaped), its figures embedded."""

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

    def markdown(self, folder: Path, embed: bool = False) -> str:
        """The Markdown text; figures linked relative to ``folder``, or embedded as
        ``data:`` URIs (``embed``)."""
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
            elif embed:
                out.append(f"![{b[2]}](data:image/png;base64,"
                           f"{base64.b64encode(b[1].read_bytes()).decode()})")
            else:
                rel = b[1].relative_to(folder) if b[1].is_relative_to(folder) else b[1]
                out.append(f"![{b[2]}]({rel.as_posix()})")
            out.append("")
        return "\n".join(out)

    def html(self, title: str, folder: Path) -> str:
        """One self-contained HTML page."""
        from markdown_it import MarkdownIt

        body = MarkdownIt("commonmark", {"html": False}).enable("table")
        return "\n".join([
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
            body.render(self.markdown(folder, embed=True)), "</body></html>"])


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


def _over_settings(rows, method, settings, view, metric) -> Interval:
    """Per seed, the mean over the settings that seed has; then the interval over seeds."""
    per_seed: dict[int, list[float]] = {}
    for s in settings:
        for seed, v in _values(rows, method, s, view, metric).items():
            per_seed.setdefault(seed, []).append(v)
    full = [statistics.fmean(v) for v in per_seed.values() if len(v) == len(settings)]
    return _ci(full)


def _ci(values) -> Interval:
    """Mean and interval over seeds of a metric's values, shown within its range [0, 1]."""
    return mean_ci(values, UNIT)


def _paired(a: dict, b: dict) -> Paired:
    """:func:`~fedmllm.bench.stats.paired` of a metric's values (differences in [-1, 1])."""
    return paired(a, b, bounds=UNIT)


def _yerr(ivs: list[Interval]) -> list[list[float]]:
    """Error bars as matplotlib takes them (below, above the mean): the shown interval,
    so never past the metric's range; none where there is no interval (one seed)."""
    shown = [iv.shown() for iv in ivs]
    return [[iv.mean - lo for iv, (lo, _) in zip(ivs, shown)],
            [hi - iv.mean for iv, (_, hi) in zip(ivs, shown)]]


def _rows_of(rows, method, view, key, setting=None) -> list[dict]:
    """The rows of ``method`` (in ``setting``, when given) on ``view`` that have ``key``."""
    return [r for r in rows if r["method"] == method and r["view"] == view
            and (setting is None or r["setting"] == setting) and r.get(key) is not None]


@dataclass
class _Judged:
    """One comparison of a family (:func:`_family`): its paired tests, its Holm-adjusted p,
    the level Holm tests it at, and its verdict."""

    pr: Paired
    adjusted: float
    level: float
    word: str
    """'better', 'worse', 'no clear difference', 'too few seeds' or 'no signal'."""

    def interval(self) -> str:
        """The mean difference with its t interval at the Holm level (the level named; fewer
        than :data:`MIN_SEEDS` seeds show the min–max instead)."""
        if not self.pr.diff.n:
            return "-"
        iv = self.pr.at(self.level)
        return iv.text() if iv.n < MIN_SEEDS else f"{iv.text()} ({100 * self.level:.4g} %)"

    def holm_p(self) -> str:
        return "-" if math.isnan(self.adjusted) else f"{_p_text(self.adjusted)} " \
            f"({'perm.' if self.pr.two_valued else 't'})"


def _p_text(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _family(pairs: list[tuple[dict, dict, bool]]) -> list[_Judged]:
    """Paired comparisons read as one statement (a claim's comparisons; one method against the
    reference, or the focus against one method, over the settings): each ``(a, b, judged)``
    compared seed by seed (:func:`~fedmllm.bench.stats.paired`: the t test, the permutation
    test where two-valued), the p of the judged ones with two seeds or more corrected together
    by Holm (:func:`~fedmllm.bench.stats.holm`); the others say 'no signal'."""
    prs = [_paired(a, b) for a, b, _ in pairs]
    ps = [pr.p if judged and pr.diff.n >= 2 else math.nan
          for pr, (_, _, judged) in zip(prs, pairs, strict=True)]
    out = []
    for pr, (_, _, judged), (adjusted, alpha) in zip(prs, pairs, holm(ps), strict=True):
        level = 1 - (ALPHA if math.isnan(alpha) else alpha)
        out.append(_Judged(pr, adjusted, level, pr.word(adjusted) if judged else "no signal"))
    return out


@dataclass
class _Study:
    """What every section reads: the sweep's state, its rows and the learnability gate."""

    out: Path
    state: dict
    rows: list[dict]
    metric: str
    view: str
    methods: list[str]
    settings: list[str]
    reference: str
    gate_against: str | None = None
    """A method every other one must beat as well to pass the gate (``bench.gate_against``)."""
    target: float = TARGET
    signal: str = ""
    """The method whose gate gives a setting its signal (``bench.signal``, default the
    reference), or ``"any"``: any method passing it."""
    constant: dict[str, Interval] = field(default_factory=dict)
    """setting -> the constant answer's accuracy (accuracy grids only)."""
    passes: dict[str, list[str]] = field(default_factory=dict)
    """setting -> the methods that pass the learnability gate there (:func:`_gate`)."""
    no_signal: list[str] = field(default_factory=list)
    """Settings where the reference fails the gate: left out of the ranks and not judged."""

    def values(self, method: str, setting: str, view: str | None = None,
               metric: str | None = None) -> dict[int, float]:
        return _values(self.rows, method, setting, view or self.view, metric or self.metric)

    def interval(self, method: str, setting: str, metric: str | None = None) -> Interval:
        return _ci(self.values(method, setting, metric=metric).values())

    def over_settings(self, method: str, view: str | None = None) -> Interval:
        return _over_settings(self.rows, method, self.settings, view or self.view, self.metric)

    def fails(self, method: str, setting: str) -> bool:
        """Whether ``method`` fails the gate in ``setting`` (a setting without one: no)."""
        return setting in self.passes and method not in self.passes[setting]


def _study(out: Path, recollect: bool) -> _Study:
    """Read the sweep (re-collecting ``results.csv`` when asked) and apply the learnability
    gate (:func:`_gate`)."""
    state = json.loads((out / "bench.json").read_text())
    if recollect:
        write_results(out, collect(out))
    methods = state["methods"]
    against = state.get("gate_against")
    st = _Study(out, state, read_results(out / "results.csv"), state.get("metric", "accuracy"),
                state.get("view", "image_text"), methods, state["settings"],
                state.get("reference") or methods[0], against if against in methods else None,
                state.get("target", TARGET))
    signal = state.get("signal")
    st.signal = signal if signal == "any" or signal in methods else st.reference
    _gate(st)
    return st


def _gate(st: _Study) -> None:
    """The learnability gate of an accuracy grid, method by method: a method passes in a
    setting where its accuracy beats the constant majority answer and, with
    ``bench.gate_against``, that method's accuracy too (paired over seeds: a seed fixes the
    test set, hence its majority class; the 95 % t interval of the difference above 0,
    uncorrected: a floor, not a finding). A setting has no signal only where the reference
    fails (or ``bench.signal``'s method; with ``"any"``, where every method fails), never
    because a competitor does."""
    if st.metric != "accuracy":
        return
    for s in st.settings:
        const = {r["seed"]: r["constant"] for r in st.rows if r["setting"] == s
                 and r["view"] == st.view and isinstance(r.get("constant"), float)}
        if not const:
            continue
        st.constant[s] = _ci(const.values())
        floors = {None: const}
        if st.gate_against:
            floors[st.gate_against] = st.values(st.gate_against, s)
        st.passes[s] = [m for m in st.methods
                        if all(_paired(st.values(m, s), floor).diff.lo > 0
                               for name, floor in floors.items() if name != m)]
    st.no_signal = [s for s in st.passes if not st.passes[s]] if st.signal == "any" else \
        [s for s in st.settings if st.fails(st.signal, s)]


# ----------------------------------------------------------------------------- figures

def _figures(st: _Study) -> dict[str, Path]:
    """Draw the figures into ``figures/``; name -> file of those drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = st.out / "figures"
    figs.mkdir(exist_ok=True)
    cmap = plt.get_cmap("tab10" if len(st.methods) <= 10 else "tab20")
    colours = {m: cmap(i % 20) for i, m in enumerate(st.methods)}
    made: dict[str, Path] = {}
    for name, draw in (("radar", _radar), ("curves", _curves), ("views", _view_bars),
                       ("communication", _communication_plot)):
        fig = draw(plt, st, colours)
        if fig is not None:
            made[name] = figs / f"{name}.png"
            fig.savefig(made[name], **({"dpi": 110, "bbox_inches": "tight"}
                                       if name == "radar" else {"dpi": 100}))
            plt.close(fig)
    return made


def _radar(plt, st: _Study, colours: dict):
    """One spoke per setting (three or more), one polygon per method: the mean over seeds."""
    settings = st.settings
    if len(settings) < 3:
        return None
    angles = [2 * math.pi * i / len(settings) for i in range(len(settings))]
    fig = plt.figure(figsize=(7.5, 7.5))
    ax = fig.add_subplot(projection="polar")
    for m in st.methods:
        vals = [statistics.fmean(v) if (v := list(st.values(m, s).values())) else math.nan
                for s in settings]
        if all(math.isnan(v) for v in vals):
            continue
        ax.plot(angles + angles[:1], vals + vals[:1], color=colours[m], label=m, lw=1.6)
        ax.fill(angles + angles[:1], vals + vals[:1], color=colours[m], alpha=0.05)
    ax.set_xticks(angles)
    ax.set_xticklabels(settings, fontsize=11)
    ax.tick_params(axis="y", labelsize=9)
    ax.set_title(f"{st.metric} ({_VIEW_NAMES[st.view]}), mean over seeds", pad=20,
                 fontsize=13)
    ax.legend(loc="upper right", bbox_to_anchor=(1.32, 1.1), fontsize=10)
    return fig


def _curve(st: _Study, setting: str, method: str) -> dict[int, float]:
    """round -> the mean over seeds of ``method``'s evaluated rounds in ``setting``."""
    per_round: dict[int, list[float]] = {}
    for c in st.state["cells"]:
        if c["setting"] == setting and c["method"] == method:
            for r, v in read_curves(st.out, c["id"], st.view, st.metric):
                per_round.setdefault(r, []).append(v)
    return {r: statistics.fmean(v) for r, v in sorted(per_round.items())}


def _span(lo: float, hi: float, least: float = 0.1) -> tuple[float, float]:
    """A y range at least ``least`` high (a flat curve is not blown up into a slope) and
    within the metric's range [0, 1] with a margin."""
    if hi - lo < least:
        mid = (lo + hi) / 2
        lo, hi = mid - least / 2, mid + least / 2
    return max(lo, UNIT[0] - 0.02), min(hi, UNIT[1] + 0.02)


def _curves(plt, st: _Study, colours: dict):
    """Per-round curves: one panel per setting, every method in each, one y range for all.

    A method evaluated per round is a line of its mean over seeds; one evaluated only at the
    end (local-only) is its final mean over seeds, a diamond at the panel's last round."""
    settings, methods = st.settings, st.methods
    curves = {(s, m): _curve(st, s, m) for s in settings for m in methods}
    if not any(curves.values()):
        return None
    ncol = min(2, len(settings))  # 10.4 inches at most: the page shows it at full size
    nrow = math.ceil(len(settings) / ncol)
    legend = 0.4 * math.ceil(len(methods) / 4) + 0.2  # inches below the panels
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 3.6 * nrow + legend),
                             squeeze=False, sharey=True)
    name = f"{st.metric} ({_VIEW_NAMES[st.view]})"
    for i, s in enumerate(settings):
        ax = axes[i // ncol][i % ncol]
        last = max((r for m in methods for r in curves[s, m]), default=1)
        for k, m in enumerate(methods):  # styles tell apart methods whose lines coincide
            if curves[s, m]:
                xs = list(curves[s, m])
                ax.plot(xs, list(curves[s, m].values()), marker="os^vPX*"[k % 7], ms=5, lw=1.8,
                        ls=("-", "--", "-.", ":")[k % 4], color=colours[m], label=m)
            elif not math.isnan(final := st.interval(m, s).mean):
                ax.plot([last], [final], marker="D", ms=8, ls="none", color=colours[m],
                        label=f"{m} (final only)")
        ax.set_title(s, fontsize=12)
        ax.set_xlabel("round", fontsize=11)
        ax.set_ylabel(name, fontsize=11)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.tick_params(labelsize=10, labelleft=True)
        ax.grid(alpha=0.3)
    for j in range(len(settings), nrow * ncol):
        axes[j // ncol][j % ncol].axis("off")
    axes[0][0].set_ylim(*_span(*axes[0][0].get_ylim()))  # shared by every panel
    handles: dict[str, object] = {}
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(list(handles.values()), list(handles), loc="lower center",
               ncol=min(4, len(handles)), fontsize=11, frameon=False)
    fig.suptitle(f"{name} per round, mean over seeds", fontsize=13)
    fig.tight_layout(rect=(0, legend / fig.get_figheight(), 1, 0.97))
    return fig


def _view_bars(plt, st: _Study, colours: dict):
    """Per-view bars: the mean over settings, the interval over seeds of that mean."""
    methods, metric = st.methods, st.metric
    fig, ax = plt.subplots(figsize=(max(6.4, 1.2 * len(methods) + 2), 4.2))
    width = 0.8 / len(VIEWS)
    for j, v in enumerate(VIEWS):
        ivs = [st.over_settings(m, v) for m in methods]
        xs = [i + (j - 1) * width for i in range(len(methods))]
        ax.bar(xs, [iv.mean for iv in ivs], width, yerr=_yerr(ivs),
               label=_VIEW_NAMES[v], capsize=2)
    ax.set_xticks(range(len(methods)), [textwrap.fill(m, 12) for m in methods], fontsize=10)
    ax.set_ylabel(metric, fontsize=11)
    ax.tick_params(axis="y", labelsize=10)
    ax.set_title(f"{metric} per modality view (mean over settings; interval over seeds)",
                 fontsize=11)
    ax.legend(fontsize=10)
    fig.tight_layout()
    return fig


def _communication_plot(plt, st: _Study, colours: dict):
    """Bytes sent per run (log scale) against the headline metric, one point per method."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    plotted = False
    for m in st.methods:
        mb = [(r["bytes_uploaded"] or 0) + (r["bytes_downloaded"] or 0)
              for r in _rows_of(st.rows, m, st.view, "bytes_uploaded")]
        iv = st.over_settings(m)
        if mb and not math.isnan(iv.mean):
            plotted = True
            x = max(statistics.fmean(mb) / 1e6, 1e-3)
            ax.errorbar([x], [iv.mean], yerr=_yerr([iv]), fmt="o", color=colours[m],
                        capsize=3, label=m)
    if not plotted:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_xlabel("MB sent per run (up + down; 0 shown at 0.001)", fontsize=11)
    ax.set_ylabel(f"{st.metric} ({_VIEW_NAMES[st.view]})", fontsize=11)
    ax.tick_params(labelsize=10)
    ax.set_title(f"communication vs {st.metric} (mean over settings)", fontsize=11)
    ax.legend(fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- the report

def build_report(out: str | Path, recollect: bool = True,
                 publish: str | Path | None = None) -> dict[str, Path]:
    """Write ``results.csv`` (re-read from the run folders when ``recollect``), ``report.md``,
    ``report.html`` and ``figures/`` in the sweep folder ``out``; return their paths.

    ``publish`` (a ``.md`` path, e.g. ``docs/results.md``) also writes the Markdown report
    there, its figures copied beside it into ``<name>_figures/``: a document for the
    repository, made by one command."""
    out = Path(out)
    st = _study(out, recollect)
    doc = _Doc()
    title = f"Benchmark: {Path(st.state['grid']).name}"
    doc.h(1, title)
    _intro(doc, st)
    figs = _figures(st)
    ranks = _rank_settings(st)
    _headline(doc, st, ranks)
    _spread_and_extras(doc, st)
    _gate_table(doc, st)
    tuning_section(doc, out)
    doc.img(figs.get("radar", Path()), "radar across settings")
    _verdict(doc, st)
    _ranking(doc, st, ranks)
    _claims(doc, st)
    _targets(doc, st)
    _views(doc, st, figs)
    _communication(doc, st, figs)
    _privacy(doc, st)
    if "curves" in figs:
        doc.h(2, "Per-round curves")
        doc.img(figs["curves"], "per-round curves")
    _oneshot_diagnostics(doc, st)
    if st.state.get("notes"):
        try:
            doc.raw(Path(st.state["notes"]).read_text())
        except OSError:
            doc.p(f"(notes file {st.state['notes']} not found)")
    unfinished = [r for r in st.rows if r["status"] != "done"]  # one row per such cell
    unfinished.sort(key=lambda r: r["status"] != "failed")  # the failed first
    if unfinished:
        doc.h(2, "Cells not finished")
        doc.table(["cell", "status", "error"],
                  [[r["cell"], r["status"], r.get("error") or ""] for r in unfinished])
    paths = {"results": out / "results.csv", "markdown": out / "report.md",
             "html": out / "report.html"}
    atomic_write_text(paths["markdown"], doc.markdown(out))
    atomic_write_text(paths["html"], doc.html(title, out))
    if publish is not None:
        paths["published"] = _publish(doc, Path(publish))
    return paths


def _intro(doc: _Doc, st: _Study) -> None:
    """The description, the cells and what became of them, and how to read the numbers."""
    state, seeds = st.state, st.state["seeds"]
    done = len({r["cell"] for r in st.rows if r["status"] == "done"})
    failed = sum(r["status"] == "failed" for r in st.rows)  # one row per unfinished cell
    pending = sum(r["status"] not in ("done", "failed") for r in st.rows)
    if state.get("description"):
        doc.p(state["description"])
    doc.p(f"{len(state['cells'])} cells: {len(st.settings)} settings x {len(st.methods)} "
          f"methods x {len(seeds)} seeds (seeds {', '.join(map(str, seeds))}); {done} done, "
          f"{failed} failed, {pending} not run. Headline: {st.metric} on the "
          f"{_VIEW_NAMES[st.view]} view of the test set. A seed fixes the data, the "
          "partition, the test set and every random draw of a cell. Rebuild with `fedmllm "
          f"report {st.out}`; rerun any cell with the command in `bench.json`.")
    doc.p(_INTERVALS)
    doc.p(_HOW_TO_READ.format(ref=st.reference, floor=_floor(st),
                              whose="every method" if st.signal == "any" else _whose(st)))


_INTERVALS = (
    "Intervals over seeds: `mean ± half-width` is the 95 % Student-t interval; `mean [lo, hi]` "
    "the same interval clipped to the metric's range (0 to 1; -1 to 1 for a difference). "
    f"**With fewer than {MIN_SEEDS} seeds** a t interval says little (two seeds: 12.7 times the "
    "standard error), so `mean (min–max)` gives the smallest and the largest value over the "
    "seeds instead (`mean (every seed)` where they agree): a range, not a confidence interval. "
    "Verdicts and claims use the tests below.")

_HOW_TO_READ = (
    "**How to read the verdicts.** Two methods are compared seed by seed: the paired "
    "difference over the seeds both have. The paired t test decides, except where the "
    "comparison is *two-valued* (each side's values in at most two groups, values at most "
    f"{GAP} apart being one, and one side in two: a cell either learns the task or does not), "
    "where the paired permutation test (sign flips, exact up to 16 seeds) decides, with the "
    "sign test beside it; with n seeds these cannot go below p = 2/2^n (5 seeds: 0.0625). The "
    "comparisons of one claim, and those of one method against `{ref}` (or of the focus "
    "against one method) over the settings, are corrected together by Holm's step-down "
    "procedure: a verdict holds where the adjusted p is below 0.05, and the difference's "
    "interval is given at the level Holm tests it at. The learnability gate is a floor, not a "
    "finding: a method passes in a setting where its paired 95 % t interval against {floor} "
    "lies above 0 (uncorrected); a setting has no signal only where {whose} fails.")


def _floor(st: _Study) -> str:
    """What the gate asks a method to beat."""
    return "the constant answer" + (f" and `{st.gate_against}`" if st.gate_against else "")


def _whose(st: _Study) -> str:
    """Whose gate gives a setting its signal (``bench.signal``)."""
    if st.signal == "any":
        return "any method"
    return f"the reference `{st.signal}`" if st.signal == st.reference else f"`{st.signal}`"


def _no_signal_line(st: _Study) -> str:
    """The one line under every table that says 'no signal': what it means, exactly as
    :func:`_gate` decides it."""
    who = "no method beats" if st.signal == "any" else f"{_whose(st)} does not beat"
    return (f"*no signal* ({', '.join(st.no_signal)}): {who} {_floor(st)} (the test set's most "
            "frequent answer; paired over seeds, 95 % interval above 0), so these numbers "
            "cannot tell the methods apart: not ranked, not judged.")


def _fails_line(st: _Study) -> str:
    return (f"✗: fails the learnability gate in that setting (not above {_floor(st)}; paired "
            "over seeds, 95 % interval above 0): shown, ranked and judged like the others.")


def _rank_settings(st: _Study) -> dict[str, list[float]]:
    """method -> its rank in each setting with a signal (1 = best)."""
    ranks: dict[str, list[float]] = {m: [] for m in st.methods}
    for s in st.settings:
        if s in st.no_signal:
            continue
        means = {m: st.interval(m, s).mean for m in st.methods}
        for m, r in _ranks({m: v for m, v in means.items() if not math.isnan(v)}).items():
            ranks[m].append(r)
    return ranks


def _headline(doc: _Doc, st: _Study, ranks: dict[str, list[float]]) -> None:
    """1. The headline table: mean and interval per method and setting (✗ where the method
    fails the gate), and the mean rank; the AUROC beside it where the cells have one."""
    auroc = _auroc_beside(st)
    doc.h(2, f"{st.metric}{' and auroc' if auroc else ''} ({_VIEW_NAMES[st.view]}) per method "
          "and setting")
    head = ["method", *(f"{s} (no signal)" if s in st.no_signal else s for s in st.settings),
            "mean rank"]
    doc.table(head, [[m, *(st.interval(m, s).text() + (" ✗" if st.fails(m, s) else "")
                           for s in st.settings),
                      f"{statistics.fmean(ranks[m]):.1f}" if ranks[m] else "-"]
                     for m in st.methods])
    if st.no_signal:
        doc.p(_no_signal_line(st))
    if any(st.fails(m, s) for m in st.methods for s in st.settings):
        doc.p(_fails_line(st))
    if any(st.interval(m, s).spread for m in st.methods for s in st.settings):
        doc.p(f"Note: with fewer than {MIN_SEEDS} seeds, `mean (min–max)` is the range over "
              "the seeds, not a 95 % interval.")
    if auroc:
        _metric_table(doc, st, "auroc")


def _auroc_beside(st: _Study) -> bool:
    """Whether the headline section shows the AUROC beside the metric: the cells have one."""
    return st.metric != "auroc" and any(
        isinstance(r.get("auroc"), float) for r in st.rows if r["view"] == st.view)


def _metric_table(doc: _Doc, st: _Study, metric: str) -> None:
    doc.h(3, f"{metric} ({_VIEW_NAMES[st.view]})")
    doc.table(["method", *st.settings],
              [[m, *(st.interval(m, s, metric).text() for s in st.settings)]
               for m in st.methods])


def _spread_and_extras(doc: _Doc, st: _Study) -> None:
    """The standard deviation over seeds (with several seeds), and a table per further
    metric of the grid (the AUROC is in the headline section already)."""
    if len(st.state["seeds"]) > 1:
        doc.h(3, f"{st.metric}: mean (standard deviation over seeds)")
        sd_rows = []
        for m in st.methods:
            cells = []
            for s in st.settings:
                iv = st.interval(m, s)
                cells.append("-" if not iv.n else f"{iv.mean:.3f}" if iv.n == 1 else
                             f"{iv.mean:.3f} ({iv.sd:.3f})")
            sd_rows.append([m, *cells])
        doc.table(["method", *st.settings], sd_rows)
    for extra in st.state.get("metrics", []):
        if extra != st.metric and not (extra == "auroc" and _auroc_beside(st)):
            _metric_table(doc, st, extra)


def _gate_table(doc: _Doc, st: _Study) -> None:
    if not st.constant:
        return
    doc.h(3, "Learnability gate")
    doc.p(f"A method passes in a setting where its accuracy beats {_floor(st)} (the constant "
          "answer: always giving the test set's most frequent answer; paired over seeds, 95 % "
          f"interval above 0). A setting has a signal where {_whose(st)} passes; a method "
          "that fails is marked ✗ in the headline table, not dropped.")
    doc.table(["setting", "constant answer", "pass", "fail"],
              [[s, st.constant[s].text(), ", ".join(st.passes[s]) or "none",
                ", ".join(m for m in st.methods if m not in st.passes[s]) or "none"]
               for s in st.settings if s in st.constant])
    if st.no_signal:
        doc.p(_no_signal_line(st))


def _against_reference(st: _Study) -> dict[str, list[_Judged]]:
    """method -> its comparison against the reference in each setting, Holm over the settings
    with a signal (the same family as a claim 'reference beats method')."""
    ref = st.reference
    return {m: _family([(st.values(m, s), st.values(ref, s), s not in st.no_signal)
                        for s in st.settings]) for m in st.methods if m != ref}


def _ranking(doc: _Doc, st: _Study, ranks: dict[str, list[float]]) -> None:
    """2. Every method's mean rank, and paired comparisons against the reference."""
    ref = st.reference
    doc.h(2, "Ranking")
    order = sorted((m for m in st.methods if ranks[m]), key=lambda m: statistics.fmean(ranks[m]))
    doc.p(f"Mean rank over the settings (1 = best). Paired comparison against `{ref}` "
          "per setting: mean difference over the seeds both have, its interval at the Holm "
          "level, wins/ties/losses and the tests; 'better'/'worse' where the Holm-adjusted p "
          "(over the method's settings with a signal) is below 0.05.")
    judged = _against_reference(st)
    rank_rows = []
    for m in order:
        words = [j.word for j in judged.get(m, ()) if j.pr.diff.n and j.word != "no signal"]
        vs = "(reference)" if m == ref else (
            f"better in {words.count('better')}, worse in {words.count('worse')}, unclear in "
            f"{len(words) - words.count('better') - words.count('worse')}")
        diffs = [j.pr.diff.mean for j in judged.get(m, ())
                 if j.pr.diff.n and j.word != "no signal"]
        mean_diff = f"{statistics.fmean(diffs):+.3f}" if diffs else "-"
        rank_rows.append([m, f"{statistics.fmean(ranks[m]):.2f}", mean_diff, vs])
    doc.table(["method", "mean rank", f"mean diff vs {ref}", "settings"], rank_rows)
    detail = []
    for (i, s), m in itertools.product(enumerate(st.settings), st.methods):
        if m != ref and (j := judged[m][i]).pr.diff.n:
            detail.append([s, m, j.interval(), f"{j.pr.wins}/{j.pr.ties}/{j.pr.losses}",
                           j.pr.tests(), j.holm_p(), j.word])
    if detail:
        doc.h(3, f"Paired differences against {ref}, per setting")
        doc.table(["setting", "method", "difference", "wins/ties/losses", "tests (p)",
                   "Holm p", "verdict"], detail)
        if any(row[-1] == "no signal" for row in detail):
            doc.p(_no_signal_line(st))


_CLAIM_WORDS = {"better": "holds", "worse": "reversed", "no clear difference": "not shown"}


def _claims(doc: _Doc, st: _Study) -> None:
    """3. The grid's claims, each checked comparison by comparison: it holds where the paired
    difference (better - worse) is above 0 after Holm's correction over the claim's
    comparisons; 'reversed' where it is below."""
    if not st.state.get("claims"):
        return
    doc.h(2, "Claims")
    for claim in st.state["claims"]:
        cm, cv = claim.get("metric") or st.metric, claim.get("view") or st.view
        sides = []
        for (mb, sb), (mw, sw) in _claim_pairs(claim, st.methods, st.settings):
            a, b = st.values(mb, sb, cv, cm), st.values(mw, sw, cv, cm)
            if a and b:
                sides.append(((mb, sb, a), (mw, sw, b)))
        judged = _family([(a, b, sb not in st.no_signal and sw not in st.no_signal)
                          for (_, sb, a), (_, sw, b) in sides])
        lines = [[_label(mb, sb, st.settings), _ci(a.values()).text(),
                  _label(mw, sw, st.settings), _ci(b.values()).text(), j.interval(),
                  j.pr.tests(), j.holm_p(), _CLAIM_WORDS.get(j.word, j.word)]
                 for ((mb, sb, a), (mw, sw, b)), j in zip(sides, judged, strict=True)]
        words = [line[-1] for line in lines]
        checked = sum(w != "no signal" for w in words)
        doc.h(3, claim["name"])
        doc.p(f"{cm} ({_VIEW_NAMES[cv]}): holds in {words.count('holds')} of {checked} "
              f"comparisons, reversed in {words.count('reversed')} (paired difference better - "
              f"worse, Holm-corrected over the {checked}; settings with no signal, by the "
              "learnability gate, are not counted).")
        doc.table(["better", cm, "worse", cm, "paired difference", "tests (p)", "Holm p",
                   "verdict"], lines)
        if "no signal" in words:
            doc.p(_no_signal_line(st))


def _views(doc: _Doc, st: _Study, figs: dict[str, Path]) -> None:
    """4. The modality views, and the client-side evaluation where the cells measured it."""
    doc.h(2, "Modality views")
    doc.p(f"{st.metric} on the test set seen with image+text, image only and text only: mean "
          "over the settings, interval over seeds.")
    doc.table(["method", *(_VIEW_NAMES[v] for v in VIEWS)],
              [[m, *(st.over_settings(m, v).text() for v in VIEWS)] for m in st.methods])
    doc.img(figs.get("views", Path()), "per modality view")
    client_rows = []
    for m, s in itertools.product(st.methods, st.settings):
        sel = _rows_of(st.rows, m, st.view, "client_accuracy_mean", s)
        if sel:
            client_rows.append([m, s, *(_ci([r[f"client_accuracy_{k}"] for r in sel]).text()
                                        for k in ("mean", "std", "min", "max"))])
    if client_rows:
        doc.h(2, "Client-side evaluation (fairness)")
        doc.p("The global model on each client's own held-out samples (as the client holds "
              "them: its modalities); accuracy mean, std, min and max over the clients, each "
              "averaged over seeds with its interval.")
        doc.table(["method", "setting", "mean", "std", "min", "max"], client_rows)


def _communication(doc: _Doc, st: _Study, figs: dict[str, Path]) -> None:
    """Megabytes up and down per run, as a fraction of the reference's, beside the metric;
    and the compute: the client steps a run ran (``summary.json``'s ``compute.client_steps``),
    where the runs count them."""
    comm_rows = []
    counted = any(isinstance(r.get("client_steps"), float) for r in st.rows)
    for m in st.methods:
        sel = _rows_of(st.rows, m, st.view, "bytes_uploaded")
        if sel:
            up = statistics.fmean(r["bytes_uploaded"] for r in sel) / 1e6
            down = statistics.fmean(r["bytes_downloaded"] for r in sel) / 1e6
            secs = [r["train_seconds"] for r in sel if r.get("train_seconds") is not None]
            steps = [r["client_steps"] for r in sel if isinstance(r.get("client_steps"), float)]
            comm_rows.append([m, f"{up:.2f}", f"{down:.2f}", up + down,
                              st.over_settings(m).text(),
                              f"{statistics.fmean(secs):.1f}" if secs else "-",
                              *([f"{statistics.fmean(steps):.0f}" if steps else "-"]
                                if counted else [])])
    ref_total = next((r[3] for r in comm_rows if r[0] == st.reference), None)
    for r in comm_rows:
        r[3] = f"{r[3] / ref_total:.3f}" if ref_total else "-"
    doc.h(2, "Communication")
    if st.state.get("share_uploads"):
        doc.p("Train seconds of 0: the cell loaded its clients' uploads from a cell that "
              "trained them (share_uploads); that cell's row carries the cost.")
    doc.table(["method", "MB up per run", "MB down per run", f"bytes / {st.reference}'s",
               st.metric, "train s per run", *(["client steps per run"] if counted else [])],
              comm_rows)
    doc.img(figs.get("communication", Path()), "communication vs accuracy")


def _privacy(doc: _Doc, st: _Study) -> None:
    """The privacy spent beside the metric, per method and setting, for the cells with a DP
    mechanism (``summary.json``'s ``privacy.epsilon``): the privacy-utility table."""
    rows = []
    for m in st.methods:
        for s in st.settings:
            sel = _rows_of(st.rows, m, st.view, "privacy_epsilon", s)
            if sel:
                eps = max(r["privacy_epsilon"] for r in sel)
                rows.append([m, s, f"{eps:.4g}", st.interval(m, s).text()])
    if rows:
        doc.h(2, "Privacy")
        doc.p("Client-level ε at each run's fl.privacy.delta after all its rounds (the largest "
              "over seeds; dp-accounting's RDP accountant, see docs/algorithms.md), beside the "
              "metric.")
        doc.table(["method", "setting", "ε", st.metric], rows)


def _bytes(rows, method, setting, view) -> float | None:
    sel = [r["bytes_uploaded"] + r["bytes_downloaded"]
           for r in _rows_of(rows, method, view, "bytes_uploaded", setting)
           if r.get("bytes_downloaded") is not None]
    return statistics.fmean(sel) if sel else None


def _verdict(doc: _Doc, st: _Study) -> None:
    """The grid's ``focus`` method against each ``against`` method, setting by setting: its
    score, the paired difference over seeds (Holm over the settings, per method against) with
    its verdict, and its bytes (up and down) as a fraction of the reference's."""
    focus, against = st.state.get("focus"), st.state.get("against") or []
    if not focus or not against:
        return
    ref, view = st.reference, st.view
    doc.h(2, f"Verdict: {focus}, setting by setting")
    doc.p(f"{st.metric} ({_VIEW_NAMES[view]}) of `{focus}` and its paired difference over "
          "seeds against each method (interval at the Holm level; Holm-adjusted p over the "
          "settings; 'better'/'worse' where it is below 0.05); bytes: what "
          f"`{focus}` sends up and down per run as a fraction of `{ref}`'s. A setting with no "
          "signal (the learnability gate) says so and is not judged.")
    mine = {s: st.values(focus, s) for s in st.settings}
    judged = {m: _family([(mine[s], st.values(m, s), s not in st.no_signal)
                          for s in st.settings]) for m in against}
    table = []
    for i, s in enumerate(st.settings):
        cells = [s, _ci(mine[s].values()).text() + (" ✗" if st.fails(focus, s) else "")]
        for m in against:
            j = judged[m][i]
            p = "" if math.isnan(j.adjusted) else f"p {j.holm_p()}, "
            cells.append(f"{j.interval()} ({p}{j.word})" if j.pr.diff.n else "-")
        mb, rb = _bytes(st.rows, focus, s, view), _bytes(st.rows, ref, s, view)
        cells.append(f"{mb / rb:.3f}" if mb is not None and rb else "-")
        table.append(cells)
    doc.table(["setting", focus, *(f"- {m}" for m in against), f"bytes / {ref}'s"], table)
    if st.no_signal:
        doc.p(_no_signal_line(st))


def _median_rounds(values) -> str:
    """The median over seeds of the rounds to the target, a seed that never reaches it
    counted as later than any round: ``never`` where the median is such a seed."""
    rounds = [math.inf if v == "never" else v for v in values if v is not None]
    if not rounds:
        return "-"
    med = statistics.median(rounds)
    return "never" if math.isinf(med) else f"{med:g}"


def _targets(doc: _Doc, st: _Study) -> None:
    """Beside the mean, per method and setting: the share of seeds whose accuracy reaches
    ``bench.target``, the rounds to it, and the area under the accuracy curve (mean and
    interval over seeds; :mod:`fedmllm.bench.results`)."""
    share, rounds, area = [], [], []
    for m in st.methods:
        cells = [_rows_of(st.rows, m, st.view, "accuracy", s) for s in st.settings]
        share.append([m, *(f"{sum(r['accuracy'] >= st.target for r in c)}/{len(c)}" if c
                           else "-" for c in cells)])
        rounds.append([m, *(_median_rounds(r.get("rounds_to_target") for r in c)
                            for c in cells)])
        area.append([m, *(_ci([r["accuracy_area"] for r in c
                               if isinstance(r.get("accuracy_area"), float)]).text()
                          for c in cells)])
    if not any(c != "-" for row in share for c in row[1:]):
        return
    doc.h(2, f"Reaching accuracy {st.target:g}, and the accuracy curve")
    doc.p(f"Accuracy ({_VIEW_NAMES[st.view]}) against the target {st.target:g} "
          "(`bench.target`; the default 0.9 lies between what one modality of the synthetic "
          "tasks allows, 0.8, and the joint image+text rule, 1.0): the seeds whose final "
          "accuracy reaches it; the rounds to it (the first evaluated round at or above it, "
          "median over seeds, 'never' where most seeds never reach it); the area under the "
          "accuracy curve (trapezoid over the evaluated rounds, first to last mapped to 0 to "
          "1: the curve's mean; the final value where one round was evaluated).")
    doc.h(3, f"Seeds reaching {st.target:g}")
    doc.table(["method", *st.settings], share)
    if any(c != "-" for row in rounds for c in row[1:]):
        doc.h(3, f"Rounds to {st.target:g} (median over seeds)")
        doc.table(["method", *st.settings], rounds)
        doc.h(3, "Area under the accuracy curve")
        doc.table(["method", *st.settings], area)


def _oneshot_diagnostics(doc: _Doc, st: _Study) -> None:
    """The one-shot cells' diagnostics (:func:`fedmllm.bench.results.oneshot_diagnostics`),
    per method and setting: mean over seeds."""
    keys = ("rho_B", "rho_B_update", "dB_rel", "dW_rel", "client_lr")
    table = []
    for s in st.settings:
        groups: dict[tuple, list[str]] = {}  # methods of one training show the same values
        for m in st.methods:
            sel = _rows_of(st.rows, m, st.view, "client_lr", s)
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
    _oneshot_spectra(doc, st)


def _oneshot_spectra(doc: _Doc, st: _Study) -> None:
    """The base's spectrum at the LoRA rank, per group of methods that share it."""
    spectra: dict[tuple, list[str]] = {}  # the same targets give the same spectrum
    for m in st.methods:
        sel = [r for r in st.rows if r["method"] == m and r["view"] == st.view
               and isinstance(r.get("base_s1_sr"), float)]
        if sel:
            values = tuple(f"{statistics.fmean(r[k] for r in sel):.3g}"
                           for k in ("base_s1_sr", "base_gap", "base_energy"))
            spectra.setdefault(values, []).append(m)
    if spectra:
        doc.h(3, "The base's spectrum at the LoRA rank")
        doc.p("Median over the targeted weights W of the base: s_1/s_r, the gap s_r/s_(r+1) "
              "(1 = none) and the share of ||W||^2 in the top r singular values: how much "
              "shared structure an SVD initialisation finds.")
        doc.table(["methods", "s_1/s_r", "s_r/s_(r+1)", "top-r energy"],
                  [[", ".join(ms), *values] for values, ms in spectra.items()])


def _publish(doc: _Doc, target: Path) -> Path:
    """Write the Markdown report to ``target``, its figures copied beside it."""
    figures = target.parent / f"{target.stem}_figures"
    figures.mkdir(parents=True, exist_ok=True)
    published = _Doc()
    for b in doc.blocks:
        if b[0] == "img":
            copy = figures / b[1].name
            shutil.copyfile(b[1], copy)
            b = ("img", copy, b[2])
        published.blocks.append(b)
    atomic_write_text(target, published.markdown(target.parent))
    return target
