"""What both drivers share: the plan, the output folder, the model, the encoded data, evaluation.

A :class:`Session` is made once per run, from its plan. It builds the plan's model
(:func:`~fedmllm.engine.bundle.build_bundle`; or takes one a caller built), takes the clients'
data (:func:`check_data` built and checked it before the run's folder was opened), encodes it,
writes the run's inputs beside its outputs, evaluates an adapter state on the test set, and
writes the run's last files (adapter, plot, summary).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import Config
from ..data.errors import DataError
from ..data.flip import flip_labels
from ..engine.bundle import ModelBundle, build_bundle, save_adapter
from ..engine.factory import RunPlan, build_attack
from ..eval.metrics import mean_over_clients, spread
from ..eval.threshold import choose_threshold, correct_counts
from ..files import atomic_write_json, atomic_write_text
from ..model.collate import Encoded, EncodedSamples
from .outputs import SUMMARY, RunFolder


@dataclass
class RunResult:
    """A finished run: its folder, its metrics rows and its summary."""

    out_dir: Path
    rows: list[dict] = field(default_factory=list)
    final: dict = field(default_factory=dict)


def encode_samples(processor, samples, strategy: str, max_len: int) -> list[Encoded]:
    """``samples`` encoded now, all of them (training reads :class:`EncodedSamples` instead,
    which encodes per batch)."""
    return EncodedSamples(processor, samples, strategy, max_len)[:]


def check_data(cfg: Config, data=None, test_only: bool = False):
    """The run's data, built and checked before its folder is written: ``data`` as a caller
    built it, or :func:`~fedmllm.data.build_federated_data` of ``cfg`` (a bad file or sample
    is its :class:`~fedmllm.data.errors.DataError`); every client must hold training
    samples. ``test_only``: the server of a federation, which holds only the test side
    (:func:`~fedmllm.data.build_test_data`; each node checks its own samples)."""
    if data is None:
        from ..data import build_federated_data, build_test_data

        build = build_test_data if test_only else build_federated_data
        data = build(cfg.data, cfg.fl.num_clients, cfg.seed)
    for k, samples in enumerate(data.clients):
        if not samples:
            raise DataError(f"client {k} has no training samples")
    return data


def poisoned(cfg: Config, clients: list[list]) -> list[list]:
    """The clients' training samples, a ``label_flip`` attacker's relabelled
    (:func:`~fedmllm.data.flip.flip_labels`; its held-out samples keep their labels)."""
    attack = build_attack(cfg)
    return [flip_labels(samples) if attack.flips_labels(k) else samples
            for k, samples in enumerate(clients)]


def split_holdout(clients: list[list], fraction: float, seed: int
                  ) -> tuple[list[list], dict[int, list]]:
    """Every client's samples split into training and held-out ones (``eval.client_holdout``):
    ``floor(fraction * n)`` held out (at most ``n - 1``), drawn from ``(seed, "client_holdout",
    k)``; both parts keep the clients' order. ``fraction == 0``: nothing is held out."""
    if not fraction:
        return list(clients), {}
    train, held = [], {}
    for k, samples in enumerate(clients):
        own, out = holdout_split(samples, fraction, seed, k)
        train.append(own)
        if out:
            held[k] = out
    return train, held


def holdout_split(samples: list, fraction: float, seed: int, k: int) -> tuple[list, list]:
    """Client ``k``'s part of :func:`split_holdout`: ``(training samples, held-out samples)``,
    what a federation's node splits off its own samples."""
    n = len(samples)
    h = min(int(fraction * n), n - 1)
    if h <= 0:
        return list(samples), []
    from ..seeding import numpy_rng

    out = set(numpy_rng(seed, "client_holdout", k).permutation(n)[:h].tolist())
    return ([s for i, s in enumerate(samples) if i not in out],
            [s for i, s in enumerate(samples) if i in out])


