"""Server strategies against hand-written references (three clients, two rounds)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedmllm.fl import ALGORITHMS, ClientUpdate, make_strategy, strategy_params

# Global start point and the clients' deltas d_i = y_i - x per round (plain numbers).
X0 = {"w": [1.0, -2.0, 0.25], "b": [0.5]}
DELTAS = [
    [  # round 1
        {"w": [0.3, -0.1, 0.05], "b": [0.2]},
        {"w": [-0.6, 0.4, 0.0], "b": [0.1]},
        {"w": [0.9, 0.2, -0.15], "b": [-0.4]},
    ],
    [  # round 2
        {"w": [0.1, 0.1, -0.2], "b": [-0.05]},
        {"w": [0.2, -0.3, 0.1], "b": [0.3]},
        {"w": [-0.4, 0.05, 0.3], "b": [0.0]},
    ],
]
N_EX = [1, 2, 3]


def run_ours(strategy, dtype=torch.float64, rounds=2):
    """Feed DELTAS to ``strategy``; client states are built from its own previous global."""
    x = {k: torch.tensor(v, dtype=dtype) for k, v in X0.items()}
    history = []
    for r in range(rounds):
        updates = [
            ClientUpdate(
                state={k: x[k] + torch.tensor(d[k], dtype=dtype) for k in x},
                num_examples=N_EX[i],
                client_id=i,
            )
            for i, d in enumerate(DELTAS[r])
        ]
        x = strategy.aggregate(x, updates, r + 1)
        history.append({k: t.to(torch.float64).numpy().copy() for k, t in x.items()})
    return history


def reference(rule, variant="textbook", rounds=2, **p):
    """Independent numpy version of each update rule (written from the docs, not the code)."""
    x = {k: np.array(v, dtype=np.float64) for k, v in X0.items()}
    w = np.array(N_EX, dtype=np.float64) / sum(N_EX)
    m, v = {}, {}
    history = []
    for r in range(1, rounds + 1):
        for k, xk in list(x.items()):
            d = np.array([DELTAS[r - 1][i][k] for i in range(3)])
            d_w = (w[:, None] * d).sum(axis=0)
            d_u = d.mean(axis=0)
            if rule == "fedavg":
                x[k] = xk + d_w
            elif rule == "fedavgm":
                beta, eta = p.get("momentum", 0.9), p.get("server_lr", 1.0)
                if k not in m:
                    m[k] = d_w
                elif variant == "textbook":
                    m[k] = beta * m[k] + d_w
                else:
                    m[k] = beta * m[k] + (1 - beta) * d_w
                x[k] = xk + eta * m[k]
            elif variant == "textbook":  # FedOpt as in Flower 1.42
                b1 = p.get("beta1", 0.0 if rule == "fedadagrad" else 0.9)
                b2 = p.get("beta2", 0.99)
                eta = p.get("eta", {"fedadagrad": 0.1, "fedadam": 0.1, "fedyogi": 0.01}[rule])
                tau = p.get("tau", 1e-3)
                m[k] = b1 * m.get(k, 0.0) + (1 - b1) * d_w
                v0 = v.get(k, np.zeros_like(d_w))
                if rule == "fedadagrad":
                    v[k] = v0 + d_w**2
                elif rule == "fedadam":
                    v[k] = b2 * v0 + (1 - b2) * d_w**2
                else:
                    v[k] = v0 - (1 - b2) * d_w**2 * np.sign(v0 - d_w**2)
                if rule == "fedadam":
                    eta = eta * math.sqrt(1 - b2 ** (r + 1)) / (1 - b1 ** (r + 1))
                x[k] = xk + eta * m[k] / (np.sqrt(v[k]) + tau)
            else:  # research code
                b1, b2 = p.get("beta1", 0.9), p.get("beta2", 0.99)
                eta, tau = p.get("eta", 1e-3), p.get("tau", 1e-3)
                if rule == "fedadagrad" or k not in m:
                    m[k] = d_u
                else:
                    m[k] = b1 * m[k] + (1 - b1) * d_u
                v0 = v.get(k, np.full_like(d_u, tau**2))
                if rule == "fedadagrad":
                    v[k] = v0 + m[k] ** 2
                elif rule == "fedadam":
                    v[k] = b2 * v0 + (1 - b2) * m[k] ** 2
                else:
                    v[k] = v0 - (1 - b2) * m[k] ** 2 * np.sign(v0 - m[k] ** 2)
                x[k] = xk + eta * m[k] / (np.sqrt(v[k]) + tau)
        history.append({k: a.copy() for k, a in x.items()})
    return history


CASES = [
    ("fedavg", "textbook", {}),
    ("fedavgm", "textbook", {}),
    ("fedavgm", "textbook", {"server_lr": 0.5, "momentum": 0.8}),
    ("fedavgm", "fedmllm", {}),
    ("fedadagrad", "textbook", {}),
    ("fedadagrad", "textbook", {"beta1": 0.5, "eta": 0.3}),
    ("fedadagrad", "fedmllm", {}),
    ("fedadam", "textbook", {}),
    ("fedadam", "textbook", {"eta": 0.05, "beta1": 0.8, "beta2": 0.9, "tau": 1e-2}),
    ("fedadam", "fedmllm", {}),
    ("fedyogi", "textbook", {}),
    ("fedyogi", "fedmllm", {}),
    ("fedyogi", "fedmllm", {"eta": 0.1, "tau": 0.05}),
]


@pytest.mark.parametrize("rule,variant,params", CASES)
def test_two_rounds_match_reference(rule, variant, params):
    kwargs = dict(params)
    if rule != "fedavg":
        kwargs["variant"] = variant
    ours = run_ours(make_strategy(rule, **kwargs))
    ref = reference(rule, variant, **params)
    for got, want in zip(ours, ref, strict=True):
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-14)


def test_literal_numbers_fedavg_and_fedmllm_variants():
    # FedAvg round 1, key b: 0.5 + (1*0.2 + 2*0.1 + 3*(-0.4)) / 6 = 0.5 - 0.8/6
    ours = run_ours(make_strategy("fedavg"), rounds=1)
    assert ours[0]["b"][0] == pytest.approx(0.5 - 0.8 / 6, abs=1e-15)
    # research FedAvgM, key b: m1 = D_w1 = -0.8/6; D_w2 = (-0.05 + 0.6 + 0)/6 = 0.55/6
    # m2 = 0.9 m1 + 0.1 D_w2; x2 = x1 + m2
    ours = run_ours(make_strategy("fedavgm", variant="fedmllm"))
    m1, d2 = -0.8 / 6, 0.55 / 6
    assert ours[1]["b"][0] == pytest.approx(0.5 + m1 + 0.9 * m1 + 0.1 * d2, abs=1e-15)
    # research FedAdagrad round 1, key b: m = D_u = (0.2 + 0.1 - 0.4)/3, v = tau^2 + m^2
    ours = run_ours(make_strategy("fedadagrad", variant="fedmllm"), rounds=1)
    mu = -0.1 / 3
    step = 1e-3 * mu / (math.sqrt(1e-6 + mu * mu) + 1e-3)
    assert ours[0]["b"][0] == pytest.approx(0.5 + step, abs=1e-15)
    # textbook FedAdam round 1 (Flower): m = 0.1 D, v = 0.01 D^2, eta_1 = 0.1*sqrt(1-.99^2)/(1-.9^2)
    ours = run_ours(make_strategy("fedadam"), rounds=1)
    d = -0.8 / 6
    eta1 = 0.1 * math.sqrt(1 - 0.99**2) / (1 - 0.9**2)
    assert ours[0]["b"][0] == pytest.approx(0.5 + eta1 * 0.1 * d / (0.1 * abs(d) + 1e-3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("rule", ["fedavg", "fedavgm", "fedadam", "median", "scaffold"])
def test_dtypes_are_kept(rule, dtype):
    kwargs = {"num_clients": 3} if rule == "scaffold" else {}
    strategy = make_strategy(rule, **kwargs)
    x = {"w": torch.tensor([1.0, 2.0], dtype=dtype), "step": torch.tensor(3)}
    ups = [
        ClientUpdate(
            {"w": x["w"] + 0.5 * i}, 1, i, extras={"control_delta": {"w": torch.ones(2)}}
        )
        for i in range(3)
    ]
    new = strategy.aggregate(x, ups, 1)
    assert new["w"].dtype == dtype
    assert new["step"] is x["step"]  # non-floating tensors are never averaged
    for k, t in strategy.state_dict().items():
        if k.startswith("step/"):  # FedAdam's per-key update count
            assert t.dtype == torch.int64 and int(t) == 1
            continue
        assert t.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    ref = make_strategy(rule, **kwargs).aggregate(
        {"w": x["w"].double()}, [ClientUpdate({"w": u.state["w"].double()}, 1, u.client_id,
                                              extras=u.extras) for u in ups], 1
    )
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-6
    torch.testing.assert_close(new["w"].double(), ref["w"], rtol=tol, atol=tol)


@pytest.mark.parametrize("name", ["fedavg", "fedavgm", "median"])
def test_float32_agrees_with_float64_to_input_resolution(name):
    # LoRA-sized updates (1e-4 relative) on float32 weights
    gen = torch.Generator().manual_seed(0)
    x = {"w": torch.randn(4096, generator=gen)}
    ups = [ClientUpdate({"w": x["w"] + 1e-4 * torch.randn(4096, generator=gen)}, i + 1, i)
           for i in range(7)]
    new32 = make_strategy(name).aggregate(x, ups, 1)["w"]
    ups64 = [ClientUpdate({"w": u.state["w"].double()}, u.num_examples, u.client_id) for u in ups]
    new64 = make_strategy(name).aggregate({"w": x["w"].double()}, ups64, 1)["w"]
    ulp = torch.finfo(torch.float32).eps * new64.abs().clamp_min(1e-3)
    assert bool(((new32.double() - new64).abs() <= 4 * ulp).all())


ALL = [(n, {"num_clients": 3} if n == "scaffold" else {}) for n in ALGORITHMS]
#: the rules that combine several clients' updates (centralized takes its one pooled client's)
MERGING = [(n, kw) for n, kw in ALL if n != "centralized"]


@pytest.mark.parametrize("name,kwargs", ALL)
def test_inputs_are_not_modified(name, kwargs):
    strategy = make_strategy(name, **kwargs)
    x = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.5])}
    ups = [
        ClientUpdate({"w": x["w"] * (i + 2), "b": x["b"] - i}, i + 1, i,
                     extras={"control_delta": {"w": torch.full((2,), float(i))}})
        for i in range(1 if strategy.pooled else 3)  # centralized: the one pooled client
    ]
    snapshot = (
        {k: t.clone() for k, t in x.items()},
        [
            ({k: t.clone() for k, t in u.state.items()}, u.extras["control_delta"]["w"].clone())
            for u in ups
        ],
    )
    for r in (1, 2):
        strategy.aggregate(x, ups, r)
    assert all(torch.equal(x[k], snapshot[0][k]) for k in x)
    for u, (state, dc) in zip(ups, snapshot[1], strict=True):
        assert all(torch.equal(u.state[k], state[k]) for k in state)
        assert torch.equal(u.extras["control_delta"]["w"], dc)


def _hetero_expected(name):
    """By hand for test_heterogeneous_key_sets: deltas w: client 0 (n=1) (1, 0), client 1
    (n=3) (0, 3); b: client 1 alone, 1.0 (its weight renormalises to 1)."""
    d_w = np.array([0.25, 2.25])  # (1 (1, 0) + 3 (0, 3)) / 4
    d_u = np.array([0.5, 1.5])
    w0, b0 = np.array([1.0, 2.0]), 0.5

    def fedopt(eta, m_scale, sqrt_v_scale):  # round 1: m = m_scale D, sqrt(v) = s |D|
        def step(d):
            return eta * m_scale * d / (sqrt_v_scale * np.abs(d) + 1e-3)
        return w0 + step(d_w), b0 + step(np.array([1.0]))[0]

    eta_adam = 0.1 * math.sqrt(1 - 0.99**2) / (1 - 0.9**2)
    return {
        "fedavg": (w0 + d_w, b0 + 1.0),
        "fedprox": (w0 + d_w, b0 + 1.0),
        "fedavgm": (w0 + d_w, b0 + 1.0),  # v = D_w in the first round, eta = 1
        "fedadagrad": fedopt(0.1, 1.0, 1.0),  # m = D, v = D^2
        "fedadam": fedopt(eta_adam, 0.1, 0.1),  # m = 0.1 D, v = 0.01 D^2
        "fedyogi": fedopt(0.01, 0.1, 0.1),  # v = 0 + 0.01 D^2 (sign(0 - D^2) = -1)
        "scaffold": (w0 + d_u, b0 + 1.0),  # unweighted
        # the robust rules need 3 (median, Krum, Multi-Krum, Bulyan with f = 0) / 5 (trimmed
        # mean) clients: both keys keep x
        "median": (w0, b0),
        "trimmed_mean": (w0, b0),
        "krum": (w0, b0),
        "multikrum": (w0, b0),
        "bulyan": (w0, b0),
        "local": (w0, b0),
        "zeroshot": (w0, b0),
    }[name]


@pytest.mark.parametrize("name,kwargs", MERGING)
def test_heterogeneous_key_sets(name, kwargs):
    strategy = make_strategy(name, **kwargs)
    x = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.5]), "c": torch.tensor([7.0])}
    ups = [
        ClientUpdate({"w": torch.tensor([2.0, 2.0])}, 1, 0,
                     extras={"control_delta": {"w": torch.ones(2)}}),
        ClientUpdate({"w": torch.tensor([1.0, 5.0]), "b": torch.tensor([1.5])}, 3, 1,
                     extras={"control_delta": {"w": torch.ones(2), "b": torch.ones(1)}}),
    ]
    new = strategy.aggregate(x, ups, 1)
    assert torch.equal(new["c"], x["c"])  # nobody returned "c"
    assert all(not k.endswith("/c") for k in strategy.state_dict())
    w, b = _hetero_expected(name)
    torch.testing.assert_close(new["w"], torch.tensor(w, dtype=torch.float32))
    torch.testing.assert_close(new["b"], torch.tensor([b], dtype=torch.float32))
    if name == "scaffold":
        c = strategy.server_extras()["control"]
        torch.testing.assert_close(c["w"], torch.full((2,), 2 / 3))  # (1 + 1) / N
        torch.testing.assert_close(c["b"], torch.full((1,), 1 / 3))
        assert "c" not in c


def test_no_updates_keeps_global():
    x = {"w": torch.tensor([1.0])}
    strategy = make_strategy("fedadam")
    assert torch.equal(strategy.aggregate(x, [], 1)["w"], x["w"])
    assert strategy.state_dict() == {}


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("fedavgm", {}),
        ("fedavgm", {"variant": "fedmllm"}),
        ("fedadagrad", {}),
        ("fedadam", {}),
        ("fedyogi", {"variant": "fedmllm"}),
        ("scaffold", {"num_clients": 3}),
    ],
)
def test_state_dict_resume_is_exact(name, kwargs):
    x0 = {"w": torch.tensor([1.0, -2.0, 0.25], dtype=torch.float64)}

    def updates(x, r):
        return [
            ClientUpdate({"w": x["w"] + torch.tensor(DELTAS[r][i]["w"], dtype=torch.float64)},
                         N_EX[i], i,
                         extras={"control_delta": {"w": torch.full((3,), 0.1 * (i + r))}})
            for i in range(3)
        ]

    a = make_strategy(name, **kwargs)
    x1 = a.aggregate(x0, updates(x0, 0), 1)
    saved = {k: t.clone() for k, t in a.state_dict().items()}
    assert saved, "stateful strategy must expose its state"
    b = make_strategy(name, **kwargs)
    b.load_state_dict(saved)
    xa = a.aggregate(x1, updates(x1, 1), 2)
    xb = b.aggregate(x1, updates(x1, 1), 2)
    assert torch.equal(xa["w"], xb["w"])
    with pytest.raises(ValueError, match="unexpected state key"):
        b.load_state_dict({"nonsense/w": torch.zeros(3)})


def test_local_and_zeroshot_flags():
    local, zs = make_strategy("local"), make_strategy("zeroshot")
    assert (local.aggregates, local.trains_clients, local.personalized) == (False, True, True)
    assert (zs.aggregates, zs.trains_clients, zs.personalized) == (False, False, False)
    fedavg = make_strategy("fedavg")
    assert (fedavg.aggregates, fedavg.trains_clients, fedavg.personalized) == (True, True, False)


def test_median_and_trimmed_mean_by_hand():
    x = {"w": torch.tensor([0.0, 0.0])}
    vals = [[1.0, -3.0], [4.0, 0.0], [2.0, 10.0], [-7.0, 1.0], [3.0, 2.0]]
    ups = [ClientUpdate({"w": torch.tensor(v)}, 100 * i + 1, i) for i, v in enumerate(vals)]
    # coordinate 0 sorted: -7 1 2 3 4 ; coordinate 1 sorted: -3 0 1 2 10
    med = make_strategy("median").aggregate(x, ups, 1)["w"]
    torch.testing.assert_close(med, torch.tensor([2.0, 1.0]))
    even = make_strategy("median").aggregate(x, ups[:4], 1)["w"]  # -7 1 2 4 | -3 0 1 10
    torch.testing.assert_close(even, torch.tensor([1.5, 0.5]))
    tm = make_strategy("trimmed_mean", beta=0.2).aggregate(x, ups, 1)["w"]  # cut 1 per side
    torch.testing.assert_close(tm, torch.tensor([2.0, 1.0]))
    tm = make_strategy("trimmed_mean", beta=0.45).aggregate(x, ups, 1)["w"]  # cut 2 per side
    torch.testing.assert_close(tm, torch.tensor([2.0, 1.0]))


def test_clip_norm_by_hand():
    x = {"w": torch.tensor([0.0, 0.0]), "b": torch.tensor([0.0])}
    ups = [
        ClientUpdate({"w": torch.tensor([3.0, 0.0]), "b": torch.tensor([4.0])}, 1, 0),  # norm 5
        ClientUpdate({"w": torch.tensor([0.0, 1.0])}, 1, 1),  # norm 1 (only "w")
    ]
    new = make_strategy("fedavg", clip_norm=2.0).aggregate(x, ups, 1)
    # client 0 scaled by 2/5 over its whole update; "b" only from client 0
    torch.testing.assert_close(new["w"], torch.tensor([0.5 * 1.2, 0.5 * 1.0]))
    torch.testing.assert_close(new["b"], torch.tensor([1.6]))


def _attack_setup():
    gen = torch.Generator().manual_seed(0)
    dim = 50
    x = {"w": torch.randn(dim, generator=gen, dtype=torch.float64)}
    mu = torch.full((dim,), 0.2, dtype=torch.float64)
    clean = [mu + 0.05 * torch.randn(dim, generator=gen, dtype=torch.float64) for _ in range(8)]
    bad = [-50.0 * clean[0], -50.0 * clean[1]]
    ups = [ClientUpdate({"w": x["w"] + d}, 10, i) for i, d in enumerate(clean + bad)]
    clean_avg = torch.stack(clean).mean(0)
    return x, ups, clean_avg


@pytest.mark.parametrize(
    "name,kwargs,bound",
    [
        ("median", {}, 0.15),
        ("trimmed_mean", {"beta": 0.2}, 0.15),
        ("median", {"clip_norm": 2.0}, 0.15),
        ("fedavg", {"clip_norm": 2.0}, 0.5),  # clipping bounds each attacker's weight
    ],
)
def test_robust_aggregation_resists_two_attackers(name, kwargs, bound):
    x, ups, clean_avg = _attack_setup()
    ref = float(clean_avg.norm())  # about 1.4
    plain = make_strategy("fedavg").aggregate(x, ups, 1)["w"] - x["w"]
    assert float((plain - clean_avg).norm()) > 5 * ref
    robust = make_strategy(name, **kwargs).aggregate(x, ups, 1)["w"] - x["w"]
    assert float((robust - clean_avg).norm()) < bound * ref


def test_make_strategy_errors():
    with pytest.raises(ValueError, match="unknown strategy 'fedavgm-fedprox'.*fedavg, fedavgm"):
        make_strategy("fedavgm-fedprox")
    with pytest.raises(ValueError, match="unknown strategy 'FedAvg'"):
        make_strategy("FedAvg")
    with pytest.raises(ValueError, match="unknown parameter 'eta' for strategy 'fedavg'"):
        make_strategy("fedavg", eta=0.1)
    with pytest.raises(ValueError, match="accepted: server_lr, momentum, variant, clip_norm"):
        make_strategy("fedavgm", beta1=0.9)
    with pytest.raises(ValueError, match="needs parameter 'num_clients'"):
        make_strategy("scaffold")
    with pytest.raises(ValueError, match="unknown variant 'openfedllm'"):
        make_strategy("fedadam", variant="openfedllm")
    with pytest.raises(ValueError, match="beta1 is not used"):
        make_strategy("fedadagrad", variant="fedmllm", beta1=0.9)
    with pytest.raises(ValueError, match="beta2 must lie"):
        make_strategy("fedadam", beta2=1.0)
    with pytest.raises(ValueError, match="clip_norm must be"):
        make_strategy("median", clip_norm=0)
    with pytest.raises(ValueError, match="beta must lie"):
        make_strategy("trimmed_mean", beta=0.5)
    with pytest.raises(ValueError, match="beta must lie"):
        make_strategy("trimmed_mean", beta=0.0)
    with pytest.raises(ValueError, match="round must be"):
        make_strategy("fedavg").aggregate({"w": torch.zeros(1)}, [], 0)
    assert strategy_params("fedyogi") == ("eta", "tau", "beta1", "beta2", "variant", "clip_norm")
    assert make_strategy("fedyogi").config()["eta"] == 0.01
    assert make_strategy("fedyogi", variant="fedmllm").config()["eta"] == 1e-3


def test_aggregate_rejects_unfiltered_bad_updates():
    x = {"w": torch.zeros(2)}
    with pytest.raises(ValueError, match="unexpected key 'v'"):
        make_strategy("fedavg").aggregate(x, [ClientUpdate({"v": torch.zeros(2)}, 1)], 1)
    with pytest.raises(ValueError, match="shape"):
        make_strategy("fedavg").aggregate(x, [ClientUpdate({"w": torch.zeros(1, 2)}, 1)], 1)
    with pytest.raises(ValueError, match="control_delta"):
        make_strategy("scaffold", num_clients=2).aggregate(x, [ClientUpdate(dict(x), 1, 0)], 1)


def test_client_side_attributes_of_every_strategy():
    expected = {  # name: (default_objective, allowed_objectives, min_updates)
        "fedavg": ("ce", None, 1),
        "fedavgm": ("ce", None, 1),
        "fedadagrad": ("ce", None, 1),
        "fedadam": ("ce", None, 1),
        "fedyogi": ("ce", None, 1),
        "fedprox": ("prox", ("prox", "adaptive_prox"), 1),
        "scaffold": ("scaffold", ("scaffold",), 1),
        "local": ("ce", None, 1),
        "zeroshot": ("ce", ("ce",), 1),
        "centralized": ("ce", ("ce",), 1),
        "median": ("ce", None, 3),
        "trimmed_mean": ("ce", None, 5),  # default beta 0.2: floor(0.2 n) >= 1 from n = 5
        "krum": ("ce", None, 3),  # 2f + 3 with f = 0
        "multikrum": ("ce", None, 3),
        "bulyan": ("ce", None, 3),  # 4f + 3 with f = 0
    }
    assert set(expected) == set(ALGORITHMS)
    for name, (default, allowed, need) in expected.items():
        s = make_strategy(name, **({"num_clients": 3} if name == "scaffold" else {}))
        got = (s.default_objective, s.allowed_objectives, s.min_updates)
        assert got == (default, allowed, need)
    # floor(beta * n) >= 1 first at n = ceil(1 / beta), also where 1 / beta is not exact
    for beta, need in ((0.1, 10), (0.25, 4), (0.3, 4), (1 / 3, 3), (0.4, 3), (0.49, 3)):
        assert make_strategy("trimmed_mean", beta=beta).min_updates == need


def test_unknown_names_get_a_suggestion():
    with pytest.raises(ValueError) as e:
        make_strategy("fedadm")
    assert str(e.value) == ("unknown strategy 'fedadm'; did you mean 'fedadam'? choices: "
                            + ", ".join(ALGORITHMS))
    with pytest.raises(ValueError, match=r"^unknown strategy 'zzz'; choices: fedavg, "):
        make_strategy("zzz")
    with pytest.raises(ValueError, match="unknown parameter 'server_lrr' for strategy 'fedavgm'; "
                                         "did you mean 'server_lr'"):
        make_strategy("fedavgm", server_lrr=1.0)


def test_centralized_returns_the_pooled_clients_state_and_takes_no_other():
    s = make_strategy("centralized")
    assert s.pooled and not s.aggregates and not s.personalized
    x = {"w": torch.zeros(2)}
    y = {"w": torch.tensor([1.0, -2.0])}
    assert torch.equal(s.aggregate(x, [ClientUpdate(y, 40, 0)], 1)["w"], y["w"])
    with pytest.raises(ValueError, match="pooled client's update only, got 2"):
        s.aggregate(x, [ClientUpdate(y, 1, 0), ClientUpdate(y, 1, 1)], 1)
