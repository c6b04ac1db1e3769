"""Learning curves: the per-run plot (``metrics.png``) and ``fedmllm plot`` (several runs).

Both draw two panels side by side, the test metric per round on the left and the clients'
mean train loss per round on the right, with integer round ticks:

- :func:`plot_metrics` (one run, written by every run): one line per modality view, each in its
  own colour, style and marker, with a legend; the loss with its min-max band over the round's
  clients; the title names the algorithm, dataset and scenario.
- :func:`plot_runs` (``fedmllm plot RUN [RUN ...]``): one colour per run, labelled by the run
  folder's name and its algorithm; one view and one metric (``accuracy``, ``auroc`` or
  ``macro_f1``).

The figures are built with :class:`matplotlib.figure.Figure` (no pyplot state, no backend
switch) and returned by :func:`metrics_figure` / :func:`runs_figure`, so tests inspect the axes.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from ..errors import OutputError
from ..files import atomic_write_bytes

#: Modality view -> (colour, line style, marker) in the per-run plot.
VIEW_STYLES = {"image_text": ("tab:blue", "-", "o"), "image_only": ("tab:orange", "--", "s"),
               "text_only": ("tab:green", ":", "^")}
METRICS = ("accuracy", "auroc", "macro_f1")
METRIC_LABELS = {"accuracy": "accuracy", "auroc": "AUROC", "macro_f1": "macro-F1"}
FORMATS = ("png", "svg", "pdf")
LOSS_COLOUR = "tab:red"


def _metric_value(m: dict, metric: str):
    """``m[metric]``; for VQA (no ``accuracy``) the overall accuracy stands for accuracy."""
    v = m.get(metric)
    if v is None and metric == "accuracy":
        v = m.get("overall")
    return v if isinstance(v, (int, float)) else None


def _series(rows: list[dict], view: str, metric: str) -> list[tuple[int, float]]:
    pts = []
    for r in rows:
        ev = r.get("eval")
        if not isinstance(ev, dict):
            continue
        m = (ev.get("per_modality") or {}).get(view)
        v = _metric_value(m, metric) if isinstance(m, dict) else None
        if v is not None:
            pts.append((r["round"], v))
    return pts


def _loss(rows: list[dict]) -> tuple[list[int], list[float], list[float], list[float]]:
    rounds, mean, lo, hi = [], [], [], []
    for r in rows:
        if r.get("train_loss_mean") is None:
            continue
        per = [v for v in (r.get("train_loss") or {}).values() if isinstance(v, (int, float))]
        rounds.append(r["round"])
        mean.append(r["train_loss_mean"])
        lo.append(min(per, default=r["train_loss_mean"]))
        hi.append(max(per, default=r["train_loss_mean"]))
    return rounds, mean, lo, hi


def _new_figure():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, 4.0), dpi=110)
    ax_metric, ax_loss = fig.subplots(1, 2)
    return fig, ax_metric, ax_loss


def _finish_axes(ax_metric, ax_loss, metric: str) -> None:
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_metric, ax_loss):
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.grid(alpha=0.3)
        lo, hi = ax.dataLim.intervalx
        if ax.has_data() and hi - lo < 1:  # a single round: room around it
            ax.set_xlim(lo - 0.5, hi + 0.5)
    ax_metric.set_ylabel(f"test {METRIC_LABELS.get(metric, metric)}")
    ax_metric.set_ylim(-0.02, 1.02)
    ax_loss.set_ylabel("train loss (mean over the round's clients)")


def _note(ax, text: str, y: float = 0.5) -> None:
    ax.text(0.5, y, text, ha="center", va="center" if y == 0.5 else "bottom",
            transform=ax.transAxes, fontsize=9, color="0.4", wrap=True)


def metrics_figure(rows: list[dict], title: str = "", metric: str = "accuracy"):
    """The per-run figure (see the module docstring)."""
    fig, ax_m, ax_l = _new_figure()
    drawn = 0
    for view, (colour, style, marker) in VIEW_STYLES.items():
        pts = _series(rows, view, metric)
        if pts:
            ax_m.plot(*zip(*pts), linestyle=style, color=colour, marker=marker, label=view)
            drawn += 1
    if drawn:
        ax_m.legend(title="view", loc="best", fontsize=9, title_fontsize=9)
    else:
        _note(ax_m, f"no test {METRIC_LABELS.get(metric, metric)} per round\n"
                    "(local-only runs evaluate each client's adapter at the end: "
                    "summary.json)")
    rounds, mean, lo, hi = _loss(rows)
    if rounds:
        ax_l.plot(rounds, mean, color=LOSS_COLOUR, marker=".", label="mean over clients")
        if len(rounds) == 1 and lo[0] != hi[0]:  # one round (one-shot): a bar, not a band
            ax_l.errorbar(rounds, mean, yerr=[[mean[0] - lo[0]], [hi[0] - mean[0]]],
                          color=LOSS_COLOUR, alpha=0.4, capsize=6, linestyle="none",
                          label="min-max over clients")
        elif any(a != b for a, b in zip(lo, hi)):
            ax_l.fill_between(rounds, lo, hi, color=LOSS_COLOUR, alpha=0.15,
                              label="min-max over clients")
        ax_l.legend(loc="best", fontsize=9)
    else:
        _note(ax_l, "no client trained")
    _finish_axes(ax_m, ax_l, metric)
    ax_m.set_title(f"test {METRIC_LABELS.get(metric, metric)} per view", fontsize=11)
    ax_l.set_title("train loss", fontsize=11)
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return fig


def save_figure(fig, out: str | Path) -> Path:
    """``fig`` written atomically to ``out`` in the format its suffix names (png, svg, pdf)."""
    out = Path(out)
    fmt = out.suffix.lower().lstrip(".") or "png"
    if fmt not in FORMATS:
        raise OutputError(f"{out}: cannot write a .{fmt} plot (use .png, .svg or .pdf)")
    if out.is_dir():
        raise OutputError(f"{out}: is a folder; name the plot file (e.g. {out / 'plot.png'})")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt)
        return atomic_write_bytes(out, buf.getvalue())
    except OSError as e:
        raise OutputError(f"{e.filename or out}: cannot write the plot ({e.strerror})") from None


def plot_metrics(rows: list[dict], out: Path, title: str = "") -> Path:
    """Test accuracy per view and mean client train loss per round, as a PNG at ``out``."""
    return save_figure(metrics_figure(rows, title), out)


# ----------------------------------------------------------------------------- several runs

def _read_run(run: Path) -> tuple[list[dict], dict]:
    """``metrics.jsonl`` rows and a description (algorithm, dataset, finished) of a run."""
    from .metrics import read_metrics

    if not run.is_dir():
        raise OutputError(f"{run}: no such run folder")
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise OutputError(f"{run}: no metrics.jsonl (not a fedmllm run folder, or no round "
                          "has finished yet)")
    try:
        rows = read_metrics(path)
    except (OSError, ValueError) as e:
        raise OutputError(str(e)) from None
    if not rows:
        raise OutputError(f"{path}: no round recorded yet")
    info: dict = {"finished": (run / "summary.json").is_file()}
    try:
        import yaml

        cfg = yaml.safe_load((run / "config.yaml").read_text())
        fl, data = cfg.get("fl") or {}, cfg.get("data") or {}
        info.update(algorithm=fl.get("algorithm"), dataset=data.get("dataset"),
                    task=data.get("task"), scenario=data.get("scenario"))
        if fl.get("algorithm") in ("yoco", "oneshot"):
            method = (fl.get("yoco") or {}).get("method")
            if method and method != fl.get("algorithm"):
                info["algorithm"] = f"{fl['algorithm']}/{method}"
    except (OSError, ValueError, AttributeError, ImportError):
        pass
    if not info.get("algorithm"):
        try:
            info["algorithm"] = json.loads((run / "summary.json").read_text()).get("algorithm")
        except (OSError, ValueError, AttributeError):
            pass
    return rows, info


def _labels(runs: list[Path], infos: list[dict]) -> list[str]:
    """``<folder> (<algorithm>)``; folders of the same name get their parent too."""
    names = [r.resolve().name for r in runs]
    out = []
    for run, name, info in zip(runs, names, infos):
        if names.count(name) > 1:
            name = f"{run.resolve().parent.name}/{name}"
        label = f"{name} ({info.get('algorithm') or '?'})"
        if not info.get("finished"):
            label += ", unfinished"
        out.append(label)
    return out


def runs_figure(runs: list[str | Path], metric: str = "accuracy", view: str = "image_text"):
    """Several runs overlaid (see the module docstring); every run is read first, so a bad
    folder is a one-line :class:`~fedmllm.errors.OutputError` naming it."""
    import matplotlib

    if metric not in METRICS:
        raise OutputError(f"--metric: unknown metric {metric!r} (choices: {', '.join(METRICS)})")
    if view not in VIEW_STYLES:
        raise OutputError(f"--view: unknown view {view!r} (choices: {', '.join(VIEW_STYLES)})")
    paths = [Path(r) for r in runs]
    if not paths:
        raise OutputError("no run folder given")
    read = [_read_run(p) for p in paths]
    infos = [info for _, info in read]
    labels = _labels(paths, infos)
    colours = matplotlib.colormaps["tab10" if len(paths) <= 10 else "tab20"].colors
    styles = ("-", "--", "-.", ":")
    fig, ax_m, ax_l = _new_figure()
    missing = []
    for i, ((rows, _), label) in enumerate(zip(read, labels)):
        colour = colours[i % len(colours)]
        style = styles[(i // len(colours)) % len(styles)]
        pts = _series(rows, view, metric)
        if pts:
            ax_m.plot(*zip(*pts), color=colour, linestyle=style, marker="o", markersize=4,
                      label=label)
        else:
            missing.append(label)
        rounds, mean, _, _ = _loss(rows)
        if rounds:
            ax_l.plot(rounds, mean, color=colour, linestyle=style, marker=".", label=label)
    name = METRIC_LABELS[metric]
    if ax_m.get_legend_handles_labels()[1]:
        ax_m.legend(loc="best", fontsize=9)
    if missing:
        _note(ax_m, f"no test {name} on {view} per round for: " + ", ".join(missing), y=0.03)
    if ax_l.get_legend_handles_labels()[1]:
        ax_l.legend(loc="best", fontsize=9)
    _finish_axes(ax_m, ax_l, metric)
    ax_m.set_title(f"test {name} ({view})", fontsize=11)
    ax_l.set_title("train loss", fontsize=11)
    same = {(i.get("dataset"), i.get("task"), i.get("scenario")) for i in infos}
    title = f"{len(paths)} run{'s' if len(paths) > 1 else ''}"
    if len(same) == 1:
        dataset, task, scenario = next(iter(same))
        if dataset:
            title += f" on {dataset}" + (f"/{task}" if dataset == "synth" and task else "") \
                + (f" ({scenario})" if scenario else "")
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return fig


def plot_runs(runs: list[str | Path], out: str | Path, metric: str = "accuracy",
              view: str = "image_text") -> Path:
    """``fedmllm plot``: :func:`runs_figure` written to ``out`` (.png, .svg or .pdf)."""
    return save_figure(runs_figure(runs, metric, view), out)
