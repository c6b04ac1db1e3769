"""The DP wrappers and the clients' clip and noise on hand-computed numbers: the fixed
denominator, the clip, the noise's empirical std, adaptive clipping's C step and its state."""

import math

import pytest
import torch

from fedmllm.engine.server import ServerRound
from fedmllm.fl import ClientUpdate, make_strategy
from fedmllm.fl.privacy import (
    CentralAdaptive,
    CentralClient,
    add_gaussian_noise,
    clip_update,
    local_privatize,
    make_private,
    split_noise,
)
from fedmllm.fl.privacy.base import fixed_mean_delta


def gen(r: int) -> torch.Generator:
    return torch.Generator().manual_seed(1000 + r)


def wrap(mechanism: str, rule: str = "fedavg", **kw) -> object:
    kw.setdefault("noise_multiplier", 0.0)
    kw.setdefault("clipping_norm", 1.0)
    kw.setdefault("num_sampled", 3)
    return make_private(make_strategy(rule), mechanism, noise=gen, **kw)


X = {"a": torch.zeros(2, dtype=torch.float64), "b": torch.ones(1, dtype=torch.float64)}


def upd(a, b=None, cid=0, n=5) -> ClientUpdate:
    state = {"a": torch.tensor(a, dtype=torch.float64)}
    if b is not None:
        state["b"] = torch.tensor([b], dtype=torch.float64)
    return ClientUpdate(state, n, cid)


def test_fixed_denominator_mean_counts_missing_clients_and_keys_as_zero():
    # m = 3 sampled, two replied; client 1 did not return "b" (delta 0 there)
    updates = [upd([3.0, 4.0], 3.0, 0), upd([1.0, 1.0], None, 1)]
    d = fixed_mean_delta(X, updates, [0.5, 1.0], 3)
    assert torch.allclose(d["a"], torch.tensor([(1.5 + 1) / 3, (2 + 1) / 3], dtype=torch.float64))
    assert torch.allclose(d["b"], torch.tensor([0.5 * 2 / 3], dtype=torch.float64))
    with pytest.raises(ValueError, match="only 1 clients are sampled"):
        fixed_mean_delta(X, updates, [1.0, 1.0], 1)


def test_central_server_clips_to_c_and_divides_by_the_sampled_count():
    s = wrap("central_server", clipping_norm=2.5)
    # ||d|| = 5 -> scaled by 1/2; the second (norm 1) is not clipped; m = 3, one dropped
    new = s.aggregate(X, [upd([3.0, 4.0], 1.0, 0, n=1), upd([0.6, 0.8], 1.0, 1, n=100)], 1)
    assert torch.allclose(new["a"], torch.tensor([(1.5 + 0.6) / 3, (2.0 + 0.8) / 3],
                                                 dtype=torch.float64))
    assert torch.equal(new["b"], X["b"])  # equal weights: the example counts play no part


def test_clip_update_is_flat_clipping_and_keeps_an_update_within_c_bitwise():
    state = {"a": torch.tensor([3.0, 4.0], dtype=torch.float64), "b": torch.ones(1).double()}
    clipped, was = clip_update(state, X, 1.0)
    assert was and torch.allclose(clipped["a"], torch.tensor([0.6, 0.8], dtype=torch.float64))
    same, was = clip_update(state, X, 5.0)
    assert not was and same is state


def test_central_client_is_bounded_by_validation_not_clipped_again():
    s = wrap("central_client", clipping_norm=1.0, num_sampled=2)
    assert isinstance(s, CentralClient) and s.accept_norm == pytest.approx(1.0 + 1e-6)
    server = ServerRound(s, max_update_norm="auto")
    ok = upd([0.6, 0.8 * (1 + 5e-7)], 1.0, 0)
    bad = upd([0.6, 0.8 * 1.01], 1.0, 1)
    out = server.run(X, [ok, bad], 1)
    assert out.accepted == [0] and out.rejected[0][0] == 1
    assert "exceeds max_norm 1" in out.rejected[0][1]
    assert torch.allclose(out.global_state["a"], ok.state["a"] / 2)  # not clipped, m = 2


@pytest.mark.parametrize("rule", ["median", "krum", "scaffold", "local"])
def test_central_dp_refuses_a_rule_that_is_not_a_mean(rule):
    params = {"num_clients": 3} if rule == "scaffold" else {}
    with pytest.raises(ValueError, match="mean-based rule"):
        make_private(make_strategy(rule, **params), "central_server", noise_multiplier=1.0,
                     clipping_norm=1.0, num_sampled=3, noise=gen)


# The noise: N draws of a std-s normal have a sample std whose relative error is about
# 1/sqrt(2N) (0.0011 for N = 400k); 6 of those (0.7%) fail by chance with odds < 1e-8.
N = 400_000
STD_TOL = 6 / math.sqrt(2 * N)


