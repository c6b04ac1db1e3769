"""The per-run plot: test accuracy per modality view and mean client loss per round."""

from __future__ import annotations

import io
from pathlib import Path

from ..files import atomic_write_bytes


def plot_metrics(rows: list[dict], out: Path, title: str = "") -> Path:
    """Accuracy (test) and mean client train loss per round, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax1 = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    r_loss = [r["round"] for r in rows if r.get("train_loss_mean") is not None]
    loss = [r["train_loss_mean"] for r in rows if r.get("train_loss_mean") is not None]
    ax1.plot(r_loss, loss, color="tab:red", marker=".", label="train loss (mean over clients)")
    ax1.set_xlabel("round")
    ax1.set_ylabel("train loss", color="tab:red")
    ax2 = ax1.twinx()
    ev = [r for r in rows if isinstance(r.get("eval"), dict)]
    for name, style in (("image_text", "-"), ("image_only", "--"), ("text_only", ":")):
        pts = [(r["round"], r["eval"]["per_modality"][name]["accuracy"]) for r in ev
               if name in r["eval"].get("per_modality", {})
               and r["eval"]["per_modality"][name].get("accuracy") is not None]
        if pts:
            ax2.plot(*zip(*pts), style, color="tab:blue", marker="o", label=f"test acc {name}")
    ax2.set_ylabel("test accuracy", color="tab:blue")
    ax2.set_ylim(0, 1)
    handles = ax1.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax2.legend(handles=handles, loc="lower left", fontsize=8)
    if title:
        ax1.set_title(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(out, buf.getvalue())
