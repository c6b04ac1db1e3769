"""The in-process federated simulator: one model in memory, adapters swapped per client.

Per round: sample clients; for each, load the global adapter, run ``fl.local_steps`` AdamW steps
(or ``fl.local_epochs``) on its data with the client objective, collect its adapter state; the
server strategy aggregates; the global model is evaluated every ``eval.every`` rounds. Every
algorithm lives in :mod:`fedmllm.fl`; this module only drives it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import Config, ConfigError
from ..fl import (
    ALGORITHMS,
    ClientUpdate,
    filter_updates,
    make_objective,
    make_strategy,
    round_lr,
    sample_clients,
    upload_units,
)
from ..model.collate import collate, to_device
from .setup import (
    ClientData,
    ModelBundle,
    encode_samples,
    load_for_training,
    save_adapter,
    seed_everything,
)

log = logging.getLogger(__name__)

def state_bytes(state: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def extras_bytes(extras: dict[str, dict[str, torch.Tensor]]) -> int:
    return sum(state_bytes(d) for d in extras.values())


def make_algorithm(cfg: Config, num_layers: int):
    """The server strategy and client objective named by the config (errors name the key)."""
    algo = cfg.fl.algorithm
    params = dict(cfg.fl.strategy)
    if algo == "scaffold":
        params.setdefault("num_clients", cfg.fl.num_clients)
    try:
        strategy = make_strategy(algo, **params)
    except (ValueError, TypeError) as e:
        key = "fl.algorithm" if "algorithm" in str(e) or algo not in ALGORITHMS else "fl.strategy"
        raise ConfigError(f"{key}: {e}") from None
    c = cfg.fl.client
    name = "scaffold" if algo == "scaffold" and c.objective == "ce" else c.objective
    if (algo == "scaffold") != (name == "scaffold"):
        raise ConfigError(f"fl.client.objective: {name!r} does not go with fl.algorithm "
                          f"{algo!r} (SCAFFOLD's server and client sides come together)")
    if name == "yoco":
        raise ConfigError("fl.client.objective: 'yoco' is one-shot; use fl.algorithm=yoco")
    obj_params = {"prox": {"prox_mu": c.prox_mu},
                  "adaptive_prox": {"prox_mu": c.prox_mu, "mu_w": c.mu_w, "s_layer": c.s_layer,
                                    "num_layers": num_layers}}.get(name, {})
    try:
        objective = make_objective(name, **obj_params)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"fl.client: {e}") from None
    return strategy, objective


@dataclass
class RunResult:
    out_dir: Path
    rows: list[dict] = field(default_factory=list)
    final: dict = field(default_factory=dict)


class Simulator:
    """Runs the experiment described by a :class:`~fedmllm.config.Config` on one machine."""

    def __init__(self, cfg: Config, console=None, bundle: ModelBundle | None = None, data=None):
        self.cfg = cfg
        self.console = console
        self._bundle = bundle
        self._data = data

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        cfg = self.cfg
        seed_everything(cfg.seed)
        self.bundle = self._bundle or load_for_training(cfg)
        if self._data is None:
            from ..data import build_federated_data

            self._data = build_federated_data(cfg.data, cfg.fl.num_clients, cfg.seed)
        self.data = self._data
        proc = self.bundle.processor
        strategy = cfg.data.prompt_strategy
        self.clients = [
            ClientData(encode_samples(proc, samples, strategy, cfg.train.max_seq_len),
                       seed=cfg.seed * 7919 + k)
            for k, samples in enumerate(self.data.clients)
        ]
        self.strategy, self.objective = make_algorithm(cfg, self.bundle.num_layers)
        self.global_state = self.bundle.adapter.get()
        self.initial_state = {k: v.clone() for k, v in self.global_state.items()}
        self.client_states: dict[int, dict[str, torch.Tensor]] = {}
        self.client_objective_states: dict[int, dict[str, torch.Tensor]] = {}
        self.last_eval: tuple[int, dict] | None = None
        self.eval_cache: dict = {}  # encoded test prompts, reused by every evaluation

    # ------------------------------------------------------------------ client
    def local_steps(self, k: int) -> int:
        fl = self.cfg.fl
        return fl.local_steps if fl.local_epochs is None else self.epoch_steps(k, fl.local_epochs)

    def epoch_steps(self, k: int, epochs: float) -> int:
        """Optimizer steps for ``epochs`` passes over client ``k``'s samples (at least one)."""
        tr = self.cfg.train
        per_epoch = math.ceil(len(self.clients[k]) / (tr.batch_size * tr.grad_accum))
        return max(1, math.ceil(epochs * per_epoch))

    def train_client(self, k: int, start: dict[str, torch.Tensor], round_: int, lr: float,
                     server_extras: dict) -> ClientUpdate:
        """Local training of client ``k`` from ``start``; returns its update."""
        b, tr = self.bundle, self.cfg.train
        model = b.model
        b.adapter.set(start)
        params = b.adapter.params
        opt = torch.optim.AdamW(list(params.values()), lr=lr, weight_decay=tr.weight_decay)
        self.objective.begin(start, server_extras, self.client_objective_states.get(k, {}))
        model.train()
        stream = self.clients[k].batches(round_, tr.batch_size)
        steps = self.local_steps(k)
        loss_sum = torch.zeros((), dtype=torch.float64, device=b.device)  # no sync per step
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            for _ in range(tr.grad_accum):
                batch = to_device(_collate(next(stream), b), b.device, b.dtype)
                loss = model(**batch).loss
                penalty = self.objective.penalty(params)
                total = loss if penalty is None else loss + penalty
                (total / tr.grad_accum).backward()
                loss_sum += loss.detach().double() / tr.grad_accum
            self.objective.correct_gradients(params)
            if tr.grad_clip:
                torch.nn.utils.clip_grad_norm_(list(params.values()), tr.grad_clip)
            opt.step()
        result = self.objective.end(params, steps * lr)
        self.client_objective_states[k] = result.client_state
        extras = result.extras
        state = b.adapter.get()
        return ClientUpdate(state=state, num_examples=len(self.clients[k]), client_id=k,
                            extras=extras, metrics={"train_loss": float(loss_sum) / steps,
                                                    "steps": steps})

    # ------------------------------------------------------------------ eval
    def evaluate(self, state: dict[str, torch.Tensor], max_samples: int | None = None,
                 return_predictions: bool = False) -> dict:
        from ..eval import evaluate

        b, cfg = self.bundle, self.cfg
        b.adapter.set(state)
        return evaluate(b.model, b.processor, self.data.test, cfg.data.prompt_strategy,
                        views=cfg.eval.views, batch_size=cfg.eval.batch_size, device=b.device,
                        dtype=b.dtype, max_samples=max_samples or cfg.eval.max_samples,
                        return_predictions=return_predictions, cache=self.eval_cache)

    # ------------------------------------------------------------------ outputs
    def prepare_output(self) -> Path:
        """Create ``output.dir`` and remove the completion markers of an earlier run there."""
        out = Path(self.cfg.output.dir)
        out.mkdir(parents=True, exist_ok=True)
        for stale in ("summary.json", "adapter"):
            p = out / stale
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        return out

    def save_run_inputs(self, out: Path) -> None:
        """The resolved configuration and the data manifest, beside the outputs."""
        self.cfg.save(out / "config.yaml")
        (out / "data_manifest.json").write_text(json.dumps(self.data.manifest, indent=2,
                                                           default=str))

    # ------------------------------------------------------------------ rounds
    def run(self) -> RunResult:
        from ..report.metrics import MetricsWriter, plot_metrics

        cfg = self.cfg
        if type(self) is Simulator:
            from .oneshot import ONESHOT_ALGORITHMS, OneShot  # one-shot LoRA: its own driver

            if cfg.fl.algorithm in ONESHOT_ALGORITHMS:
                return OneShot(cfg, console=self.console, bundle=self._bundle,
                               data=self._data).run()
        out = self.prepare_output()
        t_setup = time.perf_counter()
        self.setup()
        self.save_run_inputs(out)
        setup_seconds = time.perf_counter() - t_setup
        writer = MetricsWriter(out / "metrics.jsonl")
        result = RunResult(out)
        personal = self.strategy.personalized  # each client keeps its own adapter
        zeroshot = not self.strategy.trains_clients
        rounds = 0 if zeroshot else cfg.fl.rounds
        progress = _Progress(self.console, rounds, cfg.fl.clients_per_round, cfg.output.progress)
        with progress:
            for r in range(1, rounds + 1):
                t0 = time.perf_counter()
                lr = round_lr(r, rounds, cfg.train.lr, cfg.train.lr_schedule,
                              cfg.train.warmup_rounds, cfg.train.min_lr_ratio)
                chosen = sample_clients(cfg.fl.num_clients, cfg.fl.clients_per_round, r, cfg.seed)
                server_extras = self.strategy.server_extras()
                # Local-only clients communicate nothing.
                down = 0 if personal else \
                    state_bytes(self.global_state) + extras_bytes(server_extras)
                updates = []
                for k in chosen:
                    start = self.client_states.get(k, self.initial_state) if personal \
                        else self.global_state
                    upd = self.train_client(k, start, r, lr, server_extras)
                    if personal:
                        self.client_states[k] = upd.state
                    updates.append(upd)
                    progress.client_done()
                rejected: list = []
                skipped = False
                if not personal:
                    accepted, rejected, skipped = filter_updates(
                        updates, self.global_state, cfg.fl.max_update_norm, cfg.fl.min_clients)
                    for cid, reason in rejected:
                        log.warning("round %d: rejected update of client %d: %s", r, cid, reason)
                    if not skipped:
                        self.global_state = self.strategy.aggregate(self.global_state, accepted, r)
                row = {
                    "round": r, "clients": chosen, "lr": lr,
                    "train_loss": {str(u.client_id): round(u.metrics["train_loss"], 6)
                                   for u in updates},
                    "train_loss_mean": statistics.fmean(u.metrics["train_loss"] for u in updates),
                    "bytes_uploaded": 0 if personal else sum(
                        state_bytes(u.state) + extras_bytes(u.extras) for u in updates),
                    "bytes_downloaded": down * len(chosen),
                    "rejected": [{"client": c, "reason": why} for c, why in rejected],
                    "skipped": skipped,
                }
                train_seconds = time.perf_counter() - t0
                if not personal and (r % cfg.eval.every == 0 or r == rounds):
                    row["eval"] = self.evaluate(self.global_state)
                    self.last_eval = (r, row["eval"])
                row["seconds"] = round(time.perf_counter() - t0, 4)
                row["train_seconds"] = round(train_seconds, 4)
                writer.write(row)
                result.rows.append(row)
                progress.round_done(row)
        final = self._final_eval(personal, zeroshot)
        self._save_adapter(out / "adapter")
        totals = {
            "rounds": rounds,
            "bytes_uploaded": sum(r["bytes_uploaded"] for r in result.rows),
            "bytes_downloaded": sum(r["bytes_downloaded"] for r in result.rows),
            "train_seconds": round(sum(r["train_seconds"] for r in result.rows), 3),
            "setup_seconds": round(setup_seconds, 3),
            "adapter_bytes": state_bytes(self.global_state),
        }
        # the YOCO paper's unit: client uploads x layers x LoRA modules
        uploads = 0 if personal else sum(len(r["clients"]) for r in result.rows)
        totals["upload_units"] = uploads * upload_units(self.global_state)["units"]
        result.final = {"algorithm": cfg.fl.algorithm, "final": final, "totals": totals}
        if cfg.output.plot and result.rows:
            plot_metrics(result.rows, out / "metrics.png",
                         title=f"{cfg.fl.algorithm} on {cfg.data.dataset}/{cfg.data.task} "
                               f"({cfg.data.scenario})")
        tmp = out / "summary.json.tmp"
        tmp.write_text(json.dumps(result.final, indent=2))
        os.replace(tmp, out / "summary.json")
        return result

    def _final_eval(self, personal: bool, zeroshot: bool) -> dict:
        if zeroshot:
            return self.evaluate(self.initial_state)
        if not personal:
            last = self.last_eval
            if last is not None and last[0] == self.cfg.fl.rounds:
                return last[1]  # the last round was just evaluated; do not repeat it
            return self.evaluate(self.global_state)
        per_client = {k: self.evaluate(s) for k, s in sorted(self.client_states.items())}
        if not per_client:
            return self.evaluate(self.initial_state)
        accs = [m["accuracy"] for m in per_client.values() if m.get("accuracy") is not None]
        summary = {"per_client": per_client}
        if accs:
            summary["accuracy"] = statistics.fmean(accs)
            summary["accuracy_std"] = statistics.pstdev(accs)
            summary["accuracy_min"] = min(accs)
            summary["accuracy_max"] = max(accs)
        return summary

    def _save_adapter(self, path: Path) -> None:
        """The global adapter in PEFT format (``PeftModel.from_pretrained`` loads it)."""
        if self.strategy.personalized:
            return
        pissa = self.bundle.init == "pissa"
        meta = {"base_model": self.bundle.source, "algorithm": self.cfg.fl.algorithm,
                "init": self.bundle.init, "converted_from_pissa": pissa}
        save_adapter(self.bundle, self.global_state, path, meta,
                     pissa_initial=self.initial_state if pissa else None)


