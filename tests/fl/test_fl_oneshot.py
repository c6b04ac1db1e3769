"""Weighted TIES / DARE-TIES: the disjoint merge is the mean of the agreeing clients weighted
by their example counts, sum_{i agrees} w_i tau_i / sum_{i agrees} w_i."""

from __future__ import annotations

import pytest
import torch
from helpers.merge_references import ties_by_hand

from fedmllm.fl import merge_lora_products

F64 = torch.float64
KA = "m.layers.0.q_proj.lora_A.weight"
KB = "m.layers.0.q_proj.lora_B.weight"
MOD = "m.layers.0.q_proj"


def _rank_one(row):
    """A rank-1 upload whose product B A is the 1 x n matrix ``row`` (B = [[1]])."""
    return {KA: torch.tensor([row], dtype=F64), KB: torch.ones(1, 1, dtype=F64)}


@pytest.mark.parametrize("method", ["ties", "dare_ties"])
def test_disagreeing_big_and_small_client_give_the_big_clients_value(method):
    # entry 0: +2 (90 samples) vs -1 (10): summed sign +, only the big client agrees
    # entry 1: both agree (+3, +1): the weighted mean 0.9 * 3 + 0.1 * 1
    # entry 2: -4 (90) vs +5 (10): summed sign +: only the small client agrees
    states = [_rank_one([2.0, 3.0, -4.0]), _rank_one([-1.0, 1.0, 5.0])]
    out = merge_lora_products(states, [90, 10], method=method, density=1.0, output="delta",
                              seed=0)
    expected = torch.tensor([[2.0, 0.9 * 3.0 + 0.1 * 1.0, 5.0]], dtype=F64)
    torch.testing.assert_close(out[MOD], expected, rtol=1e-15, atol=1e-15)


def test_equal_weights_give_the_plain_mean_of_the_agreeing_entries():
    states = [_rank_one([2.0, 3.0, -4.0, 0.0]), _rank_one([-1.0, 1.0, 5.0, 0.0]),
              _rank_one([4.0, -6.0, 1.0, 0.0])]
    out = merge_lora_products(states, [7, 7, 7], method="ties", density=1.0, output="delta")
    # sums: 5 (+), -2 (-), 2 (+), 0 (+, nobody agrees: 0)
    expected = torch.tensor([[(2.0 + 4.0) / 2, -6.0, (5.0 + 1.0) / 2, 0.0]], dtype=F64)
    torch.testing.assert_close(out[MOD], expected, rtol=1e-15, atol=1e-15)


def test_ties_with_trimming_and_unequal_weights_matches_a_by_hand_reference():
    g = torch.Generator().manual_seed(3)
    counts = [50, 3, 20, 7]
    states = [{KA: torch.randn(3, 6, generator=g, dtype=F64),
               KB: torch.randn(5, 3, generator=g, dtype=F64)} for _ in counts]
    init = {KA: torch.randn(3, 6, generator=g, dtype=F64),
            KB: torch.randn(5, 3, generator=g, dtype=F64)}
    p0 = init[KB] @ init[KA]
    taus = [s[KB] @ s[KA] - p0 for s in states]
    out = merge_lora_products(states, counts, method="ties", density=0.4, initial=init,
                              output="delta")
    want = p0 + ties_by_hand(taus, torch.tensor(counts, dtype=F64) / sum(counts), 0.4)
    torch.testing.assert_close(out[MOD], want, rtol=1e-12, atol=1e-12)
    # the count rule (peft's disjoint_merge of N w_i tau_i) differs here
    n = len(counts)
    w = torch.tensor(counts, dtype=F64) / sum(counts)
    stack = torch.stack([t * (t.abs() >= t.abs().reshape(-1).topk(int(0.4 * t.numel()))
                                    .values[-1]) for t in taus])
    elected = torch.where(stack.sum(0) >= 0, 1.0, -1.0).to(F64)
    agree = (torch.sign(stack) == elected).to(F64)
    count_rule = p0 + (agree * n * w[:, None, None] * stack).sum(0) / agree.sum(0).clamp(min=1)
    assert float((count_rule - want).abs().max()) > 1e-2


def test_dare_takes_any_63_bit_seed():
    """Seeds from SeedSequence-style derivations are 63-bit: each module's derived seed must
    still fit torch.manual_seed (``seed * 1_000_003 + index`` overflowed)."""
    g = torch.Generator().manual_seed(0)
    states = [{KA: torch.randn(2, 8, generator=g, dtype=F64),
               KB: torch.randn(6, 2, generator=g, dtype=F64)} for _ in range(3)]
    seed = 2**63 - 25
    a = merge_lora_products(states, [1, 2, 3], method="dare_ties", density=0.5, seed=seed,
                            output="delta")
    b = merge_lora_products(states, [1, 2, 3], method="dare_ties", density=0.5, seed=seed,
                            output="delta")
    c = merge_lora_products(states, [1, 2, 3], method="dare_ties", density=0.5, seed=seed - 1,
                            output="delta")
    assert torch.equal(a[MOD], b[MOD]) and not torch.equal(a[MOD], c[MOD])


# ----------------------------------------------------------------------------- the registry

@pytest.fixture
def merge_registry(monkeypatch):
    """A copy of the merge registry, so a test's rules are gone afterwards."""
    from fedmllm.fl.oneshot import registry

    monkeypatch.setattr(registry, "_MERGES", {k: dict(v) for k, v in registry._MERGES.items()})
    return registry


