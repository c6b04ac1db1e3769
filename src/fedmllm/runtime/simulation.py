"""The multi-round federated simulation: one model in memory, client adapters swapped in.

Per round ``r`` (from the last checkpoint on, when resumed)::

    lr      = round_lr(r)                                   the round's client learning rate
    clients = sample_clients(num_clients, per_round, r, seed)
    for each client k:                                      (ClientTrainer, knows only k)
        start = global state (or k's own adapter for local-only training)
        fit   = trainer.fit(start, server extras, k's batches, k's step sizes, seed(r, k),
                            client_state=k's kept state)
    outcome = server.run(global, updates, r)                (validate, aggregate, check, count)
    keep each accepted client's new state (SCAFFOLD c_i); evaluate every eval.every rounds
    write the metrics row; write the checkpoint every fl.checkpoint_every rounds

then the final evaluation, the adapter, the plot and ``summary.json``. Every random draw comes
from ``(seed, purpose, round, client)`` (:mod:`fedmllm.seeding`), so a client's update does not
depend on the clients before it, and a resumed run ends with the same adapter, bit for bit, as
one that was never interrupted.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass, field

from ..engine.checkpoint import (
    Checkpoint,
    check_compatible,
    config_digest,
    load_checkpoint,
    save_checkpoint,
)
from ..engine.client import FitResult, local_steps, make_trainer, train_round
from ..engine.factory import build_strategy
from ..engine.failpoints import failpoint
from ..engine.server import RoundResult, ServerRound, state_bytes
from ..engine.state import ClientStateStore
from ..fl import round_lr, sample_clients, upload_units
from ..report.console import RoundProgress, header
from ..report.metrics import MetricsWriter
from ..report.tensorboard import open_events
from .session import RunResult, Session

log = logging.getLogger(__name__)


@dataclass
class RoundFits:
    """What a round's clients sent back."""

    fits: list[FitResult]
    """The clients that replied, in the order they were asked."""
    dropped: list[int] = field(default_factory=list)
    """Clients that were asked but did not reply in time (or replied with an error)."""
    bytes_uploaded: int | None = None
    """Bytes measured on the wire; ``None``: the server round counts the tensors."""
    bytes_downloaded: int | None = None


