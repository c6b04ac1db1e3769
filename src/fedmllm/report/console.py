"""What a run prints: a progress bar over client updates and one table line per round."""

from __future__ import annotations

import threading
import time


def quiet_libraries() -> None:
    """Silence what transformers prints that tells a user nothing (advisory warnings, the
    per-load "Loading weights" bar, deprecation notices). The Hugging Face Hub's download
    progress is left on: it says how long a model download will take."""
    import os
    import warnings

    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


class RoundProgress:
    """Progress over ``total`` units of work (client updates of a run, cells of a sweep) plus
    the lines of the run's own output.

    In a terminal: a rich progress bar (with an ETA column when ``eta``). Elsewhere (a log
    file, a pipe): no bar, but a line at least every ``heartbeat`` seconds while work goes on
    (``... 3/48 client updates, 40 s``; with ``running`` set and ``eta``: ``... 3/8 cells,
    2 running, 40 s, ETA 2 min``), so a long round never looks stuck. ``enabled=False`` or no
    console prints nothing (``output.progress=false``, ``--quiet``). Entered inside another
    one (the evaluation within a round), it shows nothing: the outer one goes on.
    """

    _open = 0  # instances entered and not yet left: one at a time shows anything

    def __init__(self, console, total: int, enabled: bool, done: int = 0,
                 heartbeat: float = 10.0, what: str = "client updates", eta: bool = False):
        self.console = console
        self.enabled = enabled and console is not None
        self.total, self.done, self.what = total, done, what
        self.start_done = done
        self.running: int | None = None
        """Units under way (shown in the heartbeat line when set)."""
        self.heartbeat, self.show_eta = heartbeat, eta
        self._p = None
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._last = self._t0

    def __enter__(self):
        RoundProgress._open += 1
        self._quiet = RoundProgress._open > 1  # inside another one (evaluation in a round)
        if self.enabled and not self._quiet:
            if self.console.is_terminal:
                self._p = self._bar()
                self._p.__enter__()
                self._task = self._p.add_task(self.what, total=self.total,
                                              completed=self.done)
            else:
                threading.Thread(target=self._beat, daemon=True).start()
        return self

    def _bar(self):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        eta = ("ETA", TimeRemainingColumn()) if self.show_eta else ()
        return Progress("[progress.description]{task.description}", BarColumn(),
                        MofNCompleteColumn(), TimeElapsedColumn(), *eta,
                        console=self.console, transient=True)

    def eta(self) -> str:
        """The time left at the rate of the units finished since the start: ``? ``, ``40 s``,
        ``12 min``."""
        finished = self.done - self.start_done
        if not finished:
            return "?"
        left = (time.monotonic() - self._t0) / finished * (self.total - self.done)
        return f"{left / 60:.0f} min" if left >= 90 else f"{left:.0f} s"

    def _beat(self) -> None:
        while not self._stop.wait(1.0):
            now = time.monotonic()
            if now - self._last >= self.heartbeat:
                parts = [f"... {self.done}/{self.total} {self.what}"]
                if self.running is not None:
                    parts.append(f"{self.running} running")
                parts.append(f"{now - self._t0:.0f} s")
                if self.show_eta:
                    parts.append(f"ETA {self.eta()}")
                self._line(", ".join(parts))

    def _line(self, text: str) -> None:
        self._last = time.monotonic()
        self.console.print(text, markup=False)

    def stop_heartbeat(self) -> None:
        """No more heartbeat lines (a sweep that is stopping says so itself)."""
        self._stop.set()

    def __exit__(self, *exc):
        RoundProgress._open -= 1
        self._stop.set()
        if self._p is not None:
            self._p.__exit__(*exc)

    def print(self, text: str) -> None:
        """A line of the run's own output (the table header, a round, a finished cell)."""
        if self.enabled and not getattr(self, "_quiet", False):
            self._line(text)

    def client_done(self) -> None:
        """One unit of work done (a client update, a cell)."""
        self.done += 1
        if self._p is not None:
            self._p.advance(self._task)

    def round_done(self, row: dict) -> None:
        self.print(row_line(row))


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


def _lora_targets(lora) -> str:
    if lora.target_regex:
        return f"modules matching {lora.target_regex!r}"
    layers = "every LM layer" if lora.layers is None else \
        "LM layers " + ",".join(map(str, lora.layers))
    return f"{'/'.join(m.removesuffix('_proj') for m in lora.modules)} of {layers}"


