"""One client's local training: the loop every driver runs for every client.

:class:`ClientTrainer` knows the model, the client objective and the optimizer settings, and
nothing about any other client: what it needs from the federation (the start state, the
server's extras, this client's own state such as SCAFFOLD's ``c_i``, its batches and step
sizes, its random seed) comes in as arguments of :meth:`ClientTrainer.fit`, and what it produces
goes back in a :class:`FitResult`. The multi-round simulation, the one-shot run and a Flower
ClientApp call the same method.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from ..config import Config
from ..fl import ClientObjective, ClientUpdate, StateDict, local_lr
from ..fl.attacks import Attack
from ..model.collate import Encoded, collate, to_device
from ..seeding import torch_generator, torch_seed
from .bundle import ModelBundle
from .factory import RunPlan, build_attack, build_objective
from .privacy import PrivacyPlan, client_privatize


@dataclass
class FitResult:
    """A client's local run: the update it sends and the state it keeps."""

    update: ClientUpdate
    """Sent to the server: adapter state, example count, extras (e.g. SCAFFOLD's control
    delta), metrics."""
    client_state: StateDict = field(default_factory=dict)
    """The client's state for its next round (SCAFFOLD's ``c_i+``); the driver keeps it only
    if the server accepts the update."""


def local_steps(num_samples: int, batch_size: int, grad_accum: int, *, steps: int | None = None,
                epochs: float | None = None) -> int:
    """Optimizer steps of a local run: ``steps``, or ``epochs`` passes over ``num_samples``
    (``ceil(epochs * ceil(n / (batch_size * grad_accum)))``, at least one)."""
    if epochs is None:
        if steps is None:
            raise ValueError("give steps or epochs")
        return steps
    per_epoch = math.ceil(num_samples / (batch_size * grad_accum))
    return max(1, math.ceil(epochs * per_epoch))


def local_lrs(base_lr: float, steps: int, schedule: str = "constant",
              warmup_ratio: float = 0.0) -> list[float]:
    """The step size of every optimizer step of a local run (see :func:`fedmllm.fl.local_lr`)."""
    return [local_lr(k, steps, base_lr, schedule, warmup_ratio) for k in range(steps)]


def batch_stream(items: Sequence[Encoded], batch_size: int,
                 generator: torch.Generator) -> Iterator[list[Encoded]]:
    """An endless stream of batches of ``items``, reshuffled at every pass by ``generator``."""
    if not items:
        raise ValueError("a client has no samples")
    while True:
        order = torch.randperm(len(items), generator=generator).tolist()
        for i in range(0, len(order), batch_size):
            yield [items[j] for j in order[i:i + batch_size]]


def train_round(trainer: ClientTrainer, cfg: Config, items: Sequence[Encoded], client_id: int,
                round_: int, lr: float, start_state: StateDict, server_extras: dict,
                client_state: StateDict | None = None, steps: int | None = None) -> FitResult:
    """Client ``client_id``'s local run in round ``round_``, as every driver runs it.

    Steps: ``steps`` when given, else ``fl.local_steps``, or ``fl.local_epochs`` passes over
    ``items``. Batches and LoRA
    dropout are drawn from ``(seed, "batches" / "dropout", round, client)``; the step sizes
    follow ``train.local_lr_schedule`` from the round's rate ``lr``. A malicious client
    (``fl.attack``) then swaps in its attacked update (:meth:`fedmllm.fl.attacks.Attack.apply`);
    the update is then clipped (``fl.privacy.mechanism = central_client``) or clipped and
    noised (``local``, noise from ``(seed, "dp-local", round, client)``) before it is sent.
    The same arguments give the same update, bit for bit, in any process.
    """
    tr = cfg.train
    if steps is None:
        steps = local_steps(len(items), tr.batch_size, tr.grad_accum, steps=cfg.fl.local_steps,
                            epochs=cfg.fl.local_epochs)
    batches = batch_stream(items, tr.batch_size,
                           torch_generator(cfg.seed, "batches", round_, client_id))
    lrs = local_lrs(lr, steps, tr.local_lr_schedule, tr.local_warmup_ratio)
    fit = trainer.fit(start_state, server_extras, batches, lrs,
                      torch_seed(cfg.seed, "dropout", round_, client_id),
                      num_examples=len(items), client_id=client_id, client_state=client_state)
    if trainer.attack is not None:  # fl.attack
        fit.update = trainer.attack.apply(fit.update, start_state, round_)
    fit.update.state = client_privatize(trainer.privacy, fit.update.state, start_state,
                                        cfg.seed, round_, client_id)
    return fit