def test_a_registered_rule_is_a_merge_of_both_families(merge_registry):
    from fedmllm.fl import merge_lora_uploads
    from fedmllm.fl.oneshot import merge_names, product_methods, register_merge, upload_rules

    assert merge_names("key") == ("fedavg", "mean", "pca")
    assert product_methods() == ("exact", "task_arithmetic", "magnitude_prune", "ties",
                                 "dare_linear", "dare_ties")

    @register_merge("key", "first")
    def first(tensors, counts, options):
        return tensors[0]

    @register_merge("product", "largest")
    def largest(taus, weights, density, sign):
        return taus[int(torch.stack([t.norm() for t in taus]).argmax())]

    assert "first" in upload_rules() and "largest" in product_methods()
    states = [_rank_one([2.0, 3.0]), _rank_one([-1.0, 7.0])]
    out = merge_lora_uploads(states, [1, 3], rule_A="first", rule_B="mean")
    torch.testing.assert_close(out[KA], states[0][KA], rtol=0, atol=0)
    out = merge_lora_products(states, [1, 3], method="largest", output="delta")
    torch.testing.assert_close(out[MOD], torch.tensor([[-1.0, 7.0]], dtype=F64), rtol=0,
                               atol=0)
    with pytest.raises(ValueError, match="key merge 'first' is already registered"):
        register_merge("key", "first")
    with pytest.raises(ValueError, match="unknown product merge 'larg'"):
        merge_lora_products(states, [1, 3], method="larg")



# ----------------------------------------------------------------------------- one-shot FedOpt
# Two clients, three elements: deltas D1 = (0.02, -0.04, 0), D2 = (0.06, 0, 0.01), examples
# 1 and 3, so D_u = (0.04, -0.02, 0.005) and D_w = (0.05, -0.01, 0.0075); eta 0.1, tau 0.01.
X0 = torch.tensor([0.0, 0.5, -1.0], dtype=F64)
D1, D2 = [0.02, -0.04, 0.0], [0.06, 0.0, 0.01]
D_U, D_W = torch.tensor([0.04, -0.02, 0.005], dtype=F64), torch.tensor([0.05, -0.01, 0.0075],
                                                                     dtype=F64)
FEDOPT = {"eta": 0.1, "tau": 0.01, "beta1": 0.9, "beta2": 0.99}
#: the research step's v by hand (v0 = tau^2 = 1e-4, D_u^2 = (1.6e-3, 4e-4, 2.5e-5))
RESEARCH_V = {
    "fedadam": [0.99e-4 + 1.6e-5, 0.99e-4 + 4e-6, 0.99e-4 + 2.5e-7],  # b2 tau^2 + (1-b2) D^2
    "fedyogi": [1e-4 + 1.6e-5, 1e-4 + 4e-6, 1e-4 - 2.5e-7],  # tau^2 - (1-b2) D^2 sgn(tau^2-D^2)
    "fedadagrad": [1e-4 + 1.6e-3, 1e-4 + 4e-4, 1e-4 + 2.5e-5],  # tau^2 + D^2
}


def _fedopt_merge(rule: str, step: str | None, **params):
    from fedmllm.fl import merge_lora_uploads

    states = [{KB: (X0 + torch.tensor(d, dtype=F64)).reshape(3, 1)} for d in (D1, D2)]
    given = {k: v for k, v in FEDOPT.items() if rule != "fedadagrad" or "beta" not in k}
    out = merge_lora_uploads(states, [1, 3], rule_B=rule, initial={KB: X0.reshape(3, 1)},
                             params_B={**given, **params}, fedopt_step=step)
    return out[KB].reshape(3)


@pytest.mark.parametrize("rule", sorted(RESEARCH_V))
def test_research_oneshot_step_is_m_equal_delta_with_v_from_tau_squared(rule):
    """m = D_u (every momentum buffer is the delta at round 0), x = x0 + eta m/(sqrt(v)+tau)."""
    v = torch.tensor(RESEARCH_V[rule], dtype=F64)
    want = X0 + 0.1 * D_U / (v.sqrt() + 0.01)
    torch.testing.assert_close(_fedopt_merge(rule, "research"), want, rtol=1e-12, atol=1e-15)
    if rule == "fedadam":  # the numbers themselves
        torch.testing.assert_close(_fedopt_merge(rule, "research") - X0, torch.tensor(
            [0.1930147453, -0.0992610434, 0.0250470516], dtype=F64), rtol=1e-8, atol=0)


def test_textbook_oneshot_fedadam_step_is_a_tenth_of_the_weighted_delta_bias_corrected():
    """m = 0.1 D_w, v = 0.01 D_w^2, eta_t = eta sqrt(1 - 0.99^2) / (1 - 0.9^2) = 0.0742460."""
    eta_t = 0.1 * (1 - 0.99**2) ** 0.5 / (1 - 0.9**2)
    want = X0 + eta_t * (0.1 * D_W) / (0.1 * D_W.abs() + 0.01)
    got = _fedopt_merge("fedadam", "textbook")
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(got - X0, torch.tensor(
        [0.0247486596, -0.0067496344, 0.0051799520], dtype=F64), rtol=1e-8, atol=0)
    torch.testing.assert_close(_fedopt_merge("fedadam", None), got)  # params as given
    torch.testing.assert_close(_fedopt_merge("fedadam", None, variant="fedmllm"),
                               _fedopt_merge("fedadam", "research"))


def test_a_variant_contradicting_the_oneshot_step_is_refused():
    from fedmllm.fl.oneshot import rule_params

    assert rule_params("fedadam", {"eta": 1.0}, "research") == {"eta": 1.0,
                                                               "variant": "fedmllm"}
    assert rule_params("fedavgm", {"momentum": 0.5}, "research") == {"momentum": 0.5}
    with pytest.raises(ValueError, match="variant 'textbook' contradicts fedopt_step "):
        _fedopt_merge("fedyogi", "research", variant="textbook")
    with pytest.raises(ValueError, match="unknown fedopt_step 'adam'"):
        _fedopt_merge("fedadam", "adam")
