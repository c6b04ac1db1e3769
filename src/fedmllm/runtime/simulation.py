"""The multi-round federated simulation: one model in memory, client adapters swapped in.

Per round ``r`` (from the last checkpoint on, when resumed), in :meth:`MultiRoundRun.run_round`::

    lr      = round_lr(r)                                   the round's client learning rate
    clients = sample_clients(num_clients, per_round, r, seed)
                                                            per_round = fl.trained_per_round():
                                                            every client for local-only
                                                            training (fl.local_clients = all)
    tasks   = [task(k) for k in clients]                    start state (the global adapter, or
                                                            k's own for local-only training),
                                                            server extras, k's kept state, lr
    replies = executor.fit(tasks)                           (in process, or a Flower grid)
    outcome = server_round(replies)                         validate, aggregate, check, count;
                                                            keep each accepted client's new
                                                            state (SCAFFOLD c_i)
                                                            (secure aggregation over Flower:
                                                            the replies' statistics and their
                                                            mean update, fit_round)
    row     = round_row(...)                                evaluated every eval.every rounds

then the row is written and, every ``fl.checkpoint_every`` rounds, the checkpoint; at the end
the final evaluation, the adapter, the plot and ``summary.json`` (:mod:`.rows`). Every random
draw comes from ``(seed, purpose, round, client)`` (:mod:`fedmllm.seeding`), so a client's
update does not depend on the clients before it, and a resumed run ends with the same adapter,
bit for bit, as one that was never interrupted.
"""

from __future__ import annotations

import logging
import time

from ..engine.checkpoint import (
    Checkpoint,
    check_compatible,
    config_digest,
    load_checkpoint,
    results_config,
    save_checkpoint,
)
from ..engine.client import local_steps, make_trainer
from ..engine.factory import build_strategy
from ..engine.failpoints import failpoint
from ..engine.server import RoundResult, ServerRound
from ..engine.state import ClientStateStore
from ..fl import round_lr, sample_clients
from ..report.console import RoundProgress, header
from ..report.metrics import MetricsWriter
from ..report.tensorboard import open_events
from .executor import (
    ClientReply,
    ClientTask,
    ExecutorFactory,
    InProcessExecutor,
    SecureAggregate,
)
from .rows import multiround_summary, round_row
from .session import RunResult, Session, SessionDriver

log = logging.getLogger(__name__)


