"""The accountant against dp-accounting called directly: both samplings, local DP's worst
client, sigma = 0, and the noise multiplier solved for a target epsilon."""

import math
from collections import Counter

import dp_accounting as dpa
import pytest
from dp_accounting.rdp import RdpAccountant

from fedmllm.fl import sample_clients
from fedmllm.fl.privacy import Accountant

N, M, ROUNDS, DELTA = 10, 4, 24, 1e-5
REL = dpa.NeighboringRelation


def ours(mechanism="central_server", sigma=1.0, sampling="without_replacement", seed=0):
    return Accountant(mechanism, sigma, delta=DELTA, sampling=sampling, num_clients=N,
                      clients_per_round=M, seed=seed)


def direct(event, count, relation) -> float:
    acc = RdpAccountant(neighboring_relation=relation)
    acc.compose(event, count)
    return acc.get_epsilon(DELTA)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_without_replacement_is_replace_one_with_half_the_noise_multiplier(sigma):
    want = direct(dpa.SampledWithoutReplacementDpEvent(N, M, dpa.GaussianDpEvent(sigma / 2)),
                  ROUNDS, REL.REPLACE_ONE)
    assert abs(ours(sigma=sigma).epsilon(ROUNDS) - want) <= 1e-6
    assert abs(ours(sigma=sigma).epsilon(7) - direct(
        dpa.SampledWithoutReplacementDpEvent(N, M, dpa.GaussianDpEvent(sigma / 2)), 7,
        REL.REPLACE_ONE)) <= 1e-6


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_poisson_is_add_or_remove_one(sigma):
    want = direct(dpa.PoissonSampledDpEvent(M / N, dpa.GaussianDpEvent(sigma)), ROUNDS,
                  REL.ADD_OR_REMOVE_ONE)
    got = ours(sigma=sigma, sampling="poisson").epsilon(ROUNDS)
    assert abs(got - want) <= 1e-6
    assert got < ours(sigma=sigma).epsilon(ROUNDS)  # sensitivity C instead of 2C


def test_local_dp_reports_the_most_sampled_client_without_amplification():
    acc = ours("local", sigma=2.0, seed=3)
    counts = Counter(k for r in range(1, ROUNDS + 1) for k in sample_clients(N, M, r, 3))
    worst = max(counts.values())
    assert acc.releases(ROUNDS) == worst > ROUNDS * M / N
    want = direct(dpa.GaussianDpEvent(1.0), worst, REL.REPLACE_ONE)
    assert abs(acc.epsilon(ROUNDS) - want) <= 1e-6
    assert acc.epsilon(0) == 0.0


def test_no_noise_is_infinite_epsilon():
    assert ours(sigma=0.0).epsilon(3) == math.inf
    assert ours("local", sigma=0.0).epsilon(3) == math.inf


@pytest.mark.parametrize("sampling", ["without_replacement", "poisson"])
def test_target_epsilon_solves_the_smallest_noise_multiplier(sampling):
    acc = ours(sampling=sampling)
    sigma = acc.solve(8.0, ROUNDS)
    assert acc.epsilon(ROUNDS, sigma) <= 8.0
    assert acc.epsilon(ROUNDS, sigma) == pytest.approx(8.0, rel=1e-4)
    assert acc.epsilon(ROUNDS, sigma - 1e-4) > 8.0  # any less noise overspends


def test_the_accountant_line_names_library_event_and_adjacency():
    text = ours().describe()
    assert text.startswith("dp-accounting ") and "RDP" in text
    assert "SampledWithoutReplacementDpEvent(10, 4, GaussianDpEvent(sigma/2))" in text
    assert "REPLACE_ONE" in text
    assert "ADD_OR_REMOVE_ONE" in ours(sampling="poisson").describe()
    summary = ours().summary(ROUNDS, clipping_norm=1.0)
    assert summary["epsilon"] == ours().epsilon(ROUNDS) and summary["delta"] == DELTA
    assert summary["clipping_norm"] == 1.0 and summary["releases"] == ROUNDS
