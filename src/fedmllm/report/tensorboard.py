"""TensorBoard event files of a run (``output.tensorboard = true``; extra ``[tensorboard]``).

Every metrics row becomes scalars at its round: ``train/loss``, ``train/lr``,
``test/<view>/<metric>`` (accuracy, macro-F1, AUROC, for every evaluated view),
``clients/accuracy_{mean,std,min,max}`` (client-side evaluation) and ``comm/MB_up``,
``comm/MB_down`` (per round). Files go to ``<run>/tensorboard/``: ``tensorboard --logdir
runs`` compares runs. A resumed run drops the events after its checkpoint's round
(``purge_step``), as ``metrics.jsonl`` drops its rows. ``metrics.jsonl`` stays the record;
nothing in fedmllm reads these files.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["RoundEvents", "open_events"]

_METRICS = ("accuracy", "macro_f1", "auroc")


class RoundEvents:
    """Writes a run's rows as TensorBoard scalars (see the module docstring)."""

    def __init__(self, folder: str | Path, after_round: int = 0):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(folder) / "tensorboard"),
                                    purge_step=after_round + 1 if after_round else None)

    def write(self, row: dict) -> None:
        r, w = row["round"], self.writer
        if isinstance(row.get("train_loss_mean"), float):
            w.add_scalar("train/loss", row["train_loss_mean"], r)
        w.add_scalar("train/lr", row["lr"], r)
        w.add_scalar("comm/MB_up", row.get("bytes_uploaded", 0) / 1e6, r)
        w.add_scalar("comm/MB_down", row.get("bytes_downloaded", 0) / 1e6, r)
        for view, m in (row.get("eval") or {}).get("per_modality", {}).items():
            for key in _METRICS:
                if isinstance(m.get(key), float):
                    w.add_scalar(f"test/{view}/{key}", m[key], r)
        acc = (row.get("client_eval") or {}).get("accuracy") or {}
        for key, value in acc.items():
            w.add_scalar(f"clients/accuracy_{key}", value, r)
        w.flush()

    def close(self) -> None:
        self.writer.close()


class _NoEvents:
    def write(self, row: dict) -> None:
        pass

    def close(self) -> None:
        pass


def open_events(folder: str | Path, enabled: bool, after_round: int = 0):
    """:class:`RoundEvents` when ``enabled``, else an object that writes nothing."""
    return RoundEvents(folder, after_round) if enabled else _NoEvents()
