"""Core types of the federated tensor core.

Everything in :mod:`fedmllm.fl` works on plain ``dict[str, Tensor]`` adapter states (the
communicated LoRA tensors plus any ``modules_to_save`` copies). A *server strategy* turns the
current global state and the clients' updates into the next global state; a *client objective*
changes what a client optimises (proximal terms, SCAFFOLD gradient corrections).

Contract shared by every implementation:

- Inputs are never modified in place. A returned state may share (unchanged) tensors with the
  input global state, so treat both as read-only.
- Floating-point tensors keep their dtype. Arithmetic runs in float64 for float64 tensors and in
  float32 otherwise (bf16/fp16 are upcast and the result cast back); server optimizer state
  (momentum, moments, control variates) is kept in that compute dtype.
- Non-floating tensors (counters, masks) are never averaged; they keep their global value.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

StateDict = dict[str, Tensor]
"""Parameter name -> tensor (one adapter state, a delta, or one optimizer slot)."""

Extras = dict[str, StateDict]
"""Named side channels that travel with a state, e.g. ``{"control": c}`` for SCAFFOLD."""


@dataclass
class ClientUpdate:
    """What one client sends back after local training in one round.

    Attributes:
        state: the client's trained adapter state (full tensors, not deltas). It may hold a
            subset of the global keys (heterogeneous clients); absent keys count as "not trained".
        num_examples: number of local training examples (FedAvg weight); must be positive.
        client_id: stable client index in ``[0, num_clients)``; ``-1`` when unknown.
        extras: side channels, e.g. ``extras["control_delta"]`` (SCAFFOLD ``c_i+ - c_i``).
        metrics: free-form scalars for logging (loss, steps, ...); never used for aggregation.
    """

    state: StateDict
    num_examples: int
    client_id: int = -1
    extras: Extras = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


class Strategy(ABC):
    """A server-side aggregation rule with (optional) persistent optimizer state.

    Class flags tell a driver how to run the strategy:

    - ``aggregates``: ``False`` means :meth:`aggregate` returns the global state unchanged.
    - ``trains_clients``: ``False`` (``zeroshot``) means no client is trained at all.
    - ``personalized``: ``True`` (``local``) means each client keeps and evaluates its own
      adapter state across rounds; the driver must store per-client states itself.
    - ``pooled``: ``True`` (``centralized``) means the driver trains one client on the union
      of every client's data (the upper bound of a federation), as many optimizer steps per
      round as the round's sampled clients together take.

    Attributes a driver reads to pair the strategy with its client side:

    - ``default_objective``: the client objective that completes the algorithm (``"prox"`` for
      FedProx, ``"scaffold"`` for SCAFFOLD, ``"ce"`` otherwise).
    - ``allowed_objectives``: the client objectives the algorithm may run with; ``None`` means
      any except ``"scaffold"`` (its server and client sides come together) and ``"yoco"``
      (one-shot).
    - ``min_updates``: the fewest accepted updates the rule needs to be what it says (the
      median of two values is their mean). In :meth:`aggregate`, a key that fewer than
      ``min_updates`` clients returned keeps its global value.
    """

    name: str = ""
    aggregates: bool = True
    trains_clients: bool = True
    personalized: bool = False
    pooled: bool = False
    default_objective: str = "ce"
    allowed_objectives: tuple[str, ...] | None = None
    min_updates: int = 1

    @abstractmethod
    def aggregate(
        self, global_state: StateDict, updates: list[ClientUpdate], round: int
    ) -> StateDict:
        """Return the next global state (``round`` counts from 1). Inputs are not modified."""

    def server_extras(self, global_state: StateDict | None = None) -> Extras:
        """Side channels sent to clients together with the global state (default: none).
        Has no side effects: calling it changes neither the state nor later results."""
        return {}

    def state_dict(self) -> StateDict:
        """Server optimizer state as ``"<slot>/<param name>" -> tensor``: copies, which no later
        :meth:`aggregate` changes (and changing them changes nothing here)."""
        return {}

    def load_state_dict(self, state: StateDict) -> None:
        """Restore :meth:`state_dict`; raises ``ValueError`` on keys this strategy does not know."""
        if state:
            raise ValueError(
                f"strategy {self.name!r} keeps no state, got keys {sorted(state)[:3]}..."
            )

    def config(self) -> dict[str, Any]:
        """The resolved parameters (defaults filled in), for printing and saving with a run."""
        return {}


@dataclass
class ObjectiveResult:
    """What a client objective hands back at the end of a client's local run.

    Attributes:
        extras: sent to the server with the update (``ClientUpdate.extras``), e.g. SCAFFOLD's
            ``{"control_delta": c_i+ - c_i}``.
        client_state: this client's state for its next round (SCAFFOLD's ``c_i+``). The driver
            stores it per client and keeps it only if the server accepts the update; the
            objective itself keeps nothing across rounds.
    """

    extras: Extras = field(default_factory=dict)
    client_state: StateDict = field(default_factory=dict)


class ClientObjective(ABC):
    """A change to what each client optimises locally; the driver calls, per client per round::

        obj.begin(global_state, server_extras, client_state)
        for each optimizer step (step size lr_k):
            loss = task_loss + (obj.penalty(params) or 0)
            loss.backward(); clip the gradients (optional); obj.correct_gradients(params)
            optimizer.step()
        result = obj.end(params, lr_sum)   # lr_sum = sum_k lr_k over the local run
        # result.extras -> ClientUpdate.extras; result.client_state -> kept by the driver

    ``params`` maps the same keys as the adapter state to the *live* trainable tensors.
    ``client_state`` is what :meth:`end` returned as ``client_state`` in this client's last
    accepted round (``{}`` at first). Objectives keep no per-client state across rounds.
    """

    name: str = ""

    def begin(
        self, global_state: StateDict, server_extras: Extras, client_state: StateDict
    ) -> None:
        """Remember what this client's round starts from (default: nothing)."""

    def penalty(self, params: StateDict) -> Tensor | None:
        """A differentiable scalar added to the loss, or ``None`` for no penalty."""
        return None

    def correct_gradients(self, params: StateDict) -> None:
        """Modify ``param.grad`` in place; called after ``backward()`` and after gradient
        clipping, right before ``optimizer.step()`` (default: nothing)."""

    def end(self, params: StateDict, lr_sum: float) -> ObjectiveResult:
        """Finish the client's round. ``lr_sum`` is the sum of the step sizes of all optimizer
        steps of the local run (``K * lr`` for a constant rate). Returns the extras to send and
        the client's state for its next round (default: neither)."""
        return ObjectiveResult()

    def config(self) -> dict[str, Any]:
        """The resolved parameters, for printing and saving with a run."""
        return {}
