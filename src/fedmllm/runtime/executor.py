"""Client executors: whoever trains a round's clients, and the task and reply they exchange.

A driver (:mod:`.simulation`, :mod:`.oneshot`) hands an executor one :class:`ClientTask` per
chosen client and reads one :class:`ClientReply` per task back::

    replies = executor.fit([ClientTask(k, round, start, lr, extras, state_k, ...) for k in chosen])

An executor gets everything it needs in the task and in what it was built with; it never calls
back into the driver. Three implement :class:`ClientExecutor`: :class:`InProcessExecutor` (the
simulation: clients trained one after another on this process's model),
:class:`~fedmllm.runtime.oneshot.OneShotExecutor` (a one-shot run's clients, here) and
:class:`~fedmllm.runtime.flower.server.GridExecutor` (the nodes of a Flower grid).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ..config import Config
from ..engine.client import ClientTrainer, train_round
from ..fl import ClientUpdate, StateDict
from ..model.collate import Encoded

if TYPE_CHECKING:
    from .session import Session


@dataclass
class ClientTask:
    """What one client needs for its local run."""

    client_id: int
    round: int
    """The round (from 1; a one-shot run's single training is round 1)."""
    start_state: StateDict
    """The adapter it starts from: the global one, or its own (local-only training)."""
    lr: float
    """The round's base learning rate."""
    server_extras: dict[str, StateDict] = field(default_factory=dict)
    """What the server adds to the global state (SCAFFOLD's control variate ``c``)."""
    client_state: StateDict = field(default_factory=dict)
    """The state it kept from its last accepted round (SCAFFOLD's ``c_i``), as the server
    mirrors it."""
    steps: int | None = None
    """Optimizer steps; ``None``: ``fl.local_steps``, or ``fl.local_epochs`` over its own
    samples."""
    accepted_round: int = -1
    """The last round whose update of this client the server accepted (``-1``: none)."""


@dataclass
class ClientReply:
    """What one client sent back for its task, or that it did not."""

    client_id: int
    update: ClientUpdate | None
    """Its update (adapter state, example count, extras, statistics in ``metrics``);
    ``None`` when it did not reply in time or replied with an error."""
    client_state: StateDict = field(default_factory=dict)
    """Its state after this round (SCAFFOLD's ``c_i+``): the driver keeps it only if the
    server accepts the update."""
    bytes_uploaded: int | None = None
    """Bytes it sent, measured on the wire; ``None``: the server round counts the tensors."""
    bytes_downloaded: int | None = None
    """Bytes of the task sent to it, measured on the wire (``None`` as above)."""


@dataclass
class SecureAggregate:
    """What a round through secure aggregation yields instead of the clients' states: the
    mean of the updates ``y_i - x`` of the clients that survived the protocol, and who they
    were; no update of any one client."""

    mean_delta: StateDict | None
    """``sum_i w_i (y_i - x) / sum_i w_i`` (``w_i``: example counts, or 1 for an unweighted
    rule), float64; ``None`` when the protocol ended without an aggregate."""
    clients: list[int] = field(default_factory=list)
    """The clients whose updates it holds."""
    num_examples: int = 0
    """Their training examples together."""
    halted: str | None = None
    """Why there is no aggregate, when there is none."""


class ClientExecutor(Protocol):
    """Trains the clients of a batch of tasks.

    An executor whose ``secure_aggregation`` attribute is true (a Flower grid with
    ``fl.secure_aggregation``) also has ``fit_secure(tasks) -> (replies, SecureAggregate)``:
    the replies carry the clients' statistics only (``update.state`` is empty), the aggregate
    replaces their states, and the driver calls that instead of :meth:`fit`.
    """

    def fit(self, tasks: Sequence[ClientTask]) -> Iterator[ClientReply]:
        """One reply per task, yielded as each is ready (a driver may checkpoint in between)."""
        ...


#: What a driver takes to reach clients outside this process: it builds the executor from the
#: run's :class:`~fedmllm.runtime.session.Session` (its configuration, initial state, device).
#: One whose ``nodes_hold_data`` attribute is true (a Flower grid's) reaches clients that hold
#: their own samples: the session then holds only the test side.
ExecutorFactory = Callable[["Session"], ClientExecutor]


class InProcessExecutor:
    """The simulation's clients, trained one after another on this process's model.

    ``clients[k]`` is client ``k``'s training samples (for centralized training, one client
    holding every client's samples); the trainer runs :func:`~fedmllm.engine.client.train_round`.
    """

    def __init__(self, trainer: ClientTrainer, cfg: Config,
                 clients: Sequence[Sequence[Encoded]]):
        self.trainer, self.cfg, self.clients = trainer, cfg, clients

    def fit(self, tasks: Iterable[ClientTask]) -> Iterator[ClientReply]:
        for t in tasks:
            fit = train_round(self.trainer, self.cfg, self.clients[t.client_id], t.client_id,
                              t.round, t.lr, t.start_state, t.server_extras, t.client_state,
                              steps=t.steps)
            yield ClientReply(t.client_id, fit.update, fit.client_state)


def wire_bytes(replies: Sequence[ClientReply]) -> tuple[int | None, int | None]:
    """``(uploaded, downloaded)`` bytes measured on the wire over ``replies``, or ``(None,
    None)`` when an executor measured nothing (the server round counts the tensors then)."""
    if not replies or any(r.bytes_uploaded is None for r in replies):
        return None, None
    return (sum(r.bytes_uploaded for r in replies),
            sum(r.bytes_downloaded or 0 for r in replies))
