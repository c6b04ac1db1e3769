"""The poisoning attacks (``fl.attack``) by hand on small tensors, the malicious set's draw,
and the configuration's refusals."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fedmllm.config import ConfigError, load_config
from fedmllm.engine.factory import build_attack, plan_run
from fedmllm.fl import ClientUpdate
from fedmllm.fl.attacks import (
    gaussian_update,
    make_attack,
    malicious_clients,
    num_malicious,
    scale_update,
    sign_flip,
)

F64 = torch.float64
X = {"w": torch.tensor([1.0, 2.0], dtype=F64), "b": torch.tensor([[0.5]], dtype=F64),
     "n": torch.tensor([3])}
Y = {"w": torch.tensor([1.5, 1.0], dtype=F64), "b": torch.tensor([[0.25]], dtype=F64),
     "n": torch.tensor([7])}  # d = y - x = [0.5, -1], [[-0.25]]


def test_sign_flip_reverses_and_scales_the_update():
    out = sign_flip(X, Y, 4.0)  # x - 4 d
    assert torch.equal(out["w"], torch.tensor([-1.0, 6.0], dtype=F64))
    assert torch.equal(out["b"], torch.tensor([[1.5]], dtype=F64))
    assert torch.equal(out["n"], Y["n"])  # a counter is sent as trained, never scaled
    assert torch.equal(Y["w"], torch.tensor([1.5, 1.0], dtype=F64))  # inputs untouched


def test_scaled_update_boosts_the_update():
    out = scale_update(X, Y, 10.0)  # x + 10 d
    assert torch.equal(out["w"], torch.tensor([6.0, -8.0], dtype=F64))
    assert torch.equal(out["b"], torch.tensor([[-2.0]], dtype=F64))
    assert torch.equal(scale_update(X, Y, 1.0)["w"], Y["w"])  # k = 1: the honest update


def test_gaussian_attack_replaces_the_update_with_noise():
    g = torch.Generator().manual_seed(5)
    out = gaussian_update(X, Y, 3.0, g)
    g = torch.Generator().manual_seed(5)  # key by key, in the update's order, in float32
    ew, eb = torch.randn(2, generator=g), torch.randn(1, 1, generator=g)
    assert torch.equal(out["w"], X["w"] + 3.0 * ew.double())
    assert torch.equal(out["b"], X["b"] + 3.0 * eb.double())
    assert torch.equal(out["n"], Y["n"])
    big = gaussian_update({"w": torch.zeros(20000)}, {"w": torch.ones(20000)}, 200.0,
                          torch.Generator().manual_seed(0))["w"]
    assert abs(big.mean().item()) < 5.0 and abs(big.std().item() - 200.0) < 5.0


def test_apply_attacks_only_the_malicious_clients():
    attack = make_attack("sign_flip", 4, np.random.default_rng(0), clients=[2], flip_factor=4.0)
    honest = ClientUpdate(dict(Y), 10, client_id=1, metrics={"train_loss": 0.5})
    assert attack.apply(honest, X, round_=1) is honest
    bad = attack.apply(ClientUpdate(dict(Y), 10, client_id=2, metrics={"train_loss": 0.5}), X, 1)
    assert torch.equal(bad.state["w"], torch.tensor([-1.0, 6.0], dtype=F64))
    assert (bad.num_examples, bad.client_id, bad.metrics) == (10, 2, {"train_loss": 0.5})
    flip = make_attack("label_flip", 4, np.random.default_rng(0), clients=[2])
    same = ClientUpdate(dict(Y), 10, client_id=2)
    assert flip.apply(same, X, 1) is same and flip.flips_labels(2) and not flip.flips_labels(1)
    assert flip.record() == {"kind": "label_flip", "malicious": [2]}


def test_fraction_is_rounded_half_up():
    assert [num_malicious(f, 10) for f in (0.0, 0.04, 0.05, 0.1, 0.25, 0.3, 0.35)] == \
        [0, 0, 1, 1, 3, 3, 4]


def _cfg(*extra):
    return load_config(None, ["fl.num_clients=10", *extra])


def test_the_malicious_set_is_drawn_from_the_seed_alone():
    a = build_attack(_cfg("fl.attack.kind=sign_flip", "fl.attack.fraction=0.3"))
    again = build_attack(_cfg("fl.attack.kind=noise", "fl.attack.fraction=0.3",
                              "fl.algorithm=median", "fl.rounds=3"))
    other = build_attack(_cfg("fl.attack.kind=sign_flip", "fl.attack.fraction=0.3", "seed=1"))
    assert len(a.malicious) == 3 and a.malicious == tuple(sorted(a.malicious))
    assert again.malicious == a.malicious  # the kind, the rule, the rounds do not matter
    assert other.malicious != a.malicious
    assert build_attack(_cfg("fl.attack.kind=scale", "fl.attack.clients=[7, 2]")).malicious \
        == (2, 7)


def test_the_noise_depends_on_round_and_client_only():
    attack = build_attack(_cfg("fl.attack.kind=noise", "fl.attack.clients=[1, 2]"))
    up = {c: ClientUpdate({"w": torch.zeros(4)}, 5, client_id=c) for c in (1, 2)}
    start = {"w": torch.zeros(4)}
    r1c2 = attack.apply(up[2], start, 1).state["w"]
    attack.apply(up[1], start, 1)  # another client first changes nothing
    assert torch.equal(attack.apply(up[2], start, 1).state["w"], r1c2)
    assert not torch.equal(attack.apply(up[2], start, 2).state["w"], r1c2)
    assert not torch.equal(attack.apply(up[1], start, 1).state["w"], r1c2)


@pytest.mark.parametrize(("fraction", "clients", "match"), [
    (None, None, "one of them"), (0.1, [1], "one of them"),
    (None, [1, 1], "names a client twice"), (None, [10], "not one of the 10 clients"),
    (None, list(range(10)), "leaves no honest client"), (0.96, None, "leaves no honest"),
])
def test_malicious_set_refusals(fraction, clients, match):
    with pytest.raises(ValueError, match=match):
        malicious_clients(10, np.random.default_rng(0), fraction=fraction, clients=clients)


@pytest.mark.parametrize(("extra", "match"), [
    (["fl.attack.fraction=0.1"], r"^fl.attack.fraction: set, but fl.attack.kind = none"),
    (["fl.attack.flip_factor=2.0"], r"^fl.attack.flip_factor: set, but fl.attack.kind = none"),
    (["fl.attack.kind=scale", "fl.attack.fraction=0.1", "fl.attack.flip_factor=2.0"],
     (r"^fl.attack.flip_factor: not a parameter of fl.attack.kind = scale \(its own: "
      r"scale_factor\)$")),
    (["fl.attack.kind=sign_flip"], r"^fl.attack: give the malicious clients"),
    (["fl.attack.kind=sign_flip", "fl.attack.fraction=0.95"], "leaves no honest client"),
    (["fl.attack.kind=sign_flip", "fl.attack.clients=[12]"], "not one of the 10 clients"),
    (["fl.attack.kind=sign_flip", "fl.attack.fraction=0.1", "fl.algorithm=local"],
     r"^fl.attack.kind: fl.algorithm=local aggregates no client updates"),
    (["fl.attack.kind=sign_flip", "fl.attack.fraction=0.1", "fl.algorithm=yoco"],
     r"^fl.attack.kind: attacks are for multi-round runs"),
])
def test_plan_refuses_in_one_line(extra, match):
    with pytest.raises(ConfigError, match=match):
        plan_run(_cfg(*extra))


def test_plan_names_the_malicious_clients():
    cfg = _cfg("fl.attack.kind=label_flip", "fl.attack.clients=[3]")
    assert "fl.attack: label_flip by clients [3]" in plan_run(cfg).notes
    default = dataclasses.asdict(_cfg().fl.attack)
    assert default["kind"] == "none" and build_attack(_cfg()).malicious == ()
