"""The privacy accountant: epsilon at a delta, by Google's ``dp-accounting`` (RDP).

We call the library directly (Flower's ``RdpAccountant`` wraps the same one). The events:

- central mechanisms, ``sampling = "without_replacement"`` (what the sampler does: ``m`` of
  ``n`` clients, uniformly, every round): one ``SampledWithoutReplacementDpEvent(n, m,
  GaussianDpEvent(sigma / 2))`` per released aggregate under ``REPLACE_ONE`` adjacency (a
  client's data replaced: the sum of clipped updates moves by up to ``2C`` while its noise std
  is ``sigma C``, so the library's noise multiplier is ``sigma / 2``);
- ``sampling = "poisson"``: ``PoissonSampledDpEvent(m / n, GaussianDpEvent(sigma))`` under
  ``ADD_OR_REMOVE_ONE`` (sensitivity ``C``), the convention of the DP-FedAvg papers; our
  sampler draws a fixed-size sample, so this is an approximation;
- ``local``: each client's uploads compose without amplification (the server sees every
  upload): ``GaussianDpEvent(sigma / 2)`` (or ``sigma`` with ``poisson``'s add/remove
  adjacency) once per round the client trained in; the worst client (the one sampled most
  often, from the run's sampling schedule) is reported.

Adaptive clipping is accounted with its overall ``sigma`` (Andrew et al. 2021, Sec. 3). Every
round counts as a release, also one the server skipped (an upper bound). ``sigma = 0`` is
``epsilon = inf``.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import math
from collections import Counter
from typing import Any

from ..sampling import sample_clients

SAMPLINGS = ("without_replacement", "poisson")


def library() -> str:
    """``"dp-accounting <version>"``."""
    return f"dp-accounting {importlib.metadata.version('dp-accounting')}"


class Accountant:
    """Epsilon of a run's releases (see the module docstring); ``epsilon(r)`` after round
    ``r``. ``seed`` is the run's (local DP: the sampling schedule gives each client's
    releases)."""

    def __init__(self, mechanism: str, noise_multiplier: float, *, delta: float, sampling: str,
                 num_clients: int, clients_per_round: int, seed: int = 0) -> None:
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
        self.mechanism, self.sigma = mechanism, float(noise_multiplier)
        self.delta, self.sampling = float(delta), sampling
        self.num_clients = num_clients
        self.per_round = min(clients_per_round, num_clients)
        self.seed = seed
        self._worst: list[int] = [0]

    @property
    def local(self) -> bool:
        return self.mechanism == "local"

    def _relation(self):
        import dp_accounting as dpa

        rel = dpa.NeighboringRelation
        return rel.REPLACE_ONE if self.sampling == "without_replacement" else rel.ADD_OR_REMOVE_ONE

    def event(self, sigma: float | None = None):
        """One release's ``DpEvent`` at noise multiplier ``sigma`` (default: the run's)."""
        import dp_accounting as dpa

        sigma = self.sigma if sigma is None else sigma
        gauss = dpa.GaussianDpEvent(sigma / 2 if self.sampling == "without_replacement"
                                    else sigma)
        if self.local:
            return gauss
        if self.sampling == "without_replacement":
            return dpa.SampledWithoutReplacementDpEvent(self.num_clients, self.per_round, gauss)
        return dpa.PoissonSampledDpEvent(self.per_round / self.num_clients, gauss)

    def releases(self, rounds: int) -> int:
        """Releases to compose after ``rounds`` rounds: the rounds, or (local) the most
        rounds any one client trained in."""
        if not self.local:
            return rounds
        while len(self._worst) <= rounds:  # the worst count after each round, cached
            r = len(self._worst)
            counts = self._counts(r)
            self._worst.append(max(counts.values()))
        return self._worst[rounds]

    def _counts(self, rounds: int) -> Counter:
        return Counter(k for r in range(1, rounds + 1)
                       for k in sample_clients(self.num_clients, self.per_round, r, self.seed))

    def epsilon(self, rounds: int, sigma: float | None = None) -> float:
        """Epsilon at :attr:`delta` after ``rounds`` rounds (``inf`` for ``sigma = 0``)."""
        sigma = self.sigma if sigma is None else sigma
        n = self.releases(rounds)
        if n == 0:
            return 0.0
        if sigma == 0:
            return math.inf
        return _epsilon(self.event(sigma), n, self.delta, self._relation())

    def solve(self, target_epsilon: float, rounds: int) -> float:
        """The smallest noise multiplier whose epsilon after ``rounds`` rounds is at most
        ``target_epsilon`` (to 1e-6), by ``dp_accounting.calibrate_dp_mechanism``."""
        import dp_accounting as dpa
        from dp_accounting.rdp import RdpAccountant

        n = self.releases(rounds)
        if n == 0:
            return 0.0
        relation = self._relation()
        return float(dpa.calibrate_dp_mechanism(
            lambda: RdpAccountant(neighboring_relation=relation),
            lambda s: dpa.SelfComposedDpEvent(self.event(max(s, 1e-6)), n),
            target_epsilon, self.delta,
            dpa.LowerEndpointAndGuess(1e-6, 1.0)))

    def describe(self) -> str:
        """The accountant in one line: library, method, event and adjacency."""
        half = "sigma/2" if self.sampling == "without_replacement" else "sigma"
        adj = "REPLACE_ONE" if self.sampling == "without_replacement" else "ADD_OR_REMOVE_ONE"
        if self.local:
            what = f"GaussianDpEvent({half}) per upload of the worst client, no amplification"
        elif self.sampling == "without_replacement":
            what = (f"SampledWithoutReplacementDpEvent({self.num_clients}, {self.per_round}, "
                    f"GaussianDpEvent({half})) per round")
        else:
            what = (f"PoissonSampledDpEvent({self.per_round}/{self.num_clients}, "
                    f"GaussianDpEvent({half})) per round")
        return f"{library()}, RDP (RdpAccountant), {what}, {adj}"

    def summary(self, rounds: int, **extra: Any) -> dict[str, Any]:
        """``summary.json``'s ``privacy`` block after ``rounds`` rounds."""
        return {"epsilon": self.epsilon(rounds), "delta": self.delta,
                "accountant": self.describe(), "mechanism": self.mechanism,
                "noise_multiplier": self.sigma, "sampling": self.sampling,
                "releases": self.releases(rounds), **extra}


def _epsilon(event, count: int, delta: float, relation) -> float:
    """Epsilon at ``delta`` of ``count`` compositions of ``event``: the RDP of one event
    (``RdpAccountant.compose``, cached) times ``count`` (RDP composes additively, as the
    accountant's own ``compose(event, count)`` does), read by ``compute_epsilon``."""
    from dp_accounting.rdp import rdp_privacy_accountant as rdp

    orders, one = _one_event(event, relation)
    return float(rdp.compute_epsilon(orders, count * one, delta)[0])


@functools.lru_cache(maxsize=64)
def _one_event(event, relation):
    from dp_accounting.rdp import RdpAccountant

    acc = RdpAccountant(neighboring_relation=relation)
    absl = logging.getLogger("absl")  # its notes on orders it drops from the bound
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        acc.compose(event)
    finally:
        absl.setLevel(level)
    return acc.orders, acc.rdp
