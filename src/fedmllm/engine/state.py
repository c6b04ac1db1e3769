"""What each client keeps between its rounds, keyed by client id.

SCAFFOLD's control variate ``c_i`` and a local-only client's own adapter live here, not in the
objective or the strategy: the client trainer receives a client's state and returns the next
one, and the driver stores it (for SCAFFOLD only when the server accepted the update). The
store saves and restores itself as a flat tensor dict for checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..fl import StateDict


class ClientStateStore:
    """``client id -> StateDict``; absent clients have the empty state ``{}``."""

    def __init__(self) -> None:
        self._states: dict[int, StateDict] = {}

    def get(self, client_id: int) -> StateDict:
        """The state kept for ``client_id`` (``{}`` before its first accepted round)."""
        return self._states.get(client_id, {})

    def put(self, client_id: int, state: StateDict) -> None:
        """Keep ``state`` (detached) as ``client_id``'s state; an empty state removes it."""
        if isinstance(client_id, bool) or not isinstance(client_id, int) or client_id < 0:
            raise ValueError(f"client ids are integers >= 0, got {client_id!r}")
        if state:
            self._states[client_id] = {k: t.detach() for k, t in state.items()}
        else:
            self._states.pop(client_id, None)

    def __contains__(self, client_id: int) -> bool:
        return client_id in self._states

    def __len__(self) -> int:
        return len(self._states)

    def items(self) -> Iterator[tuple[int, StateDict]]:
        """``(client id, state)`` in increasing client id."""
        for cid in sorted(self._states):
            yield cid, self._states[cid]

    def state_dict(self) -> StateDict:
        """``"<client id>/<key>" -> tensor`` (copies) for every stored client."""
        return {f"{cid}/{k}": t.clone() for cid, st in self.items() for k, t in st.items()}

    def load_state_dict(self, flat: StateDict) -> None:
        """Replace the store with :meth:`state_dict`'s output."""
        states: dict[int, StateDict] = {}
        for full, t in flat.items():
            cid, sep, key = full.partition("/")
            if not sep or not cid.isdigit() or not key:
                raise ValueError(f"client state key {full!r} is not '<client id>/<key>'")
            states.setdefault(int(cid), {})[key] = t.detach().clone() \
                if isinstance(t, torch.Tensor) else t
        self._states = states
