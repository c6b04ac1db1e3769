"""What a run prints: a progress bar over client updates and one table line per round."""

from __future__ import annotations


class RoundProgress:
    """A rich progress bar over ``total`` client updates plus a per-round table line.

    ``enabled=False`` or no console prints nothing (``output.progress=false``).
    """

    def __init__(self, console, total: int, enabled: bool, done: int = 0):
        self.console = console
        self.enabled = enabled and console is not None
        self.total = total
        self.done = done
        self._p = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            self._p = Progress("[progress.description]{task.description}", BarColumn(),
                               MofNCompleteColumn(), TimeElapsedColumn(), console=self.console,
                               transient=True)
            self._p.__enter__()
            self._task = self._p.add_task("client updates", total=self.total,
                                          completed=self.done)
            self.console.print(header())
        return self

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.__exit__(*exc)

    def client_done(self) -> None:
        if self._p is not None:
            self._p.advance(self._task)

    def round_done(self, row: dict) -> None:
        if self.enabled:
            self.console.print(row_line(row), markup=False)


def header() -> str:
    return (f"{'round':>5} {'clients':<14} {'lr':>9} {'loss':>8} {'acc':>7} {'acc_img':>7} "
            f"{'acc_txt':>7} {'sec':>6}")


def _fmt(v, digits: int = 3) -> str:
    return f"{v:.{digits}f}" if isinstance(v, float) else "-"


def row_line(row: dict) -> str:
    """One round as a table line (accuracy per view when the round was evaluated)."""
    ev = row.get("eval") or {}
    pm = ev.get("per_modality", {})
    line = (f"{row['round']:>5} {','.join(map(str, row['clients'])):<14} {row['lr']:>9.2e} "
            f"{_fmt(row['train_loss_mean'], 4):>8} {_fmt(ev.get('accuracy')):>7} "
            f"{_fmt(pm.get('image_only', {}).get('accuracy')):>7} "
            f"{_fmt(pm.get('text_only', {}).get('accuracy')):>7} {row['seconds']:>6.1f}")
    if row.get("dropped"):
        line += f"  no reply: {','.join(map(str, row['dropped']))}"
    if row.get("skipped"):
        line += f"  skipped: {row['skipped']}"
    return line
