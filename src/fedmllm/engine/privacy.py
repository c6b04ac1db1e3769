"""``fl.privacy`` checked and resolved (the noise multiplier solved for a target epsilon), and
the pieces the drivers take from it: the server's DP wrapper, the client's clip and noise, the
accountant. :func:`plan_privacy` runs inside :func:`~fedmllm.engine.factory.plan_run`, so a
mistake is one :class:`~fedmllm.config.ConfigError` before anything loads.

Noise is drawn from generators derived from the run's seed: ``(seed, "dp-noise", round)`` on
the server, ``(seed, "dp-local", round, client)`` on a client, so a run is reproducible and a
resumed run draws what the uninterrupted one drew.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..config import Config, ConfigError, PrivacyConfig
from ..seeding import torch_generator


@dataclass(frozen=True)
class PrivacyPlan:
    """``fl.privacy`` of a run with a DP mechanism, every value resolved."""

    mechanism: str
    noise_multiplier: float
    """sigma as the run uses it (solved when ``target_epsilon`` is set)."""
    clipping_norm: float
    delta: float
    sampling: str
    target_epsilon: float | None
    target_quantile: float
    clip_lr: float
    clipped_count_stddev: float | None
    num_clients: int
    clients_per_round: int
    rounds: int
    seed: int
    planned_epsilon: float
    """Epsilon at ``delta`` after all ``rounds``."""

    @property
    def central(self) -> bool:
        return self.mechanism.startswith("central_")

    def accountant(self):
        from ..fl.privacy import Accountant

        return Accountant(self.mechanism, self.noise_multiplier, delta=self.delta,
                          sampling=self.sampling, num_clients=self.num_clients,
                          clients_per_round=self.clients_per_round, seed=self.seed)

    def record(self) -> dict[str, Any]:
        """The settings ``summary.json``'s ``privacy`` block adds to the accountant's."""
        return {"clipping_norm": self.clipping_norm, "target_epsilon": self.target_epsilon,
                "planned_epsilon": self.planned_epsilon, "rounds_planned": self.rounds}


#: Rules under which nothing a client trained is uploaded and aggregated (or nothing trains).
_NO_UPLOAD = ("local", "zeroshot", "centralized")


def plan_privacy(cfg: Config, algorithm: str, notes: list[str]) -> PrivacyPlan | None:
    """``fl.privacy`` checked against the run (``algorithm`` resolved, a multi-round rule or a
    one-shot one) and resolved; ``None`` for mechanism ``none``."""
    p = cfg.fl.privacy
    if p.mechanism == "none":
        set_keys = [f.name for f in dataclasses.fields(PrivacyConfig)
                    if getattr(p, f.name) != getattr(PrivacyConfig(), f.name)]
        if set_keys:
            raise ConfigError(f"fl.privacy.{set_keys[0]}: set, but fl.privacy.mechanism is "
                              "'none', so it would do nothing (choose a mechanism)")
        return None
    _check_rule(p, algorithm)
    if p.mechanism.startswith("central_") and cfg.fl.strategy.get("clip_norm") is not None:
        raise ConfigError(f"fl.strategy.clip_norm: mechanism {p.mechanism} clips every update "
                          "to fl.privacy.clipping_norm (the rule's own clip is not applied); "
                          "drop fl.strategy.clip_norm")
    if p.clipping_norm is None:
        raise ConfigError(f"fl.privacy.clipping_norm: mechanism {p.mechanism} clips every "
                          "update to this L2 norm; give it (e.g. fl.privacy.clipping_norm=1.0)")
    if p.target_epsilon is not None and p.noise_multiplier != 0:
        raise ConfigError("fl.privacy.target_epsilon: the noise multiplier is solved for it; "
                          "leave fl.privacy.noise_multiplier unset (or drop target_epsilon)")
    fl = cfg.fl
    plan = PrivacyPlan(
        mechanism=p.mechanism, noise_multiplier=p.noise_multiplier,
        clipping_norm=p.clipping_norm, delta=p.delta, sampling=p.sampling,
        target_epsilon=p.target_epsilon, target_quantile=p.target_quantile,
        clip_lr=p.clip_lr, clipped_count_stddev=p.clipped_count_stddev,
        num_clients=fl.num_clients, clients_per_round=min(fl.clients_per_round, fl.num_clients),
        rounds=fl.rounds, seed=cfg.seed, planned_epsilon=math.inf)
    accountant = plan.accountant()
    if p.target_epsilon is not None:
        sigma = accountant.solve(p.target_epsilon, fl.rounds)
        plan = dataclasses.replace(plan, noise_multiplier=sigma)
        accountant = plan.accountant()
        notes.append(f"fl.privacy.noise_multiplier = {sigma:.6g} (solved: epsilon "
                     f"{p.target_epsilon:g} at delta {p.delta:g} after {fl.rounds} rounds)")
    if p.mechanism == "central_adaptive":
        from ..fl.privacy import split_noise

        try:
            split_noise(plan.noise_multiplier, plan.clients_per_round, p.clipped_count_stddev)
        except ValueError as e:
            raise ConfigError(f"fl.privacy.clipped_count_stddev: {e}") from None
    return dataclasses.replace(plan, planned_epsilon=accountant.epsilon(fl.rounds))


def _check_rule(p: PrivacyConfig, algorithm: str) -> None:
    """The mechanism fits the rule: central ones a mean-based multi-round rule, local DP a
    multi-round rule whose clients upload only their adapter."""
    from ..fl.privacy import MEAN_RULES

    where = f"fl.privacy.mechanism: {p.mechanism} with fl.algorithm {algorithm}"
    if algorithm in ("yoco", "oneshot"):
        raise ConfigError(f"{where}: differential privacy is for multi-round runs")
    if algorithm in _NO_UPLOAD:
        raise ConfigError(f"{where}: no client update is aggregated, there is nothing to "
                          "privatise")
    if p.mechanism.startswith("central_") and algorithm not in MEAN_RULES:
        raise ConfigError(f"{where}: the noise sigma C / m calibrates a mean of the clipped "
                          f"updates, and {algorithm} is not one (central DP wraps "
                          f"{', '.join(MEAN_RULES)}; local DP works with any rule)")
    if algorithm == "scaffold":
        raise ConfigError(f"{where}: SCAFFOLD's control variates would go up un-noised")


def private_strategy(strategy, privacy: PrivacyPlan | None):
    """``strategy`` wrapped by the plan's central mechanism (itself for none and local)."""
    if privacy is None or not privacy.central:
        return strategy
    from ..fl.privacy import make_private

    seed = privacy.seed
    params: dict[str, Any] = {
        "noise_multiplier": privacy.noise_multiplier, "clipping_norm": privacy.clipping_norm,
        "num_sampled": privacy.clients_per_round,
        "noise": lambda r: torch_generator(seed, "dp-noise", r)}
    if privacy.mechanism == "central_adaptive":
        params.update(target_quantile=privacy.target_quantile, clip_lr=privacy.clip_lr,
                      clipped_count_stddev=privacy.clipped_count_stddev)
    return make_private(strategy, privacy.mechanism, **params)


def client_privatize(privacy: PrivacyPlan | None, state: dict, start_state: dict, seed: int,
                     round_: int, client: int) -> dict:
    """A client's upload under the plan: clipped (``central_client``), clipped and noised from
    ``(seed, "dp-local", round, client)`` (``local``), else ``state`` as it is."""
    if privacy is None or privacy.mechanism not in ("central_client", "local"):
        return state
    from ..fl.privacy import clip_update, local_privatize

    if privacy.mechanism == "central_client":
        return clip_update(state, start_state, privacy.clipping_norm)[0]
    return local_privatize(state, start_state, clipping_norm=privacy.clipping_norm,
                           noise_multiplier=privacy.noise_multiplier,
                           generator=torch_generator(seed, "dp-local", round_, client))