def _zero_state():
    return {"w": torch.zeros(N // 2), "v": torch.zeros(N // 2)}


def test_central_noise_has_std_sigma_c_over_m():
    sigma, clip, m = 1.3, 0.7, 4
    s = wrap("central_server", noise_multiplier=sigma, clipping_norm=clip, num_sampled=m)
    x = _zero_state()
    new = s.aggregate(x, [ClientUpdate(dict(x), 1, 0)], 1)  # D = 0: what moved is the noise
    flat = torch.cat([new["w"], new["v"]]).double()
    want = sigma * clip / m
    assert abs(float(flat.std()) / want - 1) < STD_TOL
    assert abs(float(flat.mean())) < 6 * want / math.sqrt(N)
    again = wrap("central_server", noise_multiplier=sigma, clipping_norm=clip, num_sampled=m)
    assert torch.equal(again.aggregate(x, [ClientUpdate(dict(x), 1, 0)], 1)["w"], new["w"])
    other = again.aggregate(x, [ClientUpdate(dict(x), 1, 0)], 2)["w"]
    assert not torch.equal(other, new["w"])  # another round, another draw


def test_local_noise_has_std_sigma_c_and_the_clip_comes_first():
    sigma, clip = 0.8, 0.5
    x = _zero_state()
    y = {"w": torch.full((N // 2,), 3.0), "v": torch.zeros(N // 2)}
    out = local_privatize(y, x, clipping_norm=clip, noise_multiplier=sigma, generator=gen(1))
    clipped = clip / math.sqrt(N // 2)  # the clip spreads C over w's coordinates
    noise = torch.cat([out["w"] - clipped, out["v"]]).double()
    assert abs(float(noise.std()) / (sigma * clip) - 1) < STD_TOL
    assert torch.equal(y["w"], torch.full((N // 2,), 3.0))  # the input is not changed
    same = local_privatize(y, x, clipping_norm=clip, noise_multiplier=sigma, generator=gen(1))
    assert torch.equal(same["w"], out["w"])
    plain = local_privatize(y, x, clipping_norm=clip, noise_multiplier=0.0, generator=gen(1))
    assert float(plain["w"].double().norm()) == pytest.approx(clip, rel=1e-5)  # float32


def test_noise_keeps_dtypes_and_draws_the_same_on_any_layout():
    a = {"x": torch.zeros(5), "y": torch.zeros(3, dtype=torch.float64)}
    b = {"y": torch.zeros(3, dtype=torch.float64), "x": torch.zeros(5)}
    add_gaussian_noise(a, 1.0, gen(0))
    add_gaussian_noise(b, 1.0, gen(0))  # another key order (a state read from a checkpoint)
    assert a["x"].dtype == torch.float32 and a["y"].dtype == torch.float64
    assert torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"])


def test_adaptive_clipping_steps_c_geometrically_on_the_unclipped_fraction():
    s = wrap("central_adaptive", clipping_norm=2.0, num_sampled=4, target_quantile=0.5,
             clip_lr=0.2)
    assert isinstance(s, CentralAdaptive)
    # norms 5, 1, 1 (<= C: unclipped 2 of m = 4); C <- C exp(-0.2 (2/4 - 0.5)) = C
    ups = [upd([3.0, 4.0], 1.0, 0), upd([0.6, 0.8], 1.0, 1), upd([0.0, 1.0], 1.0, 2)]
    s.aggregate(X, ups, 1)
    assert s.clip_norm == pytest.approx(2.0)
    s.aggregate(X, ups[:1], 2)  # 0 of 4 unclipped: C grows by exp(0.1)
    assert s.clip_norm == pytest.approx(2.0 * math.exp(0.1))


def test_adaptive_clipping_resumes_from_its_state_dict_bitwise():
    def make():
        return wrap("central_adaptive", "fedadam", noise_multiplier=0.3, clipping_norm=0.5,
                    num_sampled=3, clipped_count_stddev=0.5)

    ups = [upd([3.0, 4.0], 1.5, 0), upd([0.1, 0.2], 0.5, 1)]
    whole = make()
    x1 = whole.aggregate(X, ups, 1)
    saved = whole.state_dict()
    x2 = whole.aggregate(x1, ups, 2)
    resumed = make()
    resumed.load_state_dict(saved)
    assert resumed.clip_norm == saved["dp/clip_norm"].item() != 0.5
    y2 = resumed.aggregate(x1, ups, 2)
    assert all(torch.equal(x2[k], y2[k]) for k in x2)
    assert resumed.clip_norm == whole.clip_norm


def test_adaptive_noise_split_is_andrews_and_flowers():
    std_b, sigma_d = split_noise(1.0, 40, None)
    assert std_b == 2.0 and sigma_d == pytest.approx((1 - 1 / 16) ** -0.5)
    assert split_noise(0.0, 40, None) == (0.0, 0.0)
    with pytest.raises(ValueError, match="clipped_count_stddev"):
        split_noise(0.5, 4, None)  # sigma >= 2 m / 20
