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
    """

    name: str = ""
    aggregates: bool = True
    trains_clients: bool = True
    personalized: bool = False

    @abstractmethod
    def aggregate(
        self, global_state: StateDict, updates: list[ClientUpdate], round: int
    ) -> StateDict:
        """Return the next global state (``round`` counts from 1). Inputs are not modified."""

    def server_extras(self, global_state: StateDict | None = None) -> Extras:
        """Side channels sent to clients together with the global state (default: none)."""
        return {}

    def state_dict(self) -> StateDict:
        """Server optimizer state as ``"<slot>/<param name>" -> tensor`` (references)."""
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


class ClientObjective(ABC):
    """A change to what each client optimises locally; the driver calls, per client per round::

        obj.begin(global_state, server_extras, client_id)
        for each step:
            loss = task_loss + (obj.penalty(params) or 0)
            loss.backward(); obj.correct_gradients(params); optimizer.step()
        extras = obj.end(params, num_steps, lr)   # -> ClientUpdate.extras

    ``params`` maps the same keys as the adapter state to the *live* trainable tensors.
    """

    name: str = ""

    def begin(self, global_state: StateDict, server_extras: Extras, client_id: int) -> None:
        """Remember what this client's round starts from (default: nothing)."""

    def penalty(self, params: StateDict) -> Tensor | None:
        """A differentiable scalar added to the loss, or ``None`` for no penalty."""
        return None

    def correct_gradients(self, params: StateDict) -> None:
        """Modify ``param.grad`` in place after ``backward()`` (default: nothing)."""

    def end(self, params: StateDict, num_steps: int, lr: float) -> Extras:
        """Finish the client's round; return extras to send to the server (default: none)."""
        return {}

    def state_dict(self) -> StateDict:
        """Per-client state that must survive across rounds (default: none)."""
        return {}

    def load_state_dict(self, state: StateDict) -> None:
        """Restore :meth:`state_dict`."""
        if state:
            raise ValueError(
                f"objective {self.name!r} keeps no state, got keys {sorted(state)[:3]}..."
            )

    def config(self) -> dict[str, Any]:
        """The resolved parameters, for printing and saving with a run."""
        return {}