def holdout_metrics(bundle: ModelBundle, cfg: Config, samples: list, cache: dict | None = None
                    ) -> dict:
    """``samples`` (one client's held-out ones) scored by ``bundle``'s model with its adapter
    as set, the image and text view: ``{"n", "accuracy", "macro_f1", "auroc"}`` where the
    task has them, and with ``eval.threshold = calibrated`` on a binary task
    ``threshold_counts`` (:func:`~fedmllm.eval.threshold.correct_counts`: counts, no sample or
    score); the same function on the simulation's server and on a federation's node."""
    from ..eval import evaluate

    calibrate = cfg.eval.threshold == "calibrated"
    m = evaluate(bundle.model, bundle.processor, samples, cfg.data.prompt_strategy,
                 views=("image_text",), batch_size=cfg.eval.batch_size, device=bundle.device,
                 dtype=bundle.dtype, cache=cache, return_predictions=calibrate)
    out = {key: m[key] for key in ("n", "accuracy", "macro_f1", "auroc") if key in m}
    if calibrate:
        seen, pred = m["_predictions"]["image_text"]
        if "probs" in pred and pred["probs"].shape[1] == 2:
            out["threshold_counts"] = correct_counts([s.label for s in seen],
                                                     pred["probs"].numpy())
    return out


