"""``fedmllm data stats``: the counts per client of a prepared folder, as a table and a plot.

The counts are the manifest's (:func:`fedmllm.data.manifest.count_summary`): samples, labels
(option names, or the source dataset for QA) and input modalities, per client and per test
set. The plot (stacked bars of modalities and labels per client) needs matplotlib, imported
only when a plot is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .manifest import count_summary
from .prepared import load_prepared
from .types import MODALITIES

__all__ = ["DataStats", "data_stats"]


@dataclass
class DataStats:
    """Per-client rows (``client``, ``samples``, ``labels``, one count per modality), the
    printable table and the path of the saved stacked-bar PNG (or ``None``)."""

    rows: list[dict]
    table: str
    png: Path | None


_MOD_HEAD = {"image_text": "image+text", "image_only": "image", "text_only": "text",
             "none": "none"}


def _format_table(rows: list[dict]) -> str:
    head = ["client", "samples"] + [_MOD_HEAD[m] for m in MODALITIES] + ["labels"]
    body = []
    for r in rows:
        labels = " ".join(f"{k}:{v}" for k, v in r["labels"].items())
        body.append([str(r["client"]), str(r["samples"])]
                    + [str(r["modalities"][m]) for m in MODALITIES] + [labels])
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head) - 1)]

    def line(cells):
        return "  ".join(c.rjust(w) if i else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells[:-1], widths))) + "  " + cells[-1]

    return "\n".join([line(head)] + [line(b) for b in body])


def data_stats(folder: str | Path, png: str | Path | None = None, plot: bool = True
               ) -> DataStats:
    """Counts per client of a prepared folder: a table (returned, for printing) and a
    stacked-bar PNG of modalities and labels per client (``png``, default
    ``FOLDER/data_stats.png``)."""
    folder = Path(folder)
    data = load_prepared(folder)
    rows = [dict(client=k, **count_summary(c)) for k, c in enumerate(data.clients)]
    if data.test:
        rows.append(dict(client="test", **count_summary(data.test)))
    for name, samples in data.extra_tests.items():
        rows.append(dict(client=f"test_{name}", **count_summary(samples)))
    table = _format_table(rows)
    out_png = None
    if plot:
        out_png = Path(png) if png is not None else folder / "data_stats.png"
        _plot(rows[: len(data.clients)], out_png)
    return DataStats(rows, table, out_png)


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    clients = [str(r["client"]) for r in rows]
    x = np.arange(len(rows))
    labels = sorted({k for r in rows for k in r["labels"]})
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, keys, get, title in (
        (axes[0], list(MODALITIES), lambda r, k: r["modalities"][k], "modality per client"),
        (axes[1], labels, lambda r, k: r["labels"].get(k, 0), "label per client"),
    ):
        bottom = np.zeros(len(rows))
        cmap = plt.get_cmap("tab10" if len(keys) <= 10 else "tab20")
        for j, k in enumerate(keys):
            vals = np.array([get(r, k) for r in rows], dtype=float)
            ax.bar(x, vals, bottom=bottom, label=_MOD_HEAD.get(k, k), color=cmap(j % cmap.N))
            bottom += vals
        ax.set_xticks(x, clients)
        ax.set_xlabel("client")
        ax.set_ylabel("samples")
        ax.set_title(title)
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
