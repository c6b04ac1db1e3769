"""One-shot federated LoRA in the simulator: YOCO and the one-shot baselines.

``fl.algorithm = "yoco"`` (or its alias ``"oneshot"``) runs the method ``fl.yoco.method``
(default ``"yoco"``). Every client

1. starts from the *same* initial adapter (``fl.yoco.init``: ``pissa`` = peft's
   ``init_lora_weights="pissa"``, the top-r SVD factors of the frozen weight with the residual
   base ``W - s B0 A0``, so the initial model equals the pre-trained one; ``code`` = the released
   code, ``B0`` from the SVD, ``A0`` peft's random init, base unchanged; ``default`` = peft's
   zero-``B`` LoRA init; ``auto`` = ``pissa`` for ``yoco``, ``default`` for the baselines);
2. trains alone for ``fl.yoco.local_epochs`` epochs (a *fixed* count: the paper reports the
   better of epochs 5 and 10 on the test set; nothing here looks at the test set) or, with
   ``fl.yoco.select_epochs``, once per candidate count on all but a held-out
   ``fl.yoco.val_fraction`` of its own samples, keeping the candidate with the lowest loss on
   that held-out split (a client-side choice: clients may choose differently), with the
   :class:`~fedmllm.fl.YocoObjective` (``yoco``; its ``variant`` decides the penalties and the
   soft-sign sharpness ``gamma`` is ramped over the client's own total optimizer steps) or
   plain cross-entropy (the baselines);
3. uploads its adapter once.

The server merges once: :func:`~fedmllm.fl.merge_lora_uploads` (``yoco``: B by
``fl.yoco.merge_b``, A by ``fl.yoco.merge_a`` in variant ``full`` — PCA-weighted by default —
and by ``merge_b`` in the other variants; ``fedavg``/``mean``/``fedavgm``/``fedadam``/
``fedadagrad``/``fedyogi``: that rule for every key, ``fl.strategy`` as its parameters;
``combine``: B by ``merge_b``, A by ``merge_a``) or :func:`~fedmllm.fl.merge_lora_products`
on the products ``B_i A_i`` (``exact``/``task_arithmetic``/``magnitude_prune``/``ties``/
``dare_linear``/``dare_ties``; ``density = fl.yoco.density``, DARE seeded by ``seed``). The
merged product is re-factorized by truncated SVD to the clients' rank ``lora.r``
(``fl.yoco.product_rank = "client"``, the default except for ``exact``), or, for ``exact``
(``"full"``, its default), kept lossless as one LoRA of rank ``N r``: ``A_g = [A_1; ...; A_N]``,
``B_g = [w_1 B_1, ..., w_N B_N]``, evaluated and saved on a fresh copy of the *original* base
with ``lora_alpha`` scaled so that the LoRA scale ``alpha / r`` is the clients' (with ``pissa``
the saved adapter also carries ``-B_0 A_0``: rank ``(N + 1) r``).
``ensemble`` merges nothing: at evaluation every client adapter scores the test set and the
option probabilities are averaged (and, separately, majority-voted); its cost, N forward
passes per test sample and N adapters stored, is reported. ``local`` reports the mean and
spread of the client models on the test set.

Targets (``fl.yoco.targets``): the paper's LoRA rank 8, alpha 8, dropout 0.05 on the last
language-model layer's ``q_proj`` (``paper``); the ``lora.*`` keys (``lora``); ``auto`` (default)
= ``paper`` when every ``lora.*`` key is at its default value, else ``lora``.

Communication: one upload per client (``bytes_uploaded``, :func:`~fedmllm.fl.upload_units`);
``bytes_downloaded`` is 0, since every client derives the shared initial adapter from the base
weights and the run seed (the merged adapter's size is reported as ``adapter_bytes``).

The merged adapter is saved in PEFT format under ``adapter/``; with ``pissa`` it is converted
by peft (``save_pretrained(..., path_initial_model_for_weight_conversion=...)``) to a rank-2r
LoRA ``[A; A0]``, ``[B, -B0]`` that loads on the *original* base model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import statistics
import time
from pathlib import Path

import torch

from ..config import Config, ConfigError, LoraConfig
from ..fl import (
    UPLOAD_RULES,
    ClientUpdate,
    conflict_report,
    make_objective,
    merge_lora_products,
    merge_lora_uploads,
    upload_units,
)
from ..fl.merge import PRODUCT_METHODS, lora_module, lora_role
from ..model.collate import to_device
from .setup import ModelBundle, build_bundle, save_adapter
from .simulator import RunResult, Simulator, state_bytes

log = logging.getLogger(__name__)

#: ``fl.algorithm`` values that run this driver.
ONESHOT_ALGORITHMS = ("yoco", "oneshot")

#: the paper's LoRA targets (YOCO, Sec. 5): rank 8, alpha 8, dropout 0.05, last layer q_proj.
PAPER_TARGETS = {"r": 8, "alpha": 8.0, "dropout": 0.05, "modules": ["q_proj"], "layers": [-1],
                 "target_regex": None}


def resolve_init(cfg: Config) -> str:
    y = cfg.fl.yoco
    if y.init != "auto":
        return y.init
    return "pissa" if y.method == "yoco" else "default"


def resolve_lora(cfg: Config) -> LoraConfig:
    """The LoRA targets of a one-shot run (see the module docstring, ``fl.yoco.targets``)."""
    mode = cfg.fl.yoco.targets
    if mode == "auto":
        mode = "paper" if cfg.lora == LoraConfig() else "lora"
    if mode == "lora":
        return cfg.lora
    return dataclasses.replace(cfg.lora, **PAPER_TARGETS)


def oneshot_config(cfg: Config) -> Config:
    """``cfg`` with the resolved LoRA targets written into ``lora.*`` (what the run uses)."""
    return dataclasses.replace(cfg, lora=resolve_lora(cfg))


def load_oneshot_bundle(cfg: Config, source: str | None = None) -> ModelBundle:
    """Model + processor wrapped with the one-shot targets and initial adapter of ``cfg``.

    ``pissa``: peft's PiSSA init (base weight replaced by the residual). ``code``: peft default
    wrap, then every module's ``A``/``B`` set by :func:`~fedmllm.fl.code_init` of its frozen
    weight (``A0`` drawn from a generator seeded by ``seed``). ``default``: peft's LoRA init.
    """
    from ..fl import code_init
    from ..model.loading import resolve_device, resolve_dtype
    from .setup import build_bundle, model_source

    lora = resolve_lora(cfg)
    init = resolve_init(cfg)
    device = resolve_device(cfg.train.device)
    bundle = build_bundle(source or model_source(cfg), device,
                          resolve_dtype(cfg.model.dtype, device), lora, cfg.seed,
                          cfg.model.modules_to_save, init=init)
    if init == "code":
        gen = torch.Generator().manual_seed(cfg.seed)
        state = bundle.adapter.get()
        for key in sorted(state):
            if lora_role(key) != "A":
                continue
            kb = key.replace("lora_A", "lora_B")
            weight = bundle.model.get_submodule(lora_module(key)).base_layer.weight
            a0, b0 = code_init(weight.detach().float().cpu(), lora.r, generator=gen)
            state[key], state[kb] = a0.to(state[key]), b0.to(state[kb])
        bundle.adapter.set(state)
    return bundle


def _pca_k(k: float | None) -> float | int | None:
    if k is not None and k >= 1 and float(k).is_integer():
        return int(k)
    return k


class OneShot(Simulator):
    """The one-shot driver (see the module docstring); reuses the simulator's client training
    (:meth:`Simulator.train_client`) and evaluation (:meth:`Simulator.evaluate`).

    A ``bundle`` passed in must come from :func:`load_oneshot_bundle` with the same targets and
    init (its adapter holding the initial state); it is used as is.
    """

    def __init__(self, cfg: Config, console=None, bundle: ModelBundle | None = None, data=None):
        super().__init__(oneshot_config(cfg), console=console, bundle=bundle, data=data)
        self.exported = False  # True once rank_bundle holds a LoRA for the original base

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        cfg = self.cfg
        y = cfg.fl.yoco
        if self._bundle is None:
            self._bundle = load_oneshot_bundle(cfg)
        self._check_rules()
        saved = self.cfg
        # The parent set-up builds a multi-round strategy/objective; give it plain fedavg/ce.
        self.cfg = dataclasses.replace(
            cfg, fl=dataclasses.replace(cfg.fl, algorithm="fedavg", strategy={},
                                        client=dataclasses.replace(cfg.fl.client,
                                                                   objective="ce")))
        try:
            super().setup()
        finally:
            self.cfg = saved
        self.init = self.bundle.init
        if y.method == "yoco":
            try:
                self.objective = make_objective(
                    "yoco", variant=y.variant, a_penalty=y.a_penalty, lam=y.lam,
                    gamma_min=y.gamma_min, gamma_max=y.gamma_max,
                    calls_per_step=cfg.train.grad_accum)
            except ValueError as e:
                raise ConfigError(f"fl.yoco: {e}") from None
        else:
            self.objective = make_objective("ce")
        self.epochs: dict[int, float] = {}
        self.val_sets: dict[int, list] = {}
        if y.select_epochs:
            self._hold_out()

    def _hold_out(self) -> None:
        """Split every client's samples into training and a held-out validation part (seeded
        by ``seed`` and the client index; a client with one sample keeps it for training)."""
        from .setup import ClientData

        frac = self.cfg.fl.yoco.val_fraction
        for k, client in enumerate(self.clients):
            n = len(client)
            if n < 2:
                continue
            g = torch.Generator().manual_seed(self.cfg.seed * 7919 + k)
            order = torch.randperm(n, generator=g).tolist()
            n_val = min(n - 1, max(1, round(frac * n)))
            self.val_sets[k] = [client.encoded[i] for i in order[:n_val]]
            self.clients[k] = ClientData([client.encoded[i] for i in sorted(order[n_val:])],
                                         seed=client.seed)

    @torch.no_grad()
    def validation_loss(self, k: int) -> float:
        """Mean token cross-entropy of the model's current adapter on client ``k``'s held-out
        samples (answer tokens only, as in training)."""
        from .simulator import _collate

        b, model = self.bundle, self.bundle.model
        was_training = model.training
        model.eval()
        total, tokens = 0.0, 0
        items = self.val_sets[k]
        for i in range(0, len(items), self.cfg.eval.batch_size):
            batch = to_device(_collate(items[i:i + self.cfg.eval.batch_size], b), b.device,
                              b.dtype)
            n = int((batch["labels"][:, 1:] != -100).sum())
            total += float(model(**batch).loss) * n
            tokens += n
        model.train(was_training)
        return total / max(tokens, 1)

    def train_selected(self, k: int) -> ClientUpdate:
        """Client ``k``'s upload: one fixed-epoch training, or the best of ``select_epochs`` on its
        held-out split (``metrics["val_loss"]`` per candidate, ``metrics["epochs"]`` chosen)."""
        y = self.cfg.fl.yoco
        if k not in self.val_sets:
            return self._train_for(k, y.local_epochs)
        updates, losses = {}, {}
        for epochs in sorted(set(y.select_epochs)):
            updates[epochs] = self._train_for(k, epochs)
            losses[epochs] = self.validation_loss(k)
        chosen = min(losses, key=losses.__getitem__)  # a tie keeps the fewer epochs
        self.epochs[k] = chosen
        updates[chosen].metrics["val_loss"] = losses
        return updates[chosen]

    def _train_for(self, k: int, epochs: float) -> ClientUpdate:
        """Client ``k`` trained from the shared initial adapter for ``epochs`` epochs."""
        self.epochs[k] = epochs
        if self.cfg.fl.yoco.method == "yoco":
            self.objective.set_total_steps(self.local_steps(k))
        update = self.train_client(k, self.initial_state, 1, self.cfg.train.lr, {})
        update.metrics["epochs"] = epochs
        return update

    def _check_rules(self) -> None:
        y = self.cfg.fl.yoco
        if y.local_epochs <= 0:
            raise ConfigError("fl.yoco.local_epochs: must be > 0")
        for key, rule in (("merge_b", y.merge_b), ("merge_a", y.merge_a)):
            if rule not in UPLOAD_RULES:
                raise ConfigError(f"fl.yoco.{key}: unknown rule {rule!r}; choices: "
                                  f"{', '.join(UPLOAD_RULES)}")
        if y.merge_b == "pca":
            raise ConfigError("fl.yoco.merge_b: 'pca' is a rule for A (fl.yoco.merge_a)")
        if not 0.0 < y.density <= 1.0:
            raise ConfigError("fl.yoco.density: must lie in (0, 1]")
        if y.select_epochs is not None and (not y.select_epochs
                                            or any(e <= 0 for e in y.select_epochs)):
            raise ConfigError("fl.yoco.select_epochs: give one or more epoch counts > 0")
        if not 0.0 < y.val_fraction < 1.0:
            raise ConfigError("fl.yoco.val_fraction: must lie in (0, 1)")
        if y.product_rank == "full" and y.method != "exact":
            raise ConfigError("fl.yoco.product_rank: 'full' applies to method 'exact' only")

    def full_rank(self) -> bool:
        """Whether this run keeps the lossless rank-``N r`` product average."""
        y = self.cfg.fl.yoco
        return y.method == "exact" and y.product_rank in ("auto", "full")

    def local_steps(self, k: int) -> int:
        return self.epoch_steps(k, self.epochs.get(k, self.cfg.fl.yoco.local_epochs))

    # ------------------------------------------------------------------ merge
    def merge(self, updates: list[ClientUpdate]) -> dict[str, torch.Tensor]:
        """The server's single merge of the single uploads (by ``fl.yoco.method``)."""
        cfg, y = self.cfg, self.cfg.fl.yoco
        states = [u.state for u in updates]
        counts = [u.num_examples for u in updates]
        params = dict(cfg.fl.strategy)
        method = y.method
        if method in PRODUCT_METHODS:
            return merge_lora_products(states, counts, method=method,
                                       rank=None if self.full_rank() else "client",
                                       initial=None if method == "exact" else self.initial_state,
                                       density=y.density, seed=cfg.seed)
        if method == "yoco":
            rule_b = y.merge_b
            rule_a = y.merge_a if y.variant == "full" else y.merge_b
        elif method == "combine":
            rule_b, rule_a = y.merge_b, y.merge_a
        else:
            rule_b = rule_a = method
        plain = ("mean", "fedavg", "pca")

        def p(rule, own):
            if rule in plain:
                return None
            return dict(own) if own is not None else params

        try:
            return merge_lora_uploads(
                states, counts, rule_B=rule_b, rule_A=rule_a,
                rule_other=rule_b,
                initial=self.initial_state, params_A=p(rule_a, y.params_a),
                params_B=p(rule_b, y.params_b), params_other=p(rule_b, y.params_b), pca_k=_pca_k(y.pca_k), pca_weighting=y.pca_weighting)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"fl.yoco / fl.strategy: {e}") from None

    # ------------------------------------------------------------------ eval
    def evaluate_ensemble(self, states: list[dict[str, torch.Tensor]]) -> dict:
        """Average the option probabilities of every client adapter (and majority vote)."""
        from ..eval.evaluate import metrics_from_predictions

        preds = [self.evaluate(s, return_predictions=True)["_predictions"] for s in states]
        result: dict = {"per_modality": {}}
        vote: dict = {}
        for name in self.cfg.eval.views:
            samples, first = preds[0][name]
            if "probs" not in first:
                raise ConfigError("fl.yoco.method: 'ensemble' needs multiple-choice scoring "
                                  "(option probabilities)")
            stack = torch.stack([p[name][1]["probs"] for p in preds])  # N x S x K
            result["per_modality"][name] = metrics_from_predictions(
                samples, {"probs": stack.mean(0)})
            votes = torch.nn.functional.one_hot(stack.argmax(-1), stack.shape[-1]).sum(0)
            # ties broken by the averaged probability
            score = votes.double() + 1e-6 * stack.mean(0).double()
            y_true = torch.tensor([s.label for s in samples])
            vote[name] = float((score.argmax(-1) == y_true).double().mean())
        result.update(result["per_modality"][self.cfg.eval.views[0]])
        result["accuracy_vote"] = vote[self.cfg.eval.views[0]]
        result["vote_per_modality"] = vote
        return result

    def evaluate_local(self, states: dict[int, dict[str, torch.Tensor]]) -> dict:
        per_client = {k: self.evaluate(s) for k, s in sorted(states.items())}
        accs = [m["accuracy"] for m in per_client.values() if m.get("accuracy") is not None]
        summary: dict = {"per_client": per_client}
        if accs:
            summary.update(accuracy=statistics.fmean(accs), accuracy_std=statistics.pstdev(accs),
                           accuracy_min=min(accs), accuracy_max=max(accs))
        aurocs = [m["auroc"] for m in per_client.values() if m.get("auroc") is not None]
        if aurocs:
            summary["auroc"] = statistics.fmean(aurocs)
        return summary

    # ------------------------------------------------------------------ run
    def run(self) -> RunResult:
        from ..report.metrics import MetricsWriter

        cfg, y = self.cfg, self.cfg.fl.yoco
        out = self.prepare_output()
        t_setup = time.perf_counter()
        self.setup()
        self.save_run_inputs(out)
        setup_seconds = time.perf_counter() - t_setup
        writer = MetricsWriter(out / "metrics.jsonl")
        result = RunResult(out)
        t0 = time.perf_counter()
        updates: list[ClientUpdate] = []
        # One-shot: every client takes part, once, with the constant learning rate train.lr.
        for k in range(len(self.clients)):
            updates.append(self.train_selected(k))
        train_seconds = time.perf_counter() - t0
        self.updates = updates
        units = upload_units(updates[0].state)
        personal = y.method == "local"
        uploaded = 0 if personal else sum(state_bytes(u.state) for u in updates)
        row: dict = {
            "round": 1, "method": y.method, "init": self.init,
            "variant": y.variant if y.method == "yoco" else None,
            "clients": [u.client_id for u in updates], "lr": cfg.train.lr,
            "local_steps": {str(u.client_id): u.metrics["steps"] for u in updates},
            "local_epochs": {str(u.client_id): u.metrics["epochs"] for u in updates},
            "train_loss": {str(u.client_id): round(u.metrics["train_loss"], 6) for u in updates},
            "train_loss_mean": statistics.fmean(u.metrics["train_loss"] for u in updates),
            "bytes_uploaded": uploaded,
            "bytes_downloaded": 0,
            "bytes_uploaded_per_client": 0 if personal else units["bytes"],
            "upload_units": 0 if personal else len(updates) * units["units"],
            "upload_unit": units["unit"],
            "lora_params_per_client": units["lora_params"],
            "held_out": {str(k): len(v) for k, v in self.val_sets.items()},
            "val_loss": {str(u.client_id): {f"{e:g}": round(v, 6)
                                            for e, v in u.metrics["val_loss"].items()}
                         for u in updates if "val_loss" in u.metrics},
            "conflict": conflict_report([u.state for u in updates]),
            "conflict_update": conflict_report([u.state for u in updates], self.initial_state),
        }
        t1 = time.perf_counter()
        if y.method == "local":
            final = self.evaluate_local({u.client_id: u.state for u in updates})
            self.global_state = self.initial_state
        elif y.method == "ensemble":
            final = self.evaluate_ensemble([u.state for u in updates])
            self.global_state = self.initial_state
            row["ensemble_cost"] = {
                "forward_passes_per_sample": len(updates),
                "adapters_stored_bytes": sum(state_bytes(u.state) for u in updates),
            }
        else:
            self.global_state = self.merge(updates)
            if self.full_rank():
                self.global_state = self.rank_bundle(self.global_state)
            final = self.evaluate(self.global_state)
        row["eval"] = final
        row["eval_seconds"] = round(time.perf_counter() - t1, 4)
        row["train_seconds"] = round(train_seconds, 4)
        row["seconds"] = round(time.perf_counter() - t0, 4)
        writer.write(row)
        result.rows.append(row)
        if y.method not in ("local", "ensemble"):
            self.save_adapter(out / "adapter")
        totals = {
            "rounds": 1,
            "bytes_uploaded": uploaded,
            "bytes_downloaded": 0,
            "upload_units": row["upload_units"],
            "upload_unit": units["unit"],
            "train_seconds": row["train_seconds"],
            "setup_seconds": round(setup_seconds, 3),
            "adapter_bytes": state_bytes(self.global_state),
        }
        result.final = {"algorithm": cfg.fl.algorithm, "method": y.method, "final": final,
                        "conflict": row["conflict"], "totals": totals}
        tmp = out / "summary.json.tmp"
        tmp.write_text(json.dumps(result.final, indent=2, default=str))
        os.replace(tmp, out / "summary.json")
        return result

    def rank_bundle(self, merged: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Switch to a fresh copy of the original base wrapped with one LoRA that *is* the merged
        model (rank ``N r``, or ``(N + 1) r`` with ``-B_0 A_0`` appended for ``pissa``, whose
        residual base it does not use); return that LoRA's state. Evaluation and saving then go
        through it unchanged."""
        lora, b = self.cfg.lora, self.bundle
        state = dict(merged)
        if self.init == "pissa":
            for key, value in merged.items():
                role = lora_role(key)
                if role == "A":
                    state[key] = torch.cat([value, self.initial_state[key]], dim=0)
                elif role == "B":
                    state[key] = torch.cat([value, -self.initial_state[key]], dim=1)
        ranks = {t.shape[0] for k, t in state.items() if lora_role(k) == "A"}
        (rank,) = ranks
        self._bundle = None  # the clients' model is no longer needed (a caller's stays as it is)
        self.bundle = build_bundle(b.source, b.device, b.dtype,
                                   dataclasses.replace(lora, r=rank,
                                                       alpha=lora.alpha * rank / lora.r),
                                   self.cfg.seed, self.cfg.model.modules_to_save)
        self.exported = True
        return state

    def save_adapter(self, path: Path) -> None:
        """The merged adapter in PEFT format, loadable on the original base model."""
        b = self.bundle
        convert = self.init == "pissa" and not self.exported
        meta = {"base_model": b.source, "algorithm": self.cfg.fl.algorithm,
                "method": self.cfg.fl.yoco.method, "init": self.init,
                "converted_from_pissa": self.init == "pissa",
                "rank": next(t.shape[0] for k, t in self.global_state.items()
                             if lora_role(k) == "A")}
        save_adapter(b, self.global_state, path, meta,
                     pissa_initial=self.initial_state if convert else None)
