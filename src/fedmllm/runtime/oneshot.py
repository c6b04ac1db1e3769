"""One-shot federated LoRA: YOCO and the one-shot baselines (``fl.algorithm = yoco``).

Every client

1. starts from the *same* initial adapter (``fl.yoco.init``: ``pissa`` = peft's PiSSA, the
   top-r SVD factors of the frozen weight with the residual base ``W - s B0 A0``, so the
   initial model equals the pre-trained one; ``code`` = the YOCO release, ``B0`` from the SVD,
   ``A0`` random, base unchanged; ``default`` = peft's zero-``B`` LoRA; ``auto`` = ``pissa`` for
   ``yoco``, ``default`` for the baselines);
2. trains alone with the engine's :class:`~fedmllm.engine.client.ClientTrainer` for
   ``fl.yoco.local_epochs`` epochs (a *fixed* count: the paper reports the better of 5 and 10
   epochs on the test set; nothing here looks at the test set) or, with
   ``fl.yoco.select_epochs``, once per candidate count on all but a held-out
   ``fl.yoco.val_fraction`` of its own samples, keeping the candidate with the lowest loss on
   that held-out part; the client objective is :class:`~fedmllm.fl.YocoObjective` (``yoco``;
   ``gamma`` ramped over the client's own optimizer steps) or cross-entropy (the baselines);
3. uploads its adapter once. The run checkpoints after every finished client, so a run killed
   after client 6 of 10 resumes with the other 4.

The server merges once (``fl.yoco.method``): factor-wise with
:func:`~fedmllm.fl.merge_lora_uploads` (``yoco``: B by ``merge_b``, A by ``merge_a`` in variant
``full``, PCA-weighted by default; ``fedavg``/``mean``/``fedavgm``/``fedadam``/``fedadagrad``/
``fedyogi``: that rule for every key with ``fl.strategy`` as parameters; ``combine``), or on the
products ``B_i A_i`` with :func:`~fedmllm.fl.merge_lora_products` (``exact``,
``task_arithmetic``, ``magnitude_prune``, ``ties``, ``dare_linear``, ``dare_ties``). ``exact``
keeps the weighted mean of the products lossless as one LoRA of rank ``N r`` on a fresh copy of
the *original* base (``fl.yoco.product_rank = client`` re-factorizes to rank ``r``).
``ensemble`` merges nothing: every client adapter scores the test set and the option
probabilities are averaged (cost: N forward passes per sample). ``local`` reports the mean and
spread of the client models.

Communication: one upload per client (``bytes_uploaded``, :func:`~fedmllm.fl.upload_units`)
and one download: every client receives the result once (``bytes_downloaded`` = clients x
the merged adapter's bytes; rank ``N r`` for the lossless ``exact``; for ``ensemble`` every
client's adapter; nothing for ``local``). The shared initial adapter costs nothing: every
client derives it from the base weights and the run seed.

With ``fl.yoco.select_epochs`` and/or ``fl.yoco.select_lr`` each client picks its epochs and
learning rate on its own held-out split; with ``fl.yoco.upload_cache`` runs that differ only in
the merge share one training (:mod:`fedmllm.runtime.uploads`). Every run's row in
``metrics.jsonl`` carries the diagnostics of the YOCO study: the clients' drift from the
shared start, the sign conflicts of the uploads and of the updates, and the base's spectrum at
the LoRA rank (:func:`~fedmllm.fl.spectral_gap`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Iterator, Sequence

import torch

from ..config import Config, ConfigError
from ..engine.bundle import base_weights, build_bundle
from ..engine.checkpoint import (
    Checkpoint,
    check_compatible,
    config_digest,
    load_checkpoint,
    results_config,
    save_checkpoint,
)
from ..engine.client import ClientTrainer, batch_stream, local_lrs, local_steps, make_trainer
from ..engine.factory import FACTOR_METHODS, RunPlan, factor_rules
from ..engine.failpoints import failpoint
from ..fl import (
    PRODUCT_METHODS,
    ClientUpdate,
    merge_lora_products,
    merge_lora_uploads,
    spectral_gap,
)
from ..fl.oneshot import ADAPTIVE_RULES
from ..fl.oneshot.keys import lora_role
from ..model.collate import EncodedSamples, collate, to_device
from ..report.console import RoundProgress
from ..report.metrics import MetricsWriter
from ..seeding import torch_generator, torch_seed
from .executor import ClientReply, ClientTask, ExecutorFactory
from .rows import oneshot_diagnostics, oneshot_row, oneshot_summary
from .session import RunResult, Session, SessionDriver
from .uploads import CachedUploads, pack_uploads, training_inputs, unpack_uploads

log = logging.getLogger(__name__)


def _pca_k(k: float | None) -> float | int | None:
    if k is not None and k >= 1 and float(k).is_integer():
        return int(k)
    return k


def _subset(items, indices: list[int]):
    """``items`` at ``indices``; samples encoded per batch stay so
    (:meth:`~fedmllm.model.collate.EncodedSamples.subset`)."""
    if isinstance(items, EncodedSamples):
        return items.subset(indices)
    return [items[i] for i in indices]


class OneShotClient:
    """One client's part of a one-shot run, knowing no other client: its hold-out split (with
    ``fl.yoco.select_epochs``), its training from the shared initial adapter, its epoch choice.
    The in-process run makes one per client; a Flower ClientApp makes its own."""

    def __init__(self, cfg: Config, plan: RunPlan, trainer: ClientTrainer, items: Sequence,
                 client_id: int, initial_state: dict[str, torch.Tensor]):
        self.cfg, self.y, self.plan = cfg, cfg.fl.yoco, plan
        self.trainer, self.k, self.initial_state = trainer, client_id, initial_state
        self.train_items, self.val_items = items, []
        n = len(items)
        if self.selects and n >= 2:  # a client with one sample keeps it for training
            order = torch.randperm(n, generator=torch_generator(cfg.seed, "holdout", client_id))
            order = order.tolist()
            n_val = min(n - 1, max(1, round(self.y.val_fraction * n)))
            self.val_items = _subset(items, order[:n_val])
            self.train_items = _subset(items, sorted(order[n_val:]))

    @property
    def selects(self) -> bool:
        """Whether the client picks its epochs and/or learning rate on a held-out split."""
        return bool(self.y.select_epochs or self.y.select_lr)

    def candidates(self) -> list[tuple[float, float]]:
        """The ``(epochs, lr)`` pairs a selecting client trains: ``select_epochs`` (else
        ``local_epochs``) crossed with ``select_lr`` (else the run's rate)."""
        epochs = sorted(set(self.y.select_epochs or [self.y.local_epochs]))
        lrs = sorted(set(self.y.select_lr or [self.plan.lr]))
        return [(e, lr) for e in epochs for lr in lrs]

    def label(self, epochs: float, lr: float) -> str:
        """A candidate's name in ``val_loss``: ``"5"`` (epochs), or ``"5@0.001"`` where the
        learning rate is selected too."""
        return f"{epochs:g}@{lr:g}" if self.y.select_lr else f"{epochs:g}"

    @torch.no_grad()
    def validation_loss(self) -> float:
        """Mean token cross-entropy of the model's current adapter on the held-out samples
        (answer tokens only, as in training)."""
        b = self.trainer.bundle
        b.model.eval()
        total, tokens = 0.0, 0
        items, size = self.val_items, self.cfg.eval.batch_size
        for i in range(0, len(items), size):
            batch = to_device(collate(items[i:i + size], b.processor.tokenizer.pad_token_id),
                              b.device, b.dtype)
            n = int((batch["labels"][:, 1:] != -100).sum())
            with b.compute():
                total += float(b.model(**batch).loss) * n
            tokens += n
        return total / max(tokens, 1)

    def train_for(self, epochs: float, lr: float | None = None) -> ClientUpdate:
        """Trained from the shared initial adapter for ``epochs`` epochs at base rate ``lr``
        (default: the run's ``train.lr``), with ``train.local_lr_schedule`` inside the run."""
        cfg, k, data = self.cfg, self.k, self.train_items
        lr = self.plan.lr if lr is None else lr
        steps = local_steps(len(data), cfg.train.batch_size, cfg.train.grad_accum, epochs=epochs)
        if self.y.method == "yoco":
            self.trainer.objective.set_total_steps(steps)
        batches = batch_stream(data, cfg.train.batch_size,
                               torch_generator(cfg.seed, "batches", 1, k))
        lrs = local_lrs(lr, steps, cfg.train.local_lr_schedule, cfg.train.local_warmup_ratio)
        fit = self.trainer.fit(self.initial_state, {}, batches, lrs,
                               torch_seed(cfg.seed, "dropout", 1, k),
                               num_examples=len(data), client_id=k)
        fit.update.metrics["epochs"] = epochs
        fit.update.metrics["lr"] = lr
        return fit.update

    def upload(self) -> ClientUpdate:
        """The client's one upload: one fixed run, or the candidate of ``select_epochs`` x
        ``select_lr`` with the lowest loss on its held-out split (``metrics["val_loss"]``,
        by candidate label). Nothing here sees the test set."""
        if not self.val_items:
            return self.train_for(self.y.local_epochs)
        best, losses, tried = None, {}, 0
        for epochs, lr in self.candidates():  # a tie keeps the earlier: fewer epochs, lower lr
            update = self.train_for(epochs, lr)
            tried += update.metrics["steps"]
            losses[self.label(epochs, lr)] = loss = self.validation_loss()
            if best is None or loss < best[0]:
                best = (loss, update)
        best[1].metrics["val_loss"] = losses
        best[1].metrics["steps_tried"] = tried
        best[1].metrics["held_out"] = len(self.val_items)
        return best[1]


class OneShotExecutor:
    """A one-shot run's clients, trained here one after another: client ``k`` is a
    :class:`OneShotClient` over its samples ``clients[k]``, from the shared initial adapter
    (the start state of every one-shot task)."""

    def __init__(self, cfg: Config, plan: RunPlan, trainer: ClientTrainer,
                 clients: Sequence[Sequence], initial_state: dict[str, torch.Tensor]):
        self.cfg, self.plan, self.trainer = cfg, plan, trainer
        self.clients, self.initial_state = clients, initial_state
        self._local: dict[int, OneShotClient] = {}

    def client(self, k: int) -> OneShotClient:
        """Client ``k`` (made once: its held-out split is drawn once)."""
        if k not in self._local:
            self._local[k] = OneShotClient(self.cfg, self.plan, self.trainer, self.clients[k],
                                           k, self.initial_state)
        return self._local[k]

    def fit(self, tasks: Iterable[ClientTask]) -> Iterator[ClientReply]:
        for t in tasks:
            yield ClientReply(t.client_id, self.client(t.client_id).upload())


class OneShotRun(SessionDriver):
    """One one-shot experiment over a :class:`~fedmllm.runtime.session.Session`.

    ``clients`` builds the executor that trains the clients elsewhere (a Flower grid:
    :func:`~fedmllm.runtime.flower.server.grid_clients`); by default a
    :class:`OneShotExecutor` trains them here, one after another, its uploads shared through
    :class:`~fedmllm.runtime.uploads.CachedUploads` with ``fl.yoco.upload_cache``.
    """

    def __init__(self, session: Session, clients: ExecutorFactory | None = None):
        s = self.session = session
        self.cfg, self.y = s.cfg, s.cfg.fl.yoco
        self.trainer = make_trainer(self.cfg, s.plan, s.bundle)
        self.uploads: dict[int, ClientUpdate] = {}  # client id -> its one upload
        self.updates: list[ClientUpdate] = []  # the uploads in client order, once all are in
        self.global_state = s.initial_state  # the merged adapter, once merged
        self.cache: CachedUploads | None = None
        if clients is not None:
            self.executor = clients(s)
            return
        self.executor = OneShotExecutor(self.cfg, s.plan, self.trainer, s.clients,
                                        s.initial_state)
        if self.y.upload_cache:
            self.executor = self.cache = CachedUploads(
                self.executor, self.y.upload_cache, training_inputs(self.cfg, s.plan),
                s.bundle.device, self.cfg.fl.num_clients, held=self.uploads, console=s.console)

    # ------------------------------------------------------------------ merge
    def full_rank(self) -> bool:
        """Whether this run keeps the lossless rank-``N r`` product average."""
        return self.y.method == "exact" and self.y.product_rank in ("auto", "full")

    def merge(self, updates: list[ClientUpdate]) -> dict[str, torch.Tensor]:
        """The server's single merge of the single uploads (by ``fl.yoco.method``)."""
        cfg, y, s = self.cfg, self.y, self.session
        states = [u.state for u in updates]
        counts = [u.num_examples for u in updates]
        if y.method in PRODUCT_METHODS:
            return merge_lora_products(
                states, counts, method=y.method, rank=None if self.full_rank() else "client",
                initial=None if y.method == "exact" else s.initial_state, density=y.density,
                seed=torch_seed(cfg.seed, "dare"))
        rule_b, rule_a = factor_rules(cfg)
        plain = ("mean", "fedavg", "pca")

        def params(rule: str, own: dict | None) -> dict | None:
            if rule in plain:
                return None
            return dict(own) if own is not None else dict(cfg.fl.strategy)

        try:
            return merge_lora_uploads(
                states, counts, rule_B=rule_b, rule_A=rule_a, rule_other=rule_b,
                initial=s.initial_state, params_A=params(rule_a, y.params_a),
                params_B=params(rule_b, y.params_b), params_other=params(rule_b, y.params_b),
                pca_k=_pca_k(y.pca_k), pca_weighting=y.pca_weighting, pca_power=y.pca_power,
                pca_center=y.pca_center, pca_sample_weighted=y.pca_sample_weighted,
                fedopt_step=y.fedopt_step)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"fl.yoco / fl.strategy: {e}") from None

    def rank_bundle(self, merged: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Switch to a fresh copy of the original base wrapped with one LoRA that *is* the
        merged model (rank ``N r``, or ``(N + 1) r`` with ``-B_0 A_0`` appended for ``pissa``,
        whose residual base it does not use); return that LoRA's state."""
        s = self.session
        b, lora = s.bundle, s.plan.lora
        state = dict(merged)
        if b.init == "pissa":
            for key, value in merged.items():
                role = lora_role(key)
                if role == "A":
                    state[key] = torch.cat([value, s.initial_state[key]], dim=0)
                elif role == "B":
                    state[key] = torch.cat([value, -s.initial_state[key]], dim=1)
        (rank,) = {t.shape[0] for k, t in state.items() if lora_role(k) == "A"}
        merged_lora = dataclasses.replace(lora, r=rank, alpha=lora.alpha * rank / lora.r)
        evaluated = dataclasses.replace(s.plan.model, gradient_checkpointing=False,
                                        dtype=b.dtype)  # float32 for a quantized base
        s.bundle = build_bundle(dataclasses.replace(s.plan, lora=merged_lora, init="default",
                                                    model=evaluated))
        return state

    # ------------------------------------------------------------------ evaluation
    def evaluate_ensemble(self, states: list[dict[str, torch.Tensor]]) -> dict:
        """Average the option probabilities of every client adapter (and majority vote)."""
        from ..eval.evaluate import metrics_from_predictions

        views = self.cfg.eval.views
        preds = [self.session.evaluate(st, return_predictions=True)["_predictions"]
                 for st in states]
        result: dict = {"per_modality": {}}
        vote: dict = {}
        for name in views:
            samples, first = preds[0][name]
            if "probs" not in first:
                raise ConfigError("fl.yoco.method: 'ensemble' needs multiple-choice scoring "
                                  "(option probabilities)")
            stack = torch.stack([p[name][1]["probs"] for p in preds])  # N x S x K
            result["per_modality"][name] = metrics_from_predictions(
                samples, {"probs": stack.mean(0)})
            votes = torch.nn.functional.one_hot(stack.argmax(-1), stack.shape[-1]).sum(0)
            score = votes.double() + 1e-6 * stack.mean(0).double()  # ties: mean probability
            y_true = torch.tensor([smp.label for smp in samples])
            vote[name] = float((score.argmax(-1) == y_true).double().mean())
        result.update(result["per_modality"][views[0]])
        result["accuracy_vote"] = vote[views[0]]
        result["vote_per_modality"] = vote
        return result

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self) -> None:
        tensors, clients = pack_uploads(self.uploads)
        save_checkpoint(self.session.out, Checkpoint(
            kind="oneshot", step=len(self.uploads), metrics_rows=0,
            config_sha256=config_digest(self.cfg), config=results_config(self.cfg),
            tensors={"uploads": tensors}, state={"clients": clients}))

    def restore(self) -> None:
        ckpt = load_checkpoint(self.session.out)
        if ckpt is None:
            return
        check_compatible(ckpt, "oneshot", self.cfg)
        self.uploads.update(unpack_uploads(ckpt.tensors.get("uploads", {}),
                                           ckpt.state["clients"], self.session.bundle.device))

    # ------------------------------------------------------------------ training
    def collect(self) -> list[int]:
        """Every client's one upload not held yet, from the executor, checkpointing as they
        arrive (every ``fl.checkpoint_every`` uploads, and after the last); returns the
        clients with no upload."""
        s, n, every = self.session, self.cfg.fl.num_clients, self.cfg.fl.checkpoint_every
        pending = [k for k in range(n) if k not in self.uploads]  # every client, once
        tasks = [ClientTask(k, 1, s.initial_state, s.plan.lr) for k in pending]
        t0 = t1 = time.perf_counter()
        unsaved = False
        with RoundProgress(s.console, n, self.cfg.output.progress, n - len(pending),
                           what="clients trained") as progress:
            for reply in self.executor.fit(tasks) if tasks else ():
                if (upload := reply.update) is None:
                    continue
                self.uploads[reply.client_id] = upload
                progress.client_done()
                progress.print(f"client {reply.client_id}: {upload.metrics['steps']} steps "
                               f"({upload.metrics['epochs']:g} epochs), loss "
                               f"{upload.metrics['train_loss']:.4f}, "
                               f"{time.perf_counter() - t1:.1f} s")
                failpoint("client_trained", len(self.uploads))
                unsaved = True
                if every and (len(self.uploads) % every == 0 or len(self.uploads) == n):
                    self.checkpoint()
                    failpoint("client_checkpointed", len(self.uploads))
                    unsaved = False
                t1 = time.perf_counter()
        if every and unsaved:
            self.checkpoint()
        dropped = [k for k in pending if k not in self.uploads]
        if dropped:
            log.warning("one-shot: no upload from clients %s within %.0f s", dropped,
                        time.perf_counter() - t0)
        if not self.uploads:
            raise RuntimeError("no client upload arrived")
        return dropped

    def merge_and_evaluate(self, updates: list[ClientUpdate]) -> tuple[dict, dict]:
        """``(merged adapter, test metrics)``: the merge of ``fl.yoco.method`` evaluated and
        saved; ``local``: every client's model evaluated (nothing merged); ``ensemble``: the
        clients' averaged option probabilities."""
        y, s = self.y, self.session
        if y.method == "local":
            return s.initial_state, s.evaluate_clients({u.client_id: u.state for u in updates})
        if y.method == "ensemble":
            return s.initial_state, self.evaluate_ensemble([u.state for u in updates])
        merged = self.merge(updates)
        exported = self.full_rank()
        if exported:
            merged = self.rank_bundle(merged)
        final = s.evaluate(merged)
        pissa = s.plan.init == "pissa"
        s.save_adapter(merged, {"method": y.method, "init": s.plan.init,
                                "converted_from_pissa": pissa,
                                "rank": next(t.shape[0] for k, t in merged.items()
                                             if lora_role(k) == "A")},
                       pissa_initial=s.initial_state if pissa and not exported else None)
        return merged, final

    def spectrum(self) -> dict | None:
        """The base's shared structure at rank ``r`` (:func:`~fedmllm.fl.spectral_gap`; not
        for a quantized base)."""
        s = self.session
        if s.bundle.quantization != "none":
            return None
        return spectral_gap(base_weights(s.bundle, s.initial_state), s.plan.lora.r)

    # ------------------------------------------------------------------ the run
    def run(self, resume: bool = False) -> RunResult:
        """Every client's one upload (those not in the checkpoint, when resumed), the one
        merge and its evaluation, the row of ``metrics.jsonl`` and ``summary.json``."""
        s = self.session
        t_setup = time.perf_counter()
        if resume:
            self.restore()
            s.folder.record_resume(len(self.uploads))
        writer = MetricsWriter(s.out / "metrics.jsonl")
        setup_seconds = s.setup_seconds + time.perf_counter() - t_setup
        t0 = time.perf_counter()
        dropped = self.collect()
        train_seconds = time.perf_counter() - t0
        updates = self.updates = [self.uploads[k] for k in sorted(self.uploads)]
        init = s.bundle.init  # the bundle of the lossless merge's export has its own
        diagnostics = oneshot_diagnostics(updates, s.initial_state, self.spectrum())
        t1 = time.perf_counter()
        merged, final = self.merge_and_evaluate(updates)
        self.global_state = merged
        row = oneshot_row(
            self.y, init, s.plan.lr, updates, merged=merged, final=final,
            diagnostics=diagnostics, dropped=dropped,
            loaded_from=self.cache.loaded_from if self.cache else None,
            seconds={"eval": time.perf_counter() - t1, "train": train_seconds,
                     "all": time.perf_counter() - t0})
        rules = set(factor_rules(self.cfg)) if self.y.method in FACTOR_METHODS else set()
        row["fedopt_step"] = self.y.fedopt_step if rules & set(ADAPTIVE_RULES) else None
        writer.write(row)
        summary = oneshot_summary(self.cfg.fl.algorithm, s.resolved(), final, row,
                                  setup_seconds=setup_seconds, merged=merged,
                                  resumes=s.folder.resumes())
        failpoint("before_summary", len(updates))
        s.finish(summary)
        return RunResult(s.out, writer.rows, summary)
