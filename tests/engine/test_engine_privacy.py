"""``fl.privacy`` in the run plan: the one-line refusals, the noise multiplier solved for a
target epsilon, and the pieces the drivers get (the server's wrapper, the client's upload)."""

import math

import pytest
import torch

from fedmllm.config import ConfigError, load_config
from fedmllm.engine.factory import build_strategy, plan_run
from fedmllm.engine.privacy import client_privatize
from fedmllm.fl.privacy import Accountant, CentralAdaptive, CentralServer
from fedmllm.report.console import run_header

BASE = ["model.preset=tiny", "train.device=cpu", "fl.num_clients=10", "fl.clients_per_round=4",
        "fl.rounds=24"]


def plan(*extra):
    return plan_run(load_config(None, [*BASE, *extra]))


def refused(*extra) -> str:
    with pytest.raises(ConfigError) as e:
        plan(*extra)
    text = str(e.value)
    assert "\n" not in text
    return text


def test_no_mechanism_plans_nothing_and_refuses_keys_that_would_do_nothing():
    assert plan().privacy is None
    assert refused("fl.privacy.noise_multiplier=1.0").startswith(
        "fl.privacy.noise_multiplier: set, but fl.privacy.mechanism is 'none'")
    assert "fl.privacy.clipping_norm" in refused("fl.privacy.clipping_norm=1")


def test_a_mechanism_needs_a_clipping_norm():
    assert refused("fl.privacy.mechanism=local").startswith("fl.privacy.clipping_norm: ")
    assert refused("fl.privacy.mechanism=central_server", "fl.privacy.clipping_norm=1",
                   "fl.strategy={clip_norm: 2}").startswith("fl.strategy.clip_norm: ")


@pytest.mark.parametrize("algo", ["median", "trimmed_mean", "krum", "multikrum", "bulyan"])
def test_central_dp_is_refused_for_a_rule_that_is_not_a_mean(algo):
    text = refused(f"fl.algorithm={algo}", "fl.privacy.mechanism=central_server",
                   "fl.privacy.clipping_norm=1", "fl.clients_per_round=8")
    assert text.startswith("fl.privacy.mechanism: central_server with fl.algorithm " + algo)
    assert "calibrates a mean" in text


@pytest.mark.parametrize("algo", ["local", "zeroshot", "centralized", "yoco", "scaffold"])
def test_dp_is_refused_where_no_private_upload_is_aggregated(algo):
    text = refused(f"fl.algorithm={algo}", "fl.privacy.mechanism=local",
                   "fl.privacy.clipping_norm=1")
    assert text.startswith(f"fl.privacy.mechanism: local with fl.algorithm {algo}")


def test_local_dp_goes_with_a_robust_rule():
    p = plan("fl.algorithm=median", "fl.privacy.mechanism=local", "fl.privacy.clipping_norm=1",
             "fl.privacy.noise_multiplier=1")
    assert p.privacy.mechanism == "local"
    assert build_strategy(p).name == "median"  # nothing wraps the server


def test_target_epsilon_solves_sigma_before_the_run_and_records_it():
    p = plan("fl.privacy.mechanism=central_server", "fl.privacy.clipping_norm=1",
             "fl.privacy.target_epsilon=10")
    sigma = p.privacy.noise_multiplier
    assert sigma > 0 and p.privacy.planned_epsilon == pytest.approx(10, rel=1e-4)
    assert p.privacy.planned_epsilon <= 10
    assert any(n.startswith("fl.privacy.noise_multiplier = ") for n in p.notes)
    acc = Accountant("central_server", sigma, delta=1e-5, sampling="without_replacement",
                     num_clients=10, clients_per_round=4)
    assert acc.epsilon(24) == p.privacy.planned_epsilon
    s = build_strategy(p)
    assert isinstance(s, CentralServer) and s.noise_multiplier == sigma
    assert "fl.privacy.target_epsilon" in refused(
        "fl.privacy.mechanism=central_server", "fl.privacy.clipping_norm=1",
        "fl.privacy.target_epsilon=10", "fl.privacy.noise_multiplier=1")


def test_adaptive_noise_too_large_for_the_count_noise_is_refused():
    text = refused("fl.privacy.mechanism=central_adaptive", "fl.privacy.clipping_norm=1",
                   "fl.privacy.noise_multiplier=1")  # default sigma_b = 4/20
    assert text.startswith("fl.privacy.clipped_count_stddev: ")
    p = plan("fl.algorithm=fedyogi", "fl.privacy.mechanism=central_adaptive",
             "fl.privacy.clipping_norm=1", "fl.privacy.noise_multiplier=1",
             "fl.privacy.clipped_count_stddev=2")
    s = build_strategy(p)
    assert isinstance(s, CentralAdaptive) and s.name == "fedyogi" and s.count_std == 2


def test_the_header_shows_the_planned_epsilon():
    cfg = load_config(None, [*BASE, "fl.privacy.mechanism=central_client",
                             "fl.privacy.clipping_norm=0.5", "fl.privacy.noise_multiplier=1",
                             "fl.privacy.sampling=poisson"])
    p = plan_run(cfg)
    text = "\n".join(run_header(cfg, p, "out"))
    assert "privacy central_client, noise multiplier 1, clipping norm 0.5, sampling poisson" in text
    assert f"epsilon {p.privacy.planned_epsilon:.4g} at delta 1e-05 after 24 rounds" in text
    assert math.isfinite(p.privacy.planned_epsilon)


def test_client_uploads_are_clipped_or_noised_from_the_seed():
    x = {"w": torch.zeros(4)}
    y = {"w": torch.tensor([3.0, 4.0, 0.0, 0.0])}
    central = plan("fl.privacy.mechanism=central_client", "fl.privacy.clipping_norm=1").privacy
    assert torch.allclose(client_privatize(central, y, x, 0, 1, 2)["w"],
                          torch.tensor([0.6, 0.8, 0.0, 0.0]))
    local = plan("fl.privacy.mechanism=local", "fl.privacy.clipping_norm=1",
                 "fl.privacy.noise_multiplier=1").privacy
    a = client_privatize(local, y, x, 0, 1, 2)["w"]
    assert torch.equal(a, client_privatize(local, y, x, 0, 1, 2)["w"])
    assert not torch.equal(a, client_privatize(local, y, x, 0, 1, 3)["w"])  # another client
    assert client_privatize(None, y, x, 0, 1, 2) is y