class Session:
    """The shared set-up of one run (see the module docstring)."""

    def __init__(self, cfg: Config, plan: RunPlan, folder: RunFolder, console=None,
                 bundle: ModelBundle | None = None, data=None):
        t0 = time.perf_counter()
        self.cfg, self.plan, self.folder, self.console = cfg, plan, folder, console
        self.bundle = bundle if bundle is not None else build_bundle(plan)
        self.data = data = data if data is not None else check_data(cfg)
        self.train_samples, self.holdout = split_holdout(data.clients, cfg.eval.client_holdout,
                                                         cfg.seed)
        self.train_samples = poisoned(cfg, self.train_samples)
        self._clients: list[EncodedSamples] | None = None
        self.initial_state = self.bundle.adapter.get()
        self._eval_cache: dict = {}  # encoded test prompts, reused by every evaluation
        self._holdout_cache: dict = {}  # the same for the clients' held-out samples
        self.reports: dict[int, dict] = {}  # what a federation's nodes said of their data
        #: client-side evaluation, ``{k: adapter state} -> {k: metrics}``: here, on
        #: :attr:`holdout`, or a federation's nodes on theirs (its executor sets it)
        self.score_holdout = self._score_holdout
        self.setup_seconds = time.perf_counter() - t0  # model loading, data building

    @property
    def clients(self) -> list[EncodedSamples]:
        """Every client's training samples, encoded per batch when a client trains
        (:class:`~fedmllm.model.collate.EncodedSamples`): the run holds the sample records,
        never every client's token ids and pixels."""
        if self._clients is None:
            cfg = self.cfg
            self._clients = [EncodedSamples(self.bundle.processor, samples,
                                            cfg.data.prompt_strategy, cfg.train.max_seq_len)
                             for samples in self.train_samples]
        return self._clients

    def pooled_clients(self) -> EncodedSamples:
        """Every client's training samples as one client's (centralized training), in client
        order, encoded per batch."""
        cfg = self.cfg
        return EncodedSamples(self.bundle.processor,
                              [s for samples in self.train_samples for s in samples],
                              cfg.data.prompt_strategy, cfg.train.max_seq_len)

    @property
    def out(self) -> Path:
        return self.folder.path

    def resolved(self) -> dict:
        """What the configuration's ``auto`` values became, for ``summary.json``."""
        p = self.plan
        return {"objective": p.objective, "optimizer": p.optimizer, "lr": p.lr,
                "max_update_norm": p.max_update_norm, "init": p.init,
                "lora": dataclasses.asdict(p.lora),
                **({"attack": build_attack(self.cfg).record()}
                   if self.cfg.fl.attack.kind != "none" else {})}

    def held_out(self) -> dict[int, int]:
        """How many samples each client holding some out holds out (``eval.client_holdout``):
        counted here, or as a federation's nodes reported them."""
        if self.reports:
            return {k: int(r["held-out"]) for k, r in sorted(self.reports.items())
                    if r["held-out"]}
        return {k: len(v) for k, v in self.holdout.items()}

    def record_clients(self, reports: dict[int, dict]) -> None:
        """What nodes of a federation said of their data (``{k: {"held-out": n, "summary":
        count summary}}``): kept, and written into ``data_manifest.json``."""
        self.reports.update(reports)
        self.save_data_manifest(again=True)

    def save_data_manifest(self, again: bool = False) -> None:
        """What data each client holds, beside the outputs (once, or ``again`` with what nodes
        reported since). A federation's server writes its test side and each node's counts
        (held-out sample ids stay on the nodes)."""
        if (self.out / "data_manifest.json").is_file() and not again:
            return
        manifest = self.data.manifest
        if self.reports:
            manifest = {**manifest, "clients": [dict(client=k, **r["summary"])
                                                for k, r in sorted(self.reports.items())]}
        held = self.held_out()
        if held:
            manifest = {**manifest, "client_holdout": {
                "fraction": self.cfg.eval.client_holdout,
                "held_out": {str(k): n for k, n in held.items()}}}
            if self.holdout:
                manifest["client_holdout"]["ids"] = {str(k): [s.id for s in v]
                                                     for k, v in self.holdout.items()}
        atomic_write_json(self.out / "data_manifest.json", manifest)

    def evaluate(self, state: dict[str, torch.Tensor], return_predictions: bool = False,
                 threshold: float | None = None) -> dict:
        """Metrics of the model with adapter ``state`` on the test set, per modality view
        (and ``accuracy_calibrated`` at a calibrated ``threshold``)."""
        from ..eval import evaluate
        from ..report.console import RoundProgress

        b, cfg = self.bundle, self.cfg
        b.adapter.set(state)
        n = len(self.data.test[:cfg.eval.max_samples] if cfg.eval.max_samples
                else self.data.test) * len(cfg.eval.views)
        with RoundProgress(self.console, n, cfg.output.progress,
                           what="test samples scored") as progress, b.compute():
            return evaluate(b.model, b.processor, self.data.test, cfg.data.prompt_strategy,
                            views=cfg.eval.views, batch_size=cfg.eval.batch_size,
                            device=b.device, dtype=b.dtype, max_samples=cfg.eval.max_samples,
                            return_predictions=return_predictions, cache=self._eval_cache,
                            progress=progress.client_done, threshold=threshold)

    def evaluate_global(self, state: dict[str, torch.Tensor]) -> tuple[dict, dict | None]:
        """``(test metrics, client_eval)`` of ``state``: :meth:`evaluate`, and
        :meth:`evaluate_holdout` when clients hold samples out (else ``None``). With
        ``eval.threshold = calibrated`` the held-out samples are scored first and their
        threshold is applied to the test set too."""
        held = bool(self.held_out())
        calibrated = held and self.cfg.eval.threshold == "calibrated"
        ce = self.evaluate_holdout(state) if calibrated else None
        test = self.evaluate(state, threshold=ce.get("threshold") if ce else None)
        if held and not calibrated:
            ce = self.evaluate_holdout(state)
        return test, ce

    def evaluate_holdout(self, state: dict[str, torch.Tensor] | None = None,
                         states: dict[int, dict[str, torch.Tensor]] | None = None) -> dict:
        """Client-side evaluation: ``state`` (or client k's own ``states[k]``, the initial
        adapter for a client without one) on every client's held-out samples as the client
        holds them (:attr:`score_holdout`); per client, and the
        :func:`~fedmllm.eval.metrics.spread` of accuracy over the clients (nested:
        ``{"accuracy": {"mean", "std", "min", "max"}}``); with ``eval.threshold = calibrated``
        the :func:`~fedmllm.eval.threshold.choose_threshold` of the clients' counts summed
        (``threshold``, ``calibration_accuracy``: its held-out accuracy), or per client for
        their own ``states``."""
        own = {k: state if states is None else states.get(k, self.initial_state)
               for k in self.held_out()}
        scored = self.score_holdout(own)
        per = {str(k): scored[k] for k in sorted(scored)}
        counts = {k: m.pop("threshold_counts") for k, m in per.items() if "threshold_counts" in m}
        accs = [m["accuracy"] for m in per.values() if isinstance(m.get("accuracy"), float)]
        out: dict = {"per_client": per}
        if accs:
            out["accuracy"] = spread(accs)
        if counts and states is not None:  # local-only: each client's model, its threshold
            for k, c in counts.items():
                t, correct = choose_threshold([c])
                per[k].update(threshold=t, calibration_accuracy=correct / per[k]["n"])
        elif counts:  # one model: the threshold of every client's held-out samples together
            t, correct = choose_threshold(counts.values())
            out.update(threshold=t, calibration_accuracy=correct / sum(per[k]["n"]
                                                                       for k in counts))
        return out

    def _score_holdout(self, states: dict[int, dict[str, torch.Tensor]]) -> dict[int, dict]:
        """Client ``k``'s held-out samples scored with ``states[k]``, for every ``k``, here."""
        out = {}
        for k, state in sorted(states.items()):
            self.bundle.adapter.set(state)
            out[k] = holdout_metrics(self.bundle, self.cfg, self.holdout[k],
                                     self._holdout_cache)
        return out

    def evaluate_clients(self, states: dict[int, dict[str, torch.Tensor]],
                         thresholds: dict[int, float] | None = None) -> dict:
        """Every client's own adapter on the test set (at its own calibrated threshold, where
        ``thresholds`` has one), and the spread over clients."""
        thresholds = thresholds or {}
        return mean_over_clients({k: self.evaluate(s, threshold=thresholds.get(k))
                                  for k, s in sorted(states.items())})

    def save_adapter(self, state: dict[str, torch.Tensor], meta: dict,
                     pissa_initial: dict[str, torch.Tensor] | None = None,
                     name: str = "adapter") -> None:
        """``state`` in PEFT format under ``name`` (loadable on the original base model)."""
        b = self.bundle
        save_adapter(b, state, self.out / name,
                     {"base_model": b.source, "algorithm": self.cfg.fl.algorithm, **meta},
                     pissa_initial=pissa_initial)

    def plot(self, rows: list[dict]) -> None:
        if self.cfg.output.plot and rows:
            from ..report.plots import plot_metrics

            cfg = self.cfg
            plot_metrics(rows, self.out / "metrics.png",
                         title=f"{cfg.fl.algorithm} on {cfg.data.dataset}/{cfg.data.task} "
                               f"({cfg.data.scenario})")

    def finish(self, summary: dict) -> None:
        """Write ``summary.json`` (the mark of a finished run), the adapters' model cards and
        the status."""
        from ..report.modelcard import write_model_card

        atomic_write_text(self.out / SUMMARY, json.dumps(summary, indent=2, default=str))
        write_model_card(self.out, summary, self.cfg, on_error="warn")
        self.folder.mark("finished")


class SessionDriver:
    """A driver over a :class:`Session` (:class:`~fedmllm.runtime.simulation.MultiRoundRun`,
    :class:`~fedmllm.runtime.oneshot.OneShotRun`): its model and the adapter every client
    starts from are the session's, read through it (a lossless one-shot merge replaces the
    session's model)."""

    session: Session

    @property
    def bundle(self) -> ModelBundle:
        return self.session.bundle

    @property
    def initial_state(self) -> dict[str, torch.Tensor]:
        return self.session.initial_state