def _collate(items, bundle: ModelBundle):
    return collate(items, bundle.processor.tokenizer.pad_token_id)


class _Progress:
    """A rich progress bar over rounds x clients plus a per-round table line."""

    def __init__(self, console, rounds: int, per_round: int, enabled: bool):
        self.console = console
        self.enabled = enabled and console is not None
        self.total = rounds * per_round
        self._p = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            self._p = Progress("[progress.description]{task.description}", BarColumn(),
                               MofNCompleteColumn(), TimeElapsedColumn(), console=self.console,
                               transient=True)
            self._p.__enter__()
            self._task = self._p.add_task("client updates", total=self.total)
            self.console.print(_header())
        return self

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.__exit__(*exc)

    def client_done(self):
        if self._p is not None:
            self._p.advance(self._task)

    def round_done(self, row: dict):
        if self.console is not None and self.enabled:
            self.console.print(_row_line(row))


def _header() -> str:
    return (f"{'round':>5} {'clients':<14} {'lr':>9} {'loss':>8} {'acc':>7} {'acc_img':>7} "
            f"{'acc_txt':>7} {'sec':>6}")


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else "-"


def _row_line(row: dict) -> str:
    ev = row.get("eval") or {}
    pm = ev.get("per_modality", {})
    return (f"{row['round']:>5} {','.join(map(str, row['clients'])):<14} {row['lr']:>9.2e} "
            f"{row['train_loss_mean']:>8.4f} {_fmt(ev.get('accuracy')):>7} "
            f"{_fmt(pm.get('image_only', {}).get('accuracy')):>7} "
            f"{_fmt(pm.get('text_only', {}).get('accuracy')):>7} {row['seconds']:>6.1f}")


def run_experiment(cfg: Config, console=None) -> RunResult:
    return Simulator(cfg, console=console).run()