class InProcessClients:
    """The simulation's clients: trained one after another on this process's model.

    An executor of a round's clients (this one, or a Flower grid) has :meth:`attach` (called
    once by the run), :meth:`fit` (train the chosen clients), :meth:`accepted` (which updates
    the server kept) and JSON :meth:`state_dict` / :meth:`load_state_dict` for checkpoints.
    """

    def attach(self, run: MultiRoundRun) -> None:
        self.run = run
        _ = run.session.clients  # the clients' sample lists (encoded per batch, when trained)

    def fit(self, round_: int, chosen: list[int], lr: float, server_extras: dict,
            progress: RoundProgress) -> RoundFits:
        fits = []
        for k in chosen:
            fits.append(self.run.train_client(k, round_, lr, server_extras))
            progress.client_done()
        return RoundFits(fits)

    def accepted(self, round_: int, client_ids: list[int]) -> None:
        """The server kept these clients' updates of ``round_`` (nothing to tell them here)."""

    def state_dict(self) -> dict:
        """JSON state for checkpoints (none: everything lives in the run)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class MultiRoundRun:
    """One multi-round experiment over a :class:`~fedmllm.runtime.session.Session`.

    ``clients`` trains the sampled clients of a round: :class:`InProcessClients` (default, the
    simulation) or a Flower grid (:mod:`fedmllm.runtime.flower`); everything else — sampling,
    the server round, evaluation, checkpoints, outputs — is the same for both.
    """

    def __init__(self, session: Session, clients=None):
        t0 = time.perf_counter()
        s = self.session = session
        cfg, plan = s.cfg, s.plan
        self.cfg = cfg
        self.strategy = build_strategy(plan)
        self.trainer = make_trainer(cfg, plan, s.bundle)
        self.objective = self.trainer.objective
        self.server = ServerRound(self.strategy, max_update_norm=plan.max_update_norm,
                                  min_clients=cfg.fl.min_clients)
        self.personal = self.strategy.personalized  # local-only: each client keeps its adapter
        self.pooled = self.strategy.pooled  # centralized: one client holding all the data
        self.rounds = cfg.fl.rounds if self.strategy.trains_clients else 0
        self.global_state = s.initial_state
        self.client_states = ClientStateStore()  # e.g. SCAFFOLD's c_i
        self.adapters = ClientStateStore()  # local-only clients' own adapters
        self.done = 0  # rounds completed
        self.clients = clients if clients is not None else InProcessClients()
        self.clients.attach(self)
        s.setup_seconds += time.perf_counter() - t0

    @property
    def bundle(self):
        return self.session.bundle

    @property
    def initial_state(self):
        return self.session.initial_state

    # ------------------------------------------------------------------ one client
    def start_state(self, k: int) -> dict:
        """What client ``k`` starts its round from: the global adapter, or for local-only
        training its own (the initial adapter before its first round)."""
        if self.personal:
            return self.adapters.get(k) or self.session.initial_state
        return self.global_state

    def train_client(self, k: int, round_: int, lr: float, server_extras: dict) -> FitResult:
        """Client ``k``'s local run in round ``round_``, on this process's model."""
        if self.pooled:
            return self.train_pooled(round_, lr)
        return train_round(self.trainer, self.cfg, self.session.clients[k], k, round_, lr,
                           self.start_state(k), server_extras, self.client_states.get(k))

    def train_pooled(self, round_: int, lr: float) -> FitResult:
        """Centralized training's round: every client's samples as one client (id 0), for as
        many steps as the round's sampled clients would take together: ``clients_per_round x
        local_steps``, or with ``local_epochs`` that many epochs times the sampled share of the
        clients over the pooled data."""
        cfg, tr = self.cfg, self.cfg.train
        items = self.session.pooled_clients()
        per_round = min(cfg.fl.clients_per_round, cfg.fl.num_clients)
        if cfg.fl.local_epochs is None:
            steps = per_round * cfg.fl.local_steps
        else:
            steps = local_steps(len(items), tr.batch_size, tr.grad_accum,
                                epochs=cfg.fl.local_epochs * per_round / cfg.fl.num_clients)
        return train_round(self.trainer, cfg, items, 0, round_, lr, self.global_state, {},
                           steps=steps)

    # ------------------------------------------------------------------ one round
    def run_round(self, r: int, progress: RoundProgress) -> dict:
        cfg = self.cfg
        t0 = time.perf_counter()
        lr = round_lr(r, self.rounds, self.session.plan.lr, cfg.train.lr_schedule,
                      cfg.train.warmup_rounds, cfg.train.min_lr_ratio)
        chosen = [0] if self.pooled else \
            sample_clients(cfg.fl.num_clients, cfg.fl.clients_per_round, r, cfg.seed)
        server_extras = {} if self.personal else self.strategy.server_extras()
        got = self.clients.fit(r, chosen, lr, server_extras, progress)
        fits = got.fits
        updates = [f.update for f in fits]
        for cid in got.dropped:
            log.warning("round %d: no reply from client %d", r, cid)
        if self.personal:  # no aggregation; every client keeps what it trained
            outcome = RoundResult(self.global_state)
            for f in fits:
                self.adapters.put(f.update.client_id, f.update.state)
        elif self.pooled:  # centralized: the pooled client's model is the model; nothing sent
            self.global_state = self.strategy.aggregate(self.global_state, updates, r)
            outcome = RoundResult(self.global_state, accepted=[0])
        else:
            outcome = self.server.run(self.global_state, updates, r, server_extras)
            self.global_state = outcome.global_state
            for f in fits:
                if f.update.client_id in outcome.accepted:
                    self.client_states.put(f.update.client_id, f.client_state)
            self.clients.accepted(r, outcome.accepted)
            for cid, reason in outcome.rejected:
                log.warning("round %d: rejected update of client %d: %s", r, cid, reason)
            if outcome.skipped:
                log.warning("round %d skipped: %s", r, outcome.skipped)
        row = {
            "round": r, "clients": ["all"] if self.pooled else chosen, "lr": lr,
            "train_loss": {str(u.client_id): round(u.metrics["train_loss"], 6) for u in updates},
            "train_loss_mean": statistics.fmean(u.metrics["train_loss"] for u in updates)
            if updates else None,
            "local_steps": {str(u.client_id): u.metrics["steps"] for u in updates},
            "bytes_uploaded": outcome.bytes_uploaded if got.bytes_uploaded is None
            else got.bytes_uploaded,
            "bytes_downloaded": outcome.bytes_downloaded if got.bytes_downloaded is None
            else got.bytes_downloaded,
            "rejected": [{"client": c, "reason": why} for c, why in outcome.rejected],
            "skipped": outcome.skipped,
        }
        if got.dropped:
            row["dropped"] = got.dropped
        if any("client_seconds" in u.metrics for u in updates):  # measured by remote clients
            row["client_seconds"] = {str(u.client_id): round(u.metrics["client_seconds"], 3)
                                     for u in updates}
        train_seconds = time.perf_counter() - t0
        if not self.personal and (r % cfg.eval.every == 0 or r == self.rounds):
            row["eval"] = self.session.evaluate(self.global_state)
            if self.session.holdout:
                row["client_eval"] = self.session.evaluate_holdout(self.global_state)
        row["seconds"] = round(time.perf_counter() - t0, 4)
        row["train_seconds"] = round(train_seconds, 4)
        return row

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self, rows: int) -> None:
        save_checkpoint(self.session.out, Checkpoint(
            kind="multiround", step=self.done, metrics_rows=rows,
            config_sha256=config_digest(self.cfg),
            tensors={"global": self.global_state, "strategy": self.strategy.state_dict(),
                     "client_state": self.client_states.state_dict(),
                     "adapters": self.adapters.state_dict()},
            state={"clients": self.clients.state_dict()}))

    def restore(self) -> int:
        """Continue from the newest checkpoint; return the metrics rows that belong to it."""
        ckpt = load_checkpoint(self.session.out)
        if ckpt is None:
            return 0
        check_compatible(ckpt, "multiround", self.cfg)
        device = self.session.bundle.device
        t = {group: {k: v.to(device) for k, v in tensors.items()}
             for group, tensors in ckpt.tensors.items()}
        self.global_state = t.get("global", {})
        self.strategy.load_state_dict(t.get("strategy", {}))
        self.client_states.load_state_dict(t.get("client_state", {}))
        self.adapters.load_state_dict(t.get("adapters", {}))
        self.clients.load_state_dict(ckpt.state.get("clients", {}))
        self.done = ckpt.step
        return ckpt.metrics_rows

    # ------------------------------------------------------------------ the run
    def run(self, resume: bool = False) -> RunResult:
        cfg, s = self.cfg, self.session
        t_setup = time.perf_counter()
        keep = 0
        if resume:
            keep = self.restore()
            s.folder.record_resume(self.done)
        writer = MetricsWriter(s.out / "metrics.jsonl", keep_rows=keep)
        setup_seconds = s.setup_seconds + time.perf_counter() - t_setup
        every = cfg.fl.checkpoint_every
        per_round = 1 if self.pooled else min(cfg.fl.clients_per_round, cfg.fl.num_clients)
        total, done_updates = self.rounds * per_round, self.done * per_round
        events = open_events(s.out, cfg.output.tensorboard, self.done)
        with RoundProgress(s.console, total, cfg.output.progress, done_updates) as progress:
            progress.print(header())
            for r in range(self.done + 1, self.rounds + 1):
                row = self.run_round(r, progress)
                writer.write(row)
                events.write(row)
                failpoint("round_written", r)
                self.done = r
                if every and (r % every == 0 or r == self.rounds):
                    self.checkpoint(len(writer.rows))
                    failpoint("round_checkpointed", r)
                progress.round_done(row)
        events.close()
        rows = writer.rows
        final = self.final_eval(rows)
        failpoint("before_adapter", self.rounds)
        pissa = s.bundle.init == "pissa"
        meta = {"init": s.bundle.init, "converted_from_pissa": pissa}
        initial = s.initial_state if pissa else None
        if not self.personal:
            s.save_adapter(self.global_state, meta, pissa_initial=initial)
        for k, state in self.adapters.items():  # local-only: every client's own adapter
            s.save_adapter(state, {**meta, "client": k}, pissa_initial=initial,
                           name=f"adapters/client_{k}")
        failpoint("before_summary", self.rounds)
        uploads = 0 if self.personal or self.pooled else sum(len(r["clients"]) for r in rows)
        totals = {
            "rounds": self.rounds,
            "bytes_uploaded": sum(r["bytes_uploaded"] for r in rows),
            "bytes_downloaded": sum(r["bytes_downloaded"] for r in rows),
            "train_seconds": round(sum(r["train_seconds"] for r in rows), 3),
            "setup_seconds": round(setup_seconds, 3),
            "adapter_bytes": state_bytes(self.global_state),
            # the YOCO paper's unit: client uploads x layers x LoRA modules
            "upload_units": uploads * upload_units(self.global_state)["units"],
            "skipped_rounds": [r["round"] for r in rows if r.get("skipped")],
            "resumed_after_rounds": s.folder.resumes(),
        }
        summary = {"algorithm": cfg.fl.algorithm, "resolved": s.resolved(), "final": final,
                   "totals": totals}
        s.plot(rows)
        s.finish(summary)
        return RunResult(s.out, rows, summary)

    def final_eval(self, rows: list[dict]) -> dict:
        """The test-set metrics of the end state (and ``client_eval`` when clients hold out
        samples)."""
        s = self.session
        if self.personal:
            states = dict(self.adapters.items())
            final = s.evaluate_clients(states) if states else s.evaluate(s.initial_state)
            if s.holdout:
                final["client_eval"] = s.evaluate_holdout(states=states)
            return final
        last = rows[-1] if rows else {}
        if last.get("round") == self.rounds and "eval" in last:  # just evaluated: not again
            return {**last["eval"], **({"client_eval": last["client_eval"]}
                                       if "client_eval" in last else {})}
        final = s.evaluate(self.global_state)  # the initial state when nothing trained
        if s.holdout:
            final["client_eval"] = s.evaluate_holdout(self.global_state)
        return final