class MultiRoundRun(SessionDriver):
    """One multi-round experiment over a :class:`~fedmllm.runtime.session.Session`.

    ``clients`` builds the executor that trains a round's clients elsewhere (a Flower grid:
    :func:`~fedmllm.runtime.flower.server.grid_clients`); by default an
    :class:`~fedmllm.runtime.executor.InProcessExecutor` trains them here. Everything else —
    sampling, the server round, evaluation, checkpoints, outputs — is the same for both.
    """

    def __init__(self, session: Session, clients: ExecutorFactory | None = None):
        t0 = time.perf_counter()
        s = self.session = session
        cfg, plan = s.cfg, s.plan
        self.cfg = cfg
        self.strategy = build_strategy(plan)
        self.trainer = make_trainer(cfg, plan, s.bundle)
        self.objective = self.trainer.objective
        self.server = ServerRound(self.strategy, max_update_norm=plan.max_update_norm,
                                  min_clients=cfg.fl.min_clients)
        self.accountant = plan.privacy.accountant() if plan.privacy else None  # fl.privacy
        self.personal = self.strategy.personalized  # local-only: each client keeps its adapter
        self.pooled = self.strategy.pooled  # centralized: one client holding all the data
        self.rounds = cfg.fl.rounds if self.strategy.trains_clients else 0
        self.global_state = s.initial_state
        self.client_states = ClientStateStore()  # e.g. SCAFFOLD's c_i
        self.adapters = ClientStateStore()  # local-only clients' own adapters
        self.accepted_round: dict[int, int] = {}  # client id -> last round the server kept
        self.done = 0  # rounds completed
        if clients is not None:
            self.executor = clients(s)
        else:  # the clients' sample lists (encoded per batch, when trained)
            self.executor = InProcessExecutor(self.trainer, cfg, [s.pooled_clients()]
                                              if self.pooled else s.clients)
        s.setup_seconds += time.perf_counter() - t0

    # ------------------------------------------------------------------ one client
    def start_state(self, k: int) -> dict:
        """What client ``k`` starts its round from: the global adapter, or for local-only
        training its own (the initial adapter before its first round)."""
        if self.personal:
            return self.adapters.get(k) or self.session.initial_state
        return self.global_state

    def task(self, k: int, round_: int, lr: float, server_extras: dict) -> ClientTask:
        """Client ``k``'s task in round ``round_``. Centralized training's round is one task
        for client 0 holding every client's samples, for as many steps as the round's sampled
        clients would take together: ``clients_per_round x local_steps``, or with
        ``local_epochs`` that many epochs times the sampled share of the clients over the
        pooled data."""
        if not self.pooled:
            return ClientTask(k, round_, self.start_state(k), lr, server_extras,
                              self.client_states.get(k),
                              accepted_round=self.accepted_round.get(k, -1))
        cfg, tr = self.cfg, self.cfg.train
        per_round = min(cfg.fl.clients_per_round, cfg.fl.num_clients)
        if cfg.fl.local_epochs is None:
            steps = per_round * cfg.fl.local_steps
        else:
            pooled = sum(len(samples) for samples in self.session.train_samples)
            steps = local_steps(pooled, tr.batch_size, tr.grad_accum,
                                epochs=cfg.fl.local_epochs * per_round / cfg.fl.num_clients)
        return ClientTask(0, round_, self.global_state, lr, steps=steps)

    def train_client(self, k: int, round_: int, lr: float, server_extras: dict) -> ClientReply:
        """Client ``k``'s local run in round ``round_`` alone, by the run's executor."""
        return next(iter(self.executor.fit([self.task(k, round_, lr, server_extras)])))

    # ------------------------------------------------------------------ one round
    def run_round(self, r: int, progress: RoundProgress) -> dict:
        """Round ``r``, top to bottom; returns its metrics row."""
        cfg = self.cfg
        t0 = time.perf_counter()
        lr = round_lr(r, self.rounds, self.session.plan.lr, cfg.train.lr_schedule,
                      cfg.train.warmup_rounds, cfg.train.min_lr_ratio)
        chosen = [0] if self.pooled else \
            sample_clients(cfg.fl.num_clients, cfg.fl.trained_per_round(), r, cfg.seed)
        server_extras = {} if self.personal else self.strategy.server_extras()
        replies, secure = self.fit_round([self.task(k, r, lr, server_extras) for k in chosen],
                                         r, progress)
        outcome = self.server_round(r, replies, server_extras) if secure is None else \
            self.secure_server_round(r, secure)
        train_seconds = time.perf_counter() - t0
        evaluation = self.evaluate_round(r)
        return round_row(r, ["all"] if self.pooled else chosen, lr, replies, outcome,
                         evaluation, time.perf_counter() - t0, train_seconds,
                         privacy_epsilon=self.accountant and self.accountant.epsilon(r))

    def fit_round(self, tasks: list[ClientTask], r: int, progress: RoundProgress
                  ) -> tuple[list[ClientReply], SecureAggregate | None]:
        """The round's replies, taken as each arrives; from an executor with
        ``secure_aggregation`` (SecAgg+ over Flower) the replies hold statistics only, and
        the one aggregate that replaces the clients' states comes with them."""
        secure = None
        if getattr(self.executor, "secure_aggregation", False):
            arriving, secure = self.executor.fit_secure(tasks)
        else:
            arriving = self.executor.fit(tasks)
        replies = []
        for reply in arriving:
            replies.append(reply)
            if reply.update is None:
                log.warning("round %d: no reply from client %d", r, reply.client_id)
            else:
                progress.client_done()
        return replies, secure

    def secure_server_round(self, r: int, secure: SecureAggregate) -> RoundResult:
        """Round ``r`` on the server from the secure aggregate alone
        (:meth:`~fedmllm.engine.server.ServerRound.run_mean`); the rules that run with it keep
        no client state."""
        if secure.halted:
            log.warning("round %d: %s", r, secure.halted)
        outcome = self.server.run_mean(self.global_state, secure.mean_delta, secure.clients,
                                       secure.num_examples, r)
        self.global_state = outcome.global_state
        for k in outcome.accepted:
            self.accepted_round[k] = r
        if outcome.skipped:
            log.warning("round %d skipped: %s", r, outcome.skipped)
        return outcome

    def server_round(self, r: int, replies: list[ClientReply], server_extras: dict
                     ) -> RoundResult:
        """Round ``r`` on the server: validate and aggregate the updates that arrived
        (:class:`~fedmllm.engine.server.ServerRound`) and keep the accepted clients' new
        state; local-only clients keep what they trained, centralized training's model is
        the pooled client's (nothing sent, nothing to validate)."""
        fits = [rep for rep in replies if rep.update is not None]
        updates = [rep.update for rep in fits]
        if self.personal:  # no aggregation; every client keeps what it trained
            for rep in fits:
                self.adapters.put(rep.update.client_id, rep.update.state)
            return RoundResult(self.global_state)
        if self.pooled:
            self.global_state = self.strategy.aggregate(self.global_state, updates, r)
            return RoundResult(self.global_state, accepted=[0])
        outcome = self.server.run(self.global_state, updates, r, server_extras)
        self.global_state = outcome.global_state
        for rep in fits:
            if rep.update.client_id in outcome.accepted:
                self.client_states.put(rep.update.client_id, rep.client_state)
        for k in outcome.accepted:
            self.accepted_round[k] = r
        for cid, reason in outcome.rejected:
            log.warning("round %d: rejected update of client %d: %s", r, cid, reason)
        if outcome.skipped:
            log.warning("round %d skipped: %s", r, outcome.skipped)
        return outcome

    def evaluate_round(self, r: int) -> dict:
        """The global adapter's test metrics (``eval``, and ``client_eval`` when clients hold
        out samples) every ``eval.every`` rounds and after the last; nothing for local-only
        training (its clients are evaluated at the end)."""
        if self.personal or not (r % self.cfg.eval.every == 0 or r == self.rounds):
            return {}
        test, ce = self.session.evaluate_global(self.global_state)
        return {"eval": test, **({"client_eval": ce} if ce is not None else {})}

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self, rows: int) -> None:
        save_checkpoint(self.session.out, Checkpoint(
            kind="multiround", step=self.done, metrics_rows=rows,
            config_sha256=config_digest(self.cfg), config=results_config(self.cfg),
            tensors={"global": self.global_state, "strategy": self.strategy.state_dict(),
                     "client_state": self.client_states.state_dict(),
                     "adapters": self.adapters.state_dict()},
            state={"clients": {"accepted_round": {str(k): r for k, r in
                                                  self.accepted_round.items()}}}))

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
        accepted = ckpt.state.get("clients", {}).get("accepted_round", {})
        self.accepted_round = {int(k): int(r) for k, r in accepted.items()}
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
        per_round = 1 if self.pooled else cfg.fl.trained_per_round()
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
        return self.finish(writer.rows, setup_seconds)

    def finish(self, rows: list[dict], setup_seconds: float) -> RunResult:
        """The end of the run: the final evaluation, the adapter(s), the plot, the summary."""
        cfg, s = self.cfg, self.session
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
        summary = multiround_summary(
            cfg.fl.algorithm, s.resolved(), final, rows, rounds=self.rounds,
            count_uploads=not (self.personal or self.pooled), setup_seconds=setup_seconds,
            global_state=self.global_state, resumes=s.folder.resumes(),
            privacy=self.accountant and self.accountant.summary(
                self.rounds, **s.plan.privacy.record()))
        s.plot(rows)
        s.finish(summary)
        return RunResult(s.out, rows, summary)

    def final_eval(self, rows: list[dict]) -> dict:
        """The test-set metrics of the end state (and ``client_eval`` when clients hold out
        samples; local-only with ``eval.threshold = calibrated``: each client's threshold from
        its own held-out samples, on its own adapter's test metrics)."""
        s = self.session
        if self.personal:
            states = dict(self.adapters.items())
            calibrated = s.held_out() and self.cfg.eval.threshold == "calibrated"
            ce = s.evaluate_holdout(states=states) if calibrated else None
            thresholds = {int(k): m["threshold"] for k, m in ce["per_client"].items()
                          if "threshold" in m} if ce else None
            final = s.evaluate_clients(states, thresholds) if states else \
                s.evaluate(s.initial_state)
            if s.held_out():
                final["client_eval"] = ce or s.evaluate_holdout(states=states)
            return final
        last = rows[-1] if rows else {}
        if last.get("round") == self.rounds and "eval" in last:  # just evaluated: not again
            return {**last["eval"], **({"client_eval": last["client_eval"]}
                                       if "client_eval" in last else {})}
        final, ce = s.evaluate_global(self.global_state)  # the initial state when untrained
        if ce is not None:
            final["client_eval"] = ce
        return final
