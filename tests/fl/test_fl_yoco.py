"""YOCO one-shot LoRA math: SVD init, gamma schedule, penalties, PCA merge, product merges,
sign-conflict diagnostics, communication units — against hand-computed numbers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from fedmllm.fl import (
    ObjectiveResult,
    YocoObjective,
    code_init,
    conflict_matrix,
    conflict_report,
    factorize,
    gamma_schedule,
    l1_penalty,
    lora_pairs,
    merge_lora_products,
    merge_lora_uploads,
    orthogonal_lambda,
    orthogonal_penalty,
    pca_weighted_merge,
    refactorize,
    sign_conflict,
    sign_penalty,
    svd_init,
    svd_residual,
    upload_units,
)

F64 = torch.float64


def t64(x):
    return torch.tensor(x, dtype=F64)


def best_rank(W, r):
    u, s, vh = torch.linalg.svd(W, full_matrices=False)
    return u[:, :r] @ torch.diag(s[:r]) @ vh[:r]


# ----------------------------------------------------------------------------- initialization

def test_svd_init_factors_and_residual():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(6, 5, generator=g, dtype=F64)
    A0, B0 = svd_init(W, 2)
    assert A0.shape == (2, 5) and B0.shape == (6, 2)
    s = torch.linalg.svdvals(W)[:2]
    # A0 = diag(sqrt S) V^T, B0 = U diag(sqrt S): both Gram matrices are diag(S_r)
    torch.testing.assert_close(A0 @ A0.T, torch.diag(s))
    torch.testing.assert_close(B0.T @ B0, torch.diag(s))
    torch.testing.assert_close(B0 @ A0, best_rank(W, 2))
    torch.testing.assert_close(svd_residual(W, A0, B0) + B0 @ A0, W)
    # with LoRA scaling s: s * B0 A0 is still the rank-r approximation
    A2, B2 = svd_init(W, 2, scaling=2.0)
    torch.testing.assert_close(2.0 * B2 @ A2, best_rank(W, 2))
    torch.testing.assert_close(svd_residual(W, A2, B2, scaling=2.0) + 2.0 * B2 @ A2, W)


def test_svd_init_matches_peft_pissa():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(5, 6, bias=False)

        def forward(self, x):
            return self.lin(x)

    model = Tiny()
    W = model.lin.weight.detach().clone()
    x = torch.randn(3, 5)
    before = model(x).detach()
    cfg = LoraConfig(r=2, lora_alpha=4, target_modules=["lin"], init_lora_weights="pissa")
    peft_model = get_peft_model(model, cfg)
    layer = peft_model.base_model.model.lin
    A0, B0 = svd_init(W, 2, scaling=2.0)
    torch.testing.assert_close(layer.lora_A["default"].weight.detach(), A0)
    torch.testing.assert_close(layer.lora_B["default"].weight.detach(), B0)
    torch.testing.assert_close(
        layer.base_layer.weight.detach(), svd_residual(W, A0, B0, scaling=2.0)
    )
    torch.testing.assert_close(peft_model(x).detach(), before, atol=1e-5, rtol=1e-5)


def test_code_init_svd_b_random_a():
    W = torch.randn(7, 9, generator=torch.Generator().manual_seed(1))
    _, B_svd = svd_init(W, 3)
    A1, B1 = code_init(W, 3, generator=torch.Generator().manual_seed(5))
    A2, _ = code_init(W, 3, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(B1, B_svd)
    torch.testing.assert_close(A1, A2)  # reproducible
    assert A1.shape == (3, 9)
    # peft's LoRA-A init, kaiming_uniform_(a=sqrt 5): U(-b, b) with
    # b = sqrt(2 / (1 + 5)) * sqrt(3 / fan_in) = 1 / sqrt(9)
    drawn = torch.empty(3, 9).uniform_(-1 / 3, 1 / 3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(A1, drawn)


# ----------------------------------------------------------------------------- schedules

def test_gamma_schedule_endpoints_and_monotone():
    assert gamma_schedule(0, 100) == pytest.approx(1.0)
    assert gamma_schedule(100, 100) == pytest.approx(50.0)
    assert gamma_schedule(50, 100) == pytest.approx(25.5)
    assert gamma_schedule(0, 10, 1, 200) == pytest.approx(1.0)
    assert gamma_schedule(10, 10, 1, 200) == pytest.approx(200.0)
    values = [gamma_schedule(t, 100, 1, 200) for t in range(101)]
    assert all(b > a for a, b in itertools.pairwise(values))
    assert gamma_schedule(-5, 100) == gamma_schedule(0, 100)  # clamped
    assert gamma_schedule(500, 100) == gamma_schedule(100, 100)
    with pytest.raises(ValueError):
        gamma_schedule(0, 0)


def test_orthogonal_lambda_matches_released_code_mapping():
    T = 37
    assert orthogonal_lambda(0, T) == pytest.approx(0.1)
    assert orthogonal_lambda(T, T) == pytest.approx(0.01)
    for t in range(T + 1):
        alpha = gamma_schedule(t, T, 1, 200)  # the code: lam = 0.1 - (alpha-1)/(199) * 0.09
        assert orthogonal_lambda(t, T) == pytest.approx(0.1 - (alpha - 1) / 199 * 0.09)
        g = gamma_schedule(t, T, 1, 50)  # same cosine progress for any gamma range
        assert orthogonal_lambda(t, T) == pytest.approx(0.1 - (g - 1) / 49 * 0.09)


# ----------------------------------------------------------------------------- penalties

def test_sign_penalty_value_and_gradient_closed_form():
    B = t64([[0.5, -0.2], [0.1, 0.3], [-0.7, 0.0]]).requires_grad_()
    Bs = t64([[1.0, 1.0], [-1.0, 1.0], [-1.0, 0.0]])
    gamma, eps = 2.0, 1e-6
    val = sign_penalty(B, Bs, gamma)
    val.backward()
    th = torch.tanh(gamma * B.detach())
    D = th - Bs
    nd, ns = math.sqrt(float((D**2).sum())), math.sqrt(5.0)  # ||B_s|| = sqrt(5)
    assert float(val.detach()) == pytest.approx(nd / (ns + eps), rel=1e-12)
    grad = gamma * (1 - th**2) * D / (nd * (ns + eps))
    torch.testing.assert_close(B.grad, grad)


def test_sign_penalty_by_hand_at_zero_and_at_the_target():
    Bs = t64([[1.0, -1.0], [1.0, 1.0]])  # ||B_s|| = 2
    B = torch.zeros(2, 2, dtype=F64, requires_grad=True)
    val = sign_penalty(B, Bs, 3.0)  # tanh(0) = 0 -> ||B_s|| / (||B_s|| + eps)
    assert float(val.detach()) == pytest.approx(2 / (2 + 1e-6), rel=1e-12)
    val.backward()
    torch.testing.assert_close(B.grad, -3.0 * Bs / (2 * (2 + 1e-6)))
    # saturated soft sign equal to the target: value 0 and a finite (zero) gradient
    B2 = (40.0 * Bs).requires_grad_()
    val2 = sign_penalty(B2, Bs, 1.0)
    val2.backward()
    assert float(val2.detach()) == 0.0
    assert torch.isfinite(B2.grad).all() and float(B2.grad.abs().max()) == 0.0


def test_l1_and_orthogonal_penalties_by_hand():
    A = t64([[1.0, -2.0], [0.5, 0.0]]).requires_grad_()
    v = l1_penalty(A, 0.1)
    assert float(v.detach()) == pytest.approx(0.35)
    v.backward()
    torch.testing.assert_close(A.grad, 0.1 * t64([[1.0, -1.0], [1.0, 0.0]]))

    A = t64([[1.0, 0.0, 1.0], [0.0, 2.0, 0.0]]).requires_grad_()
    # A A^T = diag(2, 4) -> minus I = diag(1, 3) -> squared Frobenius 10
    v = orthogonal_penalty(A, 0.1)
    assert float(v.detach()) == pytest.approx(1.0)
    v.backward()
    grad = A.grad.clone()
    # the released code's ||A^T A - I_in||^2 = 11 = 10 + (in - r), with the same gradient
    A2 = A.detach().clone().requires_grad_()
    code = ((A2.T @ A2 - torch.eye(3, dtype=F64)) ** 2).sum()
    assert float(code.detach()) == pytest.approx(11.0)
    (0.1 * code).backward()
    torch.testing.assert_close(grad, A2.grad)
    torch.testing.assert_close(grad, 0.4 * (A.detach() @ A.detach().T - torch.eye(2, dtype=F64))
                               @ A.detach())


# ----------------------------------------------------------------------------- objective

KA = "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"
KB = "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight"
KO = "base_model.model.model.embed_tokens.weight"


def _yoco_state():
    g = torch.Generator().manual_seed(3)
    return {
        KA: torch.randn(2, 4, generator=g, dtype=F64),
        KB: torch.randn(5, 2, generator=g, dtype=F64),
        KO: torch.randn(3, 2, generator=g, dtype=F64),
    }


def _params(state, shift=0.1):
    return {k: (v + shift).requires_grad_() for k, v in state.items()}


def test_yoco_objective_full_l1_matches_pieces_and_advances_gamma():
    init = _yoco_state()
    obj = YocoObjective(variant="init_ba", lam=0.01, gamma_min=1, gamma_max=9, total_steps=4)
    obj.begin(init, {}, {})
    init[KB].mul_(-1)  # the recorded sign target must not follow later changes
    params = _params(_yoco_state())
    signs = torch.sign(_yoco_state()[KB])
    for t in range(3):
        assert obj.step == t
        val = obj.penalty(params)
        g = gamma_schedule(t, 4, 1, 9)
        want = sign_penalty(params[KB], signs, g) + l1_penalty(params[KA], 0.01)
        assert float(val.detach()) == pytest.approx(float(want.detach()), rel=1e-12)
        assert obj.last_terms["gamma"] == pytest.approx(g)
    # the penalty is differentiable and touches only the LoRA tensors
    val = obj.penalty(params)
    val.backward()
    assert params[KA].grad is not None and params[KB].grad is not None
    assert params[KO].grad is None
    obj.set_step(4)
    assert obj.gamma() == pytest.approx(9.0)
    assert obj.end(params, 4e-3) == ObjectiveResult()


def test_yoco_objective_variants_calls_per_step_and_errors():
    init = _yoco_state()
    params = _params(init)
    obj = YocoObjective(variant="init", total_steps=3)
    obj.begin(init, {}, {})
    assert obj.penalty(params) is None

    obj = YocoObjective(variant="init_b", lam=0.5, total_steps=3, gamma_max=5)
    obj.begin(init, {}, {})
    want = sign_penalty(params[KB], torch.sign(init[KB]), 1.0)  # no A term for init_b
    assert float(obj.penalty(params).detach()) == pytest.approx(float(want.detach()), rel=1e-12)

    obj = YocoObjective(variant="full", total_steps=3, gamma_max=5, calls_per_step=2)
    obj.begin(init, {}, {})
    gammas = []
    for _ in range(5):
        obj.penalty(params)
        gammas.append(obj.last_terms["gamma"])
    assert gammas == pytest.approx([gamma_schedule(t, 3, 1, 5) for t in (0, 0, 1, 1, 2)])
    obj.begin(init, {}, {})  # a new client starts from t = 0
    assert obj.step == 0

    obj = YocoObjective(variant="full", a_penalty="orthogonal", total_steps=10, gamma_max=200)
    obj.begin(init, {}, {})
    obj.set_step(6)
    val = obj.penalty(params)
    lam_o = orthogonal_lambda(6, 10)
    want = sign_penalty(params[KB], torch.sign(init[KB]), gamma_schedule(6, 10, 1, 200))
    want = want + orthogonal_penalty(params[KA], lam_o)
    assert float(val.detach()) == pytest.approx(float(want.detach()), rel=1e-12)
    assert obj.last_terms["lam_o"] == pytest.approx(lam_o)

    with pytest.raises(RuntimeError, match="before begin"):
        YocoObjective(total_steps=2).penalty(params)
    obj = YocoObjective()
    obj.begin(init, {}, {})
    with pytest.raises(RuntimeError, match="total_steps"):
        obj.penalty(params)
    obj.set_total_steps(2)
    with pytest.raises(ValueError, match="not in the global state"):
        obj.penalty({"x.lora_B.weight": torch.zeros(5, 2)})
    with pytest.raises(ValueError, match="variant"):
        YocoObjective(variant="paper")
    with pytest.raises(ValueError, match="a_penalty"):
        YocoObjective(a_penalty="l2")


# ----------------------------------------------------------------------------- PCA merge

MU = t64([1.0, 2.0, 3.0, 4.0])
U = t64([1.0, 1.0, 0.0, 0.0]) / math.sqrt(2)
V = t64([0.0, 0.0, 1.0, -1.0]) / math.sqrt(2)
# centred coordinates: along U (2, -1, -1) (variance 2), along V (0, 1, -1) (variance 2/3)
HAND = [(MU + 2 * U).view(2, 2), (MU - U + V).view(2, 2), (MU - U - V).view(2, 2)]


def test_pca_merge_hand_computed():
    mu = MU.view(2, 2)
    # energy p=2: c_U = (8 - 1 - 1) / (4 + 1 + 1) = 1, c_V = (0 + 1 - 1) / 2 = 0
    torch.testing.assert_close(pca_weighted_merge(HAND), mu + U.view(2, 2))
    # p=4: c_U = (2^5 - 1 - 1) / (2^4 + 1 + 1) = 5/3
    torch.testing.assert_close(pca_weighted_merge(HAND, power=4), mu + 5 / 3 * U.view(2, 2))
    # max, top component only: the extreme client's coordinate 2
    torch.testing.assert_close(pca_weighted_merge(HAND, k=1, weighting="max"),
                               mu + 2 * U.view(2, 2))
    # explained variance 0.75 / 1.0: k=0.7 keeps one component, so V stays at the mean
    torch.testing.assert_close(pca_weighted_merge(HAND, k=0.7, weighting="max"),
                               mu + 2 * U.view(2, 2))
    # the plain mean (and p = 0) give mu
    torch.testing.assert_close(pca_weighted_merge(HAND, weighting="mean"), mu)
    torch.testing.assert_close(pca_weighted_merge(HAND, power=0), mu)


def test_pca_merge_keeps_a_single_client_direction():
    base = t64([0.5, -1.0, 2.0, 0.0, 1.0, 1.0])
    v = t64([1.0, 2.0, 0.0, 2.0, 0.0, 0.0]) / 3.0  # unit vector
    t = 3.0
    As = [base.clone(), base.clone(), base + t * v, base.clone()]
    w = [1.0, 2.0, 3.0, 4.0]  # client 2 has weight 0.3
    # the mean keeps w_i t = 0.9 along v; energy (p=2) keeps (1 - w_i) t = 2.1
    torch.testing.assert_close(pca_weighted_merge(As, w, weighting="mean"), base + 0.9 * v)
    torch.testing.assert_close(pca_weighted_merge(As, w), base + 2.1 * v)
    # uncentred, components carried by one client each come back at full magnitude
    e = torch.eye(3, dtype=F64)
    As = [3 * e[0], 1 * e[1], 2 * e[2]]
    torch.testing.assert_close(pca_weighted_merge(As, center=False), t64([3.0, 1.0, 2.0]))
    torch.testing.assert_close(
        pca_weighted_merge(As, center=False, weighting="mean"), t64([1.0, 1 / 3, 2 / 3])
    )


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("k", [None, 1, 2, 0.5])
def test_pca_merge_mean_weighting_is_the_weighted_mean(center, k):
    g = torch.Generator().manual_seed(7)
    As = [torch.randn(3, 4, generator=g, dtype=F64) for _ in range(5)]
    w = t64([1.0, 2.0, 3.0, 4.0, 5.0])
    mean = sum(wi * a for wi, a in zip(w / w.sum(), As, strict=True))
    out = pca_weighted_merge(As, w, k=k, center=center, weighting="mean")
    torch.testing.assert_close(out, mean, atol=1e-12, rtol=0)
    out = pca_weighted_merge(As, w, k=k, center=center, power=0.0)
    torch.testing.assert_close(out, mean, atol=1e-12, rtol=0)


def test_pca_merge_edge_cases():
    a = torch.randn(2, 3)
    out = pca_weighted_merge([a, a.clone(), a.clone()])  # no variance: the mean
    assert out.dtype == torch.float32 and out.shape == (2, 3)
    torch.testing.assert_close(out, a)
    with pytest.raises(ValueError, match="weighting"):
        pca_weighted_merge([a, a], weighting="median")
    with pytest.raises(ValueError, match="shape"):
        pca_weighted_merge([a, a.T])
    with pytest.raises(ValueError, match="k must"):
        pca_weighted_merge([a, a], k=0)


# ----------------------------------------------------------------------------- upload merge

KA2 = "m.layers.0.q_proj.lora_A.weight"
KB2 = "m.layers.0.q_proj.lora_B.weight"
KE = "m.embed.weight"
N_EX = [1, 2, 3]


def _uploads():
    g = torch.Generator().manual_seed(11)
    init = {KA2: torch.randn(2, 3, generator=g, dtype=F64),
            KB2: torch.randn(4, 2, generator=g, dtype=F64),
            KE: torch.randn(2, 2, generator=g, dtype=F64)}
    states = [{k: v + 0.3 * torch.randn(v.shape, generator=g, dtype=F64)
               for k, v in init.items()} for _ in N_EX]
    return init, states


def _wmean(ts, w):
    return sum(wi / sum(w) * t for wi, t in zip(w, ts, strict=True))


def test_merge_uploads_plain_rules_and_pca():
    _init, states = _uploads()
    out = merge_lora_uploads(states, N_EX, rule_B="fedavg", rule_A="mean", rule_other="mean")
    torch.testing.assert_close(out[KB2], _wmean([s[KB2] for s in states], N_EX))
    torch.testing.assert_close(out[KA2], _wmean([s[KA2] for s in states], [1, 1, 1]))
    torch.testing.assert_close(out[KE], _wmean([s[KE] for s in states], [1, 1, 1]))
    # PCA with the "mean" weighting equals fedavg (sample-weighted) or mean (unweighted)
    out = merge_lora_uploads(states, N_EX, pca_weighting="mean")
    torch.testing.assert_close(out[KA2], _wmean([s[KA2] for s in states], N_EX))
    out = merge_lora_uploads(states, N_EX, pca_weighting="mean", pca_sample_weighted=False)
    torch.testing.assert_close(out[KA2], _wmean([s[KA2] for s in states], [1, 1, 1]))
    # default: PCA (energy) on A, fedavg on B and the rest
    out = merge_lora_uploads(states, N_EX, pca_k=1)
    torch.testing.assert_close(
        out[KA2], pca_weighted_merge([s[KA2] for s in states], N_EX, k=1)
    )
    torch.testing.assert_close(out[KE], _wmean([s[KE] for s in states], N_EX))


def test_merge_uploads_strategies_applied_once_from_initial():
    init, states = _uploads()
    # "combine": B by the mean, A by FedAvgM (research-code variant) = x0 + D_w
    out = merge_lora_uploads(
        states, N_EX, rule_B="mean", rule_A="fedavgm", initial=init,
        params_A={"variant": "fedmllm"},
    )
    torch.testing.assert_close(out[KA2], _wmean([s[KA2] for s in states], N_EX))
    torch.testing.assert_close(out[KB2], _wmean([s[KB2] for s in states], [1, 1, 1]))
    # textbook FedAdam, round 1: x0 + eta_t m / (sqrt(v) + tau), m = (1-b1) D_w, v = (1-b2) D_w^2
    out = merge_lora_uploads(states, N_EX, rule_B="fedadam", rule_A="fedavg", initial=init)
    d = _wmean([s[KB2] for s in states], N_EX) - init[KB2]
    eta_t = 0.1 * math.sqrt(1 - 0.99**2) / (1 - 0.9**2)
    want = init[KB2] + eta_t * (0.1 * d) / ((0.01 * d * d).sqrt() + 1e-3)
    torch.testing.assert_close(out[KB2], want)
    with pytest.raises(ValueError, match="initial"):
        merge_lora_uploads(states, N_EX, rule_B="fedyogi")
    with pytest.raises(ValueError, match="unknown rule"):
        merge_lora_uploads(states, N_EX, rule_A="scaffold", initial=init)
    with pytest.raises(ValueError, match="takes no params"):
        merge_lora_uploads(states, N_EX, rule_A="mean", params_A={"eta": 1.0})
    # keys of the initial state nobody uploaded keep their initial value
    extra = dict(init, **{"m.other.weight": torch.ones(2)})
    out = merge_lora_uploads(states, N_EX, initial=extra)
    torch.testing.assert_close(out["m.other.weight"], torch.ones(2))


# ----------------------------------------------------------------------------- product merges

def _factor_states(seed=0, n=3, out=5, inn=4, r=2, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    return [{KA2: torch.randn(r, inn, generator=g, dtype=dtype),
             KB2: torch.randn(out, r, generator=g, dtype=dtype)} for _ in range(n)]


def test_exact_product_average_as_rank_nr_factors():
    states = _factor_states()
    merged = merge_lora_products(states, N_EX)
    assert merged[KA2].shape == (6, 4) and merged[KB2].shape == (5, 6)
    want = _wmean([s[KB2] @ s[KA2] for s in states], N_EX)
    torch.testing.assert_close(merged[KB2] @ merged[KA2], want)
    dense = merge_lora_products(states, N_EX, output="delta")
    torch.testing.assert_close(dense["m.layers.0.q_proj"], want)
    # re-factorized to the clients' rank: the best rank-2 approximation of the average
    low = merge_lora_products(states, N_EX, rank="client")
    assert low[KA2].shape == (2, 4)
    torch.testing.assert_close(low[KB2] @ low[KA2], best_rank(want, 2))


def test_refactorize_equals_dense_factorize():
    g = torch.Generator().manual_seed(2)
    A, B = torch.randn(6, 9, generator=g, dtype=F64), torch.randn(8, 6, generator=g, dtype=F64)
    a1, b1 = refactorize(A, B, 3)
    a2, b2 = factorize(B @ A, 3)
    torch.testing.assert_close(b1 @ a1, b2 @ a2)
    torch.testing.assert_close(b1 @ a1, best_rank(B @ A, 3))


def test_ties_density_one_same_signs_is_the_mean():
    g = torch.Generator().manual_seed(4)
    A, B = torch.randn(2, 4, generator=g, dtype=F64), torch.randn(5, 2, generator=g, dtype=F64)
    states = [{KA2: A, KB2: c * B} for c in (0.5, 1.0, 2.5)]  # products c P: identical signs
    prods = [s[KB2] @ s[KA2] for s in states]
    for counts in ([4, 4, 4], N_EX):
        out = merge_lora_products(states, counts, method="ties", density=1.0, output="delta")
        torch.testing.assert_close(out["m.layers.0.q_proj"], _wmean(prods, counts))


def test_ties_sign_election_by_hand():
    states = [{KA2: t64([[1.0, -2.0]]), KB2: t64([[1.0]])},
              {KA2: t64([[-3.0, 1.0]]), KB2: t64([[1.0]])}]
    # summed values (-2, -1): negative wins both entries; disjoint mean of the agreeing ones
    out = merge_lora_products(states, [1, 1], method="ties", output="delta")
    torch.testing.assert_close(out["m.layers.0.q_proj"], t64([[-3.0, -2.0]]))
    # frequency election ties (one + and one - per entry) resolve to +: keep the positives
    out = merge_lora_products(states, [1, 1], method="ties", output="delta",
                              majority_sign_method="frequency")
    torch.testing.assert_close(out["m.layers.0.q_proj"], t64([[1.0, 1.0]]))


def _dare_by_hand(taus, counts, density, seed, module_index, ties=False):
    """DARE (Yu et al.): with torch seeded by SeedSequence([seed, module index]) (63 bits), each
    client in turn keeps each entry with probability ``density`` (a Bernoulli draw, as peft's
    random_pruning) and rescales by 1/density; then the weighted sum, or with ``ties`` the
    sign election and the example-weighted mean of the agreeing entries."""
    w = torch.tensor(counts, dtype=F64) / sum(counts)
    with torch.random.fork_rng():
        word = np.random.SeedSequence([seed, module_index]).generate_state(1, np.uint64)[0]
        torch.manual_seed(int(word >> np.uint64(1)))
        kept = [t * torch.bernoulli(torch.full_like(t, density)) / density for t in taus]
    stack = torch.stack(kept)
    if not ties:
        return (w[:, None, None] * stack).sum(0)
    elected = torch.where(stack.sum(0) >= 0, 1.0, -1.0).to(F64)
    wa = (torch.sign(stack) == elected).to(F64) * w[:, None, None]
    den = wa.sum(0)
    return torch.where(den > 0, (wa * stack).sum(0) / den.clamp_min(1e-300), 0.0)


def test_dare_is_seeded_and_leaves_global_rng_alone():
    states = _factor_states(seed=5, out=12, inn=10)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = merge_lora_products(states, N_EX, method="dare_ties", density=0.5, seed=9,
                            output="delta")
    assert torch.equal(torch.rand(3), expected_next)
    b = merge_lora_products(states, N_EX, method="dare_ties", density=0.5, seed=9,
                            output="delta")
    c = merge_lora_products(states, N_EX, method="dare_ties", density=0.5, seed=10,
                            output="delta")
    key = "m.layers.0.q_proj"
    taus = [s[KB2] @ s[KA2] for s in states]
    torch.testing.assert_close(a[key], _dare_by_hand(taus, N_EX, 0.5, 9, 0, ties=True),
                               rtol=1e-14, atol=1e-14)
    assert torch.equal(a[key], b[key])
    torch.testing.assert_close(c[key], _dare_by_hand(taus, N_EX, 0.5, 10, 0, ties=True),
                               rtol=1e-14, atol=1e-14)
    # density 1 keeps everything: dare_linear is the weighted mean of the products
    full = merge_lora_products(states, N_EX, method="dare_linear", density=1.0, seed=1,
                               output="delta")
    torch.testing.assert_close(full[key], _wmean([s[KB2] @ s[KA2] for s in states], N_EX))


def test_task_arithmetic_relative_to_initial_and_factor_output():
    states = _factor_states(seed=6)
    init = _factor_states(seed=7, n=1)[0]
    p0 = init[KB2] @ init[KA2]
    prods = [s[KB2] @ s[KA2] for s in states]
    key = "m.layers.0.q_proj"
    out = merge_lora_products(states, N_EX, method="task_arithmetic", initial=init,
                              output="delta")
    torch.testing.assert_close(out[key], _wmean(prods, N_EX))  # lam = 1: the weighted mean
    out = merge_lora_products(states, N_EX, method="task_arithmetic", initial=init, lam=2.0,
                              output="delta")
    torch.testing.assert_close(out[key], p0 + 2 * (_wmean(prods, N_EX) - p0))
    fac = merge_lora_products(states, N_EX, method="ties", density=0.5, initial=init)
    dense = merge_lora_products(states, N_EX, method="ties", density=0.5, initial=init,
                                output="delta")
    assert fac[KA2].shape == (2, 4)
    torch.testing.assert_close(fac[KB2] @ fac[KA2], best_rank(dense[key], 2))
    with pytest.raises(ValueError, match="density"):
        merge_lora_products(states, N_EX, method="ties", density=0.0)


def test_lora_pairs_handles_adapter_names_and_rejects_orphans():
    st = {"x.q.lora_A.default.weight": torch.zeros(2, 3),
          "x.q.lora_B.default.weight": torch.zeros(4, 2), "x.emb": torch.zeros(1)}
    assert lora_pairs(st) == {"x.q": ("x.q.lora_A.default.weight", "x.q.lora_B.default.weight")}
    with pytest.raises(ValueError, match="partner"):
        lora_pairs({"x.q.lora_A.weight": torch.zeros(2, 3)})


# ----------------------------------------------------------------------------- diagnostics

CONFLICT = [t64([1.0, 1.0, -1.0, 0.0]), t64([1.0, -1.0, -1.0, 2.0]), t64([-1.0, -1.0, 1.0, 3.0])]


def test_sign_conflict_constructed_case():
    # per coordinate (k+, k-): (2,1) (1,2) (1,2) (2,0)
    rep = sign_conflict(CONFLICT)
    assert rep["rho_bar"] == pytest.approx(2 * 6 / (4 * 3 * 2))  # 0.5
    assert rep["C"] == pytest.approx(3 / (4 * 3))  # 0.25
    assert rep["num_params"] == 4 and rep["num_clients"] == 3
    m = conflict_matrix(CONFLICT)
    torch.testing.assert_close(m, t64([[0, 0.25, 0.75], [0.25, 0, 0.5], [0.75, 0.5, 0]]))
    assert float(m[torch.triu_indices(3, 3, 1).unbind()].mean()) == pytest.approx(rep["rho_bar"])
    # no zeros: the paper's k (N - k) and min(k, N - k) forms
    same = [t64([1.0, -1.0]), t64([1.0, -1.0])]
    assert sign_conflict(same) == {"rho_bar": 0.0, "C": 0.0, "num_params": 2, "num_clients": 2}
    half = [t64([1.0, 1.0]), t64([-1.0, -1.0])]
    assert sign_conflict(half)["rho_bar"] == 1.0 and sign_conflict(half)["C"] == 0.5


def test_conflict_report_for_a_and_b():
    states = [{KA2: c.view(2, 2), KB2: -c.view(4, 1), KE: torch.ones(1)} for c in CONFLICT]
    rep = conflict_report(states)
    assert set(rep) == {"lora_A", "lora_B"}
    assert rep["lora_A"]["rho_bar"] == pytest.approx(0.5)
    assert rep["lora_B"]["C"] == pytest.approx(0.25)
    init = {KA2: torch.zeros(2, 2, dtype=F64), KB2: torch.full((4, 1), -10.0, dtype=F64)}
    rep = conflict_report(states, initial=init)  # all B updates positive: no conflict
    assert rep["lora_B"]["rho_bar"] == 0.0 and rep["lora_A"]["C"] == pytest.approx(0.25)
    assert conflict_report(states[:1]) == {}


def test_upload_units_bytes_and_paper_unit():
    pre = "base_model.model.model.layers.27.self_attn."
    state = {
        pre + "q_proj.lora_A.weight": torch.zeros(8, 16),
        pre + "q_proj.lora_B.weight": torch.zeros(32, 8),
        pre + "v_proj.lora_A.weight": torch.zeros(8, 16),
        pre + "v_proj.lora_B.weight": torch.zeros(32, 8),
        "base_model.model.model.embed_tokens.weight": torch.zeros(10, 4, dtype=torch.bfloat16),
    }
    rep = upload_units(state)
    assert rep["lora_bytes"] == 2 * (128 + 256) * 4 and rep["other_bytes"] == 80
    assert rep["bytes"] == 3152 and rep["lora_params"] == 768
    assert (rep["lora_modules"], rep["layers"], rep["module_types"]) == (2, 1, 2)
    assert rep["units"] == 2 and rep["unit"] == "1x1x2"
    rep = upload_units({pre + "q_proj.lora_A.weight": torch.zeros(8, 16),
                        pre + "q_proj.lora_B.weight": torch.zeros(32, 8)}, rounds=25)
    assert rep["unit"] == "25x1x1" and rep["units"] == 25 and rep["bytes"] == 25 * 1536



def test_dare_draws_a_fresh_mask_for_every_module():
    """Two modules with identical uploads must not share one DARE drop mask."""
    one = _factor_states(seed=8, out=12, inn=10)
    other = {k.replace("layers.0", "layers.1"): k for k in one[0]}
    states = [{**s, **{new: s[old].clone() for new, old in other.items()}} for s in one]
    merged = merge_lora_products(states, N_EX, method="dare_linear", density=0.5, seed=3,
                                 output="delta")
    assert set(merged) == {"m.layers.0.q_proj", "m.layers.1.q_proj"}
    taus = [s[KB2] @ s[KA2] for s in one]
    for index, module in enumerate(("m.layers.0.q_proj", "m.layers.1.q_proj")):
        torch.testing.assert_close(merged[module], _dare_by_hand(taus, N_EX, 0.5, 3, index),
                                   rtol=1e-14, atol=1e-14)
    assert not torch.equal(merged["m.layers.0.q_proj"], merged["m.layers.1.q_proj"])