def run_header(cfg, plan, out_dir) -> list[str]:
    """A few lines saying what a run is about to do (the whole configuration is in
    ``config.yaml``)."""
    model = cfg.model.name or f"built-in {cfg.model.preset}" + \
        ("" if cfg.model.pretrain else " (random init)")
    d = cfg.data
    if d.prepared:
        data = f"prepared folder {d.prepared}"
    else:
        data = d.dataset + (f"/{d.task}" if d.dataset == "synth" else "")
        scen = {"missing": f"missing {d.missing_rate:g}", "cross": f"cross, "
                f"{d.image_clients} image-only clients", "hybrid": f"hybrid, presence "
                f"{d.presence:g}"}.get(d.scenario, d.scenario)
        part = f"Dirichlet α {d.alpha:g}" if d.partition == "dirichlet" else "IID"
        data += f", {part}, {scen}, prompt {d.prompt_strategy}"
    fl = cfg.fl
    params = ", ".join(f"{k}={v}" for k, v in plan.strategy_params.items()
                       if k != "num_clients")
    algo = plan.algorithm + (f" ({params})" if params else "")
    if plan.oneshot:
        y = fl.yoco
        what = f"one-shot {y.method}" + (f" {y.variant}" if y.method == "yoco" else "")
        shape = f"{fl.num_clients} clients once, {y.local_epochs:g} local epochs"
        algo = f"{what}, init {plan.init}"
    else:
        steps = f"{fl.local_steps} steps" if fl.local_epochs is None else \
            f"{fl.local_epochs:g} epochs"
        shape = (f"{fl.rounds} rounds x {fl.trained_per_round()} of "
                 f"{fl.num_clients} clients x {steps}")
        if fl.algorithm == "local":
            shape += f" (fl.local_clients = {fl.local_clients})"
        if fl.local_epochs is None:
            shape += f" = {fl.rounds * fl.trained_per_round() * fl.local_steps} client steps"
        if fl.algorithm == "centralized":
            shape = (f"{fl.rounds} rounds on the {fl.num_clients} clients' data pooled, "
                     f"{min(fl.clients_per_round, fl.num_clients)} x {steps} per round")
        algo += f", client objective {plan.objective}"
    lora = plan.lora
    return [
        f"  model   {model}; LoRA r {lora.r} (alpha {lora.alpha:g}) on {_lora_targets(lora)}",
        f"  data    {data}",
        f"  fl      {algo}",
        f"          {shape}",
        *privacy_lines(getattr(plan, "privacy", None)),
        (f"  train   {plan.optimizer} lr {plan.lr:g}, batch {cfg.train.batch_size}, "
         f"seed {cfg.seed}"),
        f"  output  {out_dir} (full configuration: config.yaml)",
    ]


def privacy_lines(p) -> list[str]:
    """The run header's DP lines: the mechanism and the epsilon planned for all rounds."""
    if p is None:
        return []
    return [(f"  privacy {p.mechanism}, noise multiplier {p.noise_multiplier:.4g}, clipping "
             f"norm {p.clipping_norm:g}, sampling {p.sampling}"),
            (f"          epsilon {p.planned_epsilon:.4g} at delta {p.delta:g} after {p.rounds} "
             "rounds (planned; dp-accounting RDP)")]


def summary_table(console, summary: dict, out_dir) -> None:
    """The final metrics per modality view as a table, then bytes, time and the folder."""
    from rich.table import Table

    final, totals = summary["final"], summary["totals"]
    views = final.get("per_modality") or {"all": final}
    table = Table(title=None, show_edge=False, pad_edge=False)
    for col in ("view", "accuracy", "macro-F1", "AUROC"):
        table.add_column(col, justify="left" if col == "view" else "right")
    for name, m in views.items():
        table.add_row(name, _fmt(m.get("accuracy"), 4), _fmt(m.get("macro_f1"), 4),
                      _fmt(m.get("auroc"), 4))
    if "accuracy_std" in final:
        console.print(f"mean over clients' own models (std {final['accuracy_std']:.4f}, "
                      f"min {final.get('accuracy_min', 0):.4f}, "
                      f"max {final.get('accuracy_max', 0):.4f}):", markup=False)
    console.print(table)
    ce = final.get("client_eval", {}).get("accuracy")
    if ce:
        n = len(final["client_eval"].get("per_client", {}))
        console.print(f"client-side ({n} clients' held-out samples): accuracy mean "
                      f"{ce['mean']:.4f}, std {ce['std']:.4f}, min {ce['min']:.4f}, "
                      f"max {ce['max']:.4f}", markup=False)
    console.print(f"uploaded {totals['bytes_uploaded'] / 1e6:.2f} MB, downloaded "
                  f"{totals['bytes_downloaded'] / 1e6:.2f} MB, training "
                  f"{totals['train_seconds']:.1f} s; outputs in {out_dir}", markup=False)