class ClientTrainer:
    """Local training of one client at a time on a shared model (adapters swapped in).

    Per optimizer step ``k`` of ``steps``, with step size ``lrs[k]``::

        g = grad of (task loss + objective penalty), summed over grad_accum micro-batches
        g = clip(g, train.grad_clip)                    (norm clipping of the loss gradient)
        objective.correct_gradients(params)             (SCAFFOLD adds c - c_i here)
        optimizer.step()                                (AdamW or SGD, fresh for this run)

    LoRA dropout draws from torch's generator, re-seeded for the run from ``seed`` (and the
    caller's generator state restored afterwards), so a client's update does not depend on
    which clients trained before it in the same process.
    """

    def __init__(self, bundle: ModelBundle, objective: ClientObjective, *, optimizer: str,
                 weight_decay: float = 0.0, grad_accum: int = 1,
                 grad_clip: float | None = None, privacy: PrivacyPlan | None = None,
                 attack: Attack | None = None) -> None:
        if optimizer not in ("adamw", "sgd"):
            raise ValueError(f"unknown optimizer {optimizer!r}; choices: adamw, sgd")
        self.bundle = bundle
        self.objective = objective
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.grad_accum = grad_accum
        self.grad_clip = grad_clip
        self.privacy = privacy
        """The run's DP plan: :func:`train_round` clips or noises the update by it."""
        self.attack = attack
        """The run's ``fl.attack``, built once: :func:`train_round` applies it to the update."""
        self._pad_id = bundle.processor.tokenizer.pad_token_id

    def _make_optimizer(self, params: list[torch.Tensor]) -> torch.optim.Optimizer:
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=0.0, weight_decay=self.weight_decay)
        return torch.optim.AdamW(params, lr=0.0, weight_decay=self.weight_decay)

    def fit(self, start_state: StateDict, server_extras: dict, batches: Iterator[list[Encoded]],
            lrs: Sequence[float], seed: int, *, num_examples: int, client_id: int = -1,
            client_state: StateDict | None = None) -> FitResult:
        """Train from ``start_state`` for ``len(lrs)`` optimizer steps; return the update.

        ``batches`` yields ``grad_accum`` micro-batches per step; ``seed`` seeds the dropout
        draws; ``client_state`` is this client's state kept from its last accepted round.
        """
        b, objective = self.bundle, self.objective
        steps = len(lrs)
        if steps < 1:
            raise ValueError("a local run needs at least one step")
        b.adapter.set(start_state)
        params = b.adapter.params
        trainable = list(params.values())
        opt = self._make_optimizer(trainable)
        objective.begin(start_state, server_extras, client_state or {})
        b.model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=b.device)  # no sync per step
        devices = [b.device.index or 0] if b.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for lr in lrs:
                for group in opt.param_groups:
                    group["lr"] = lr
                opt.zero_grad(set_to_none=True)
                for _ in range(self.grad_accum):
                    batch = to_device(collate(next(batches), self._pad_id), b.device, b.dtype)
                    with b.compute():  # bf16 autocast where the run uses it
                        loss = b.model(**batch).loss
                    penalty = objective.penalty(params)
                    total = loss if penalty is None else loss + penalty
                    (total / self.grad_accum).backward()
                    loss_sum += loss.detach().double() / self.grad_accum
                if self.grad_clip:
                    torch.nn.utils.clip_grad_norm_(trainable, self.grad_clip)
                objective.correct_gradients(params)
                opt.step()
        b.model.eval()
        result = objective.end(params, float(sum(lrs)))
        update = ClientUpdate(state=b.adapter.get(), num_examples=num_examples,
                              client_id=client_id, extras=result.extras,
                              metrics={"train_loss": float(loss_sum) / steps, "steps": steps})
        return FitResult(update, result.client_state)


def make_trainer(cfg: Config, plan: RunPlan, bundle: ModelBundle) -> ClientTrainer:
    """The client trainer of ``plan`` on ``bundle``, its client objective included."""
    tr = cfg.train
    return ClientTrainer(bundle, build_objective(plan, bundle.num_layers),
                         optimizer=plan.optimizer, weight_decay=tr.weight_decay,
                         grad_accum=tr.grad_accum, grad_clip=tr.grad_clip,
                         privacy=plan.privacy, attack=build_attack(cfg))
