"""Client objectives: prox / adaptive prox penalties, layer parsing, SCAFFOLD."""

from __future__ import annotations

import math

import pytest
import torch

from fedmllm.fl import (
    OBJECTIVES,
    ClientUpdate,
    ObjectiveResult,
    lm_layer_index,
    make_objective,
    make_strategy,
    objective_params,
    sample_clients,
)

# ----------------------------------------------------------------------------- layer parsing

PEFT_LM = "base_model.model.model.language_model.layers.{}.self_attn.{}_proj.lora_{}.weight"
VISION_LORA = (
    "base_model.model.model.vision_tower.vision_model.encoder.layers.{}.self_attn.q_proj"
    ".lora_A.weight"
)


@pytest.mark.parametrize(
    "name,layer",
    [
        ("base_model.model.model.language_model.layers.3.self_attn.q_proj.lora_A.weight", 3),
        ("base_model.model.language_model.model.layers.17.self_attn.k_proj.lora_B.weight", 17),
        ("base_model.model.llm.model.layers.12.self_attn.v_proj.lora_B.weight", 12),  # MiniCPM-V
        ("base_model.model.model.text_model.layers.0.self_attn.o_proj.lora_A.weight", 0),
        ("base_model.model.model.layers.27.self_attn.q_proj.lora_A.weight", 27),
        ("model.language_model.layers.5.mlp.down_proj.weight", 5),
        # vision towers and non-layer tensors are never language-model layers
        (VISION_LORA.format(1), None),
        ("base_model.model.model.vision_model.encoder.layers.2.self_attn.q_proj.lora_A.weight",
         None),
        ("base_model.model.vpm.encoder.layers.4.self_attn.q_proj.lora_A.weight", None),
        ("base_model.model.model.visual.blocks.3.attn.qkv.lora_A.weight", None),
        ("base_model.model.model.vision_model.layers.2.attn.weight", None),
        ("base_model.model.resampler.attn.in_proj_weight", None),
        ("base_model.model.model.language_model.embed_tokens.weight", None),
        ("base_model.model.lm_head.weight", None),
        ("base_model.model.model.multi_modal_projector.linear_1.weight", None),
    ],
)
def test_lm_layer_index(name, layer):
    assert lm_layer_index(name) == layer


# ----------------------------------------------------------------------------- prox


def _leaf(values):
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


def test_prox_penalty_and_gradient_by_hand():
    obj = make_objective("prox", prox_mu=0.1)
    g = {"a": torch.tensor([1.0, 2.0], dtype=torch.float64),
         "b": torch.tensor([0.0], dtype=torch.float64)}
    obj.begin(g, {}, {})
    params = {"a": _leaf([2.0, 0.0]), "b": _leaf([3.0])}
    pen = obj.penalty(params)
    # (0.1/2) * ((2-1)^2 + (0-2)^2 + 3^2) = 0.05 * 14
    assert float(pen.detach()) == pytest.approx(0.7)
    pen.backward()
    torch.testing.assert_close(params["a"].grad, torch.tensor([0.1, -0.2], dtype=torch.float64))
    torch.testing.assert_close(params["b"].grad, torch.tensor([0.3], dtype=torch.float64))
    assert obj.end(params, 0.5) == ObjectiveResult()


def test_prox_reference_does_not_follow_the_live_weights():
    live = {"a": _leaf([1.0, 1.0])}
    obj = make_objective("prox", prox_mu=1.0)
    obj.begin({"a": live["a"].detach()}, {}, {})  # a view of the weights being trained
    with torch.no_grad():
        live["a"].add_(1.0)
    assert float(obj.penalty(live).detach()) == pytest.approx(0.5 * 2)


def test_prox_zero_mu_and_bf16():
    obj = make_objective("prox", prox_mu=0.0)
    obj.begin({"a": torch.zeros(2)}, {}, {})
    assert obj.penalty({"a": torch.ones(2, requires_grad=True)}) is None
    obj = make_objective("prox", prox_mu=2.0)
    obj.begin({"a": torch.zeros(3, dtype=torch.bfloat16)}, {}, {})
    pen = obj.penalty({"a": torch.ones(3, dtype=torch.bfloat16, requires_grad=True)})
    assert pen.dtype == torch.float32 and float(pen.detach()) == pytest.approx(3.0)


def _adapter(num_layers, style):
    names = []
    for layer in range(num_layers):
        for proj in ("q", "v"):
            for ab in ("A", "B"):
                if style == "peft":
                    names.append(PEFT_LM.format(layer, proj, ab))
                else:  # MiniCPM-V / research style
                    names.append(
                        f"base_model.model.llm.model.layers.{layer}.self_attn.{proj}_proj"
                        f".lora_{ab}.weight"
                    )
    names += [
        VISION_LORA.format(2),
        "base_model.model.model.language_model.embed_tokens.weight",
    ]
    return names


@pytest.mark.parametrize("style", ["peft", "minicpm"])
def test_adaptive_prox_selects_middle_layers(style):
    num_layers, s_layer = 6, 1  # regularise layers 1..4
    names = _adapter(num_layers, style)
    g = {n: torch.zeros(2, dtype=torch.float64) for n in names}
    obj = make_objective("adaptive_prox", prox_mu=0.2, mu_w=0.5, s_layer=s_layer,
                         num_layers=num_layers)
    obj.begin(g, {}, {})
    selected = set(obj.selected_keys)
    assert selected == {n for n in names if lm_layer_index(n) in (1, 2, 3, 4)}
    assert len(selected) == 4 * 4
    params = {n: _leaf([1.0, 1.0]) for n in names}
    pen = obj.penalty(params)
    # (0.2 * 0.5 / 2) * 16 tensors * ||(1,1)||^2
    assert float(pen.detach()) == pytest.approx(0.05 * 16 * 2)
    pen.backward()
    for n, p in params.items():
        if n in selected:
            torch.testing.assert_close(p.grad, torch.full((2,), 0.1, dtype=torch.float64))
        else:
            assert p.grad is None  # first/last layers, the vision tower and embeddings are free


def test_adaptive_prox_research_defaults_and_errors():
    obj = make_objective("adaptive_prox", num_layers=28)
    assert obj.config() == {"prox_mu": 0.01, "mu_w": 0.1, "s_layer": 4, "num_layers": 28}
    obj.begin({PEFT_LM.format(i, "q", "A"): torch.zeros(1) for i in range(28)}, {}, {})
    assert sorted(lm_layer_index(k) for k in obj.selected_keys) == list(range(4, 24))
    with pytest.raises(ValueError, match="needs parameter 'num_layers'"):
        make_objective("adaptive_prox")
    with pytest.raises(ValueError, match="no layer"):
        make_objective("adaptive_prox", num_layers=8, s_layer=4)
    with pytest.raises(ValueError, match="layer 30 but num_layers=28"):
        make_objective("adaptive_prox", num_layers=28).begin(
            {PEFT_LM.format(30, "q", "A"): torch.zeros(1)}, {}, {}
        )


def test_make_objective_errors():
    assert OBJECTIVES == ("ce", "prox", "adaptive_prox", "scaffold", "yoco")
    assert objective_params("prox") == ("prox_mu",)
    with pytest.raises(ValueError, match="unknown client objective 'fedprox'.*ce, prox"):
        make_objective("fedprox")
    with pytest.raises(ValueError, match="unknown parameter 'mu_w' for client objective 'prox'"):
        make_objective("prox", mu_w=0.1)
    ce = make_objective("ce")
    ce.begin({"a": torch.zeros(1)}, {}, {})
    assert ce.penalty({"a": torch.zeros(1)}) is None and ce.end({}, 0.1) == ObjectiveResult()


# ----------------------------------------------------------------------------- SCAFFOLD


def test_scaffold_correction_and_option_two_by_hand():
    obj = make_objective("scaffold")
    ci = {"w": torch.tensor([0.2, 0.3], dtype=torch.float64)}
    snapshot = ci["w"].clone()
    x = {"w": torch.tensor([1.0, 2.0], dtype=torch.float64)}
    c = {"w": torch.tensor([0.5, -1.0], dtype=torch.float64)}
    obj.begin(x, {"control": c}, ci)
    y = _leaf([1.0, 2.0])
    y.grad = torch.tensor([1.0, 1.0], dtype=torch.float64)
    obj.correct_gradients({"w": y})
    # grad + c - c_i = (1 + 0.5 - 0.2, 1 - 1 - 0.3)
    torch.testing.assert_close(y.grad, torch.tensor([1.3, -0.3], dtype=torch.float64))
    with torch.no_grad():
        y.copy_(torch.tensor([0.6, 2.4], dtype=torch.float64))
    result = obj.end({"w": y}, lr_sum=0.4)  # e.g. K = 4 steps of 0.1
    # c_i+ = c_i - c + (x - y)/lr_sum = (0.2, 0.3) - (0.5, -1) + (0.4, -0.4)/0.4 = (0.7, 0.3)
    torch.testing.assert_close(result.client_state["w"],
                               torch.tensor([0.7, 0.3], dtype=torch.float64))
    torch.testing.assert_close(result.extras["control_delta"]["w"],
                               torch.tensor([0.5, 0.0], dtype=torch.float64))
    assert set(result.extras) == {"control_delta"} and set(result.client_state) == {"w"}
    assert torch.equal(ci["w"], snapshot)  # the stored c_i is the driver's: never changed here
    # a new client starts from c_i = 0 (empty client state): its correction is c itself
    obj.begin(x, {"control": c}, {})
    y.grad = torch.zeros(2, dtype=torch.float64)
    obj.correct_gradients({"w": y})
    torch.testing.assert_close(y.grad, c["w"])
    # keys the client did not train keep their c_i in the returned client state
    x2 = {"w": x["w"], "u": torch.zeros(1, dtype=torch.float64)}
    obj.begin(x2, {}, {"u": torch.tensor([7.0], dtype=torch.float64)})
    result = obj.end({"w": x["w"].clone()}, 1.0)
    torch.testing.assert_close(result.client_state["u"], torch.tensor([7.0], dtype=torch.float64))
    torch.testing.assert_close(result.client_state["w"], torch.zeros(2, dtype=torch.float64))
    assert set(result.extras["control_delta"]) == {"w"}


def test_scaffold_server_by_hand():
    strategy = make_strategy("scaffold", num_clients=4, server_lr=0.5)
    x = {"w": torch.tensor([1.0, 1.0], dtype=torch.float64)}
    c0 = strategy.server_extras(x)["control"]["w"]
    assert torch.equal(c0, torch.zeros(2, dtype=torch.float64))
    ups = [
        ClientUpdate({"w": torch.tensor([2.0, 0.0], dtype=torch.float64)}, 100, 0,
                     extras={"control_delta": {"w": torch.tensor([0.4, 0.0])}}),
        ClientUpdate({"w": torch.tensor([1.0, 3.0], dtype=torch.float64)}, 1, 2,
                     extras={"control_delta": {"w": torch.tensor([0.4, -0.8])}}),
    ]
    new = strategy.aggregate(x, ups, 1)
    # unweighted mean delta = ((1,-1) + (0,2))/2 = (0.5, 0.5); x + 0.5 * that
    torch.testing.assert_close(new["w"], torch.tensor([1.25, 1.25], dtype=torch.float64))
    # c += (|S|/N) mean(dc) = (1/4) * (0.8, -0.8)
    c = strategy.server_extras()["control"]["w"]
    torch.testing.assert_close(c, torch.tensor([0.2, -0.2], dtype=torch.float64))


def _quadratic_problem():
    """f_i(t) = 1/2 sum_j a_ij (t_j - o_ij)^2: different curvatures make FedAvg drift."""
    a = torch.tensor([[1.0, 4.0], [8.0, 1.0], [2.0, 0.5], [0.5, 6.0]], dtype=torch.float64)
    o = torch.tensor([[3.0, -1.0], [-2.0, 2.0], [1.0, 4.0], [5.0, -3.0]], dtype=torch.float64)
    optimum = (a * o).sum(0) / a.sum(0)  # minimiser of sum_i f_i
    return a, o, optimum


def _federate(strategy_name, objective_name, rounds, per_round, steps=10, lr=0.05):
    a, o, _ = _quadratic_problem()
    n = a.shape[0]
    kwargs = {"num_clients": n} if strategy_name == "scaffold" else {}
    strategy = make_strategy(strategy_name, **kwargs)
    objective = make_objective(objective_name)
    x = {"t": torch.zeros(2, dtype=torch.float64)}
    client_states: dict[int, dict] = {}  # what a driver stores per client (SCAFFOLD's c_i)
    for rnd in range(1, rounds + 1):
        extras = strategy.server_extras(x)
        updates = []
        for i in sample_clients(n, per_round, rnd, seed=0):
            objective.begin(x, extras, client_states.get(i, {}))
            t = x["t"].clone().requires_grad_(True)
            opt = torch.optim.SGD([t], lr=lr)
            for _ in range(steps):
                opt.zero_grad()
                loss = 0.5 * (a[i] * (t - o[i]) ** 2).sum()
                pen = objective.penalty({"t": t})
                (loss if pen is None else loss + pen).backward()
                objective.correct_gradients({"t": t})
                opt.step()
            out = objective.end({"t": t}, steps * lr)
            client_states[i] = out.client_state
            updates.append(ClientUpdate({"t": t.detach()}, 1, i, extras=out.extras))
        x = strategy.aggregate(x, updates, rnd)
    return x["t"]


def test_scaffold_removes_the_client_drift_fedavg_settles_into():
    a, o, optimum = _quadratic_problem()
    # FedAvg with K = 10 local GD steps of lr 0.05: client i maps x to o_i + q_i (x - o_i) with
    # q_i = (1 - lr a_i)^K per coordinate, so its fixed point is the biased
    # x = mean_i(o_i (1 - q_i)) / mean_i(1 - q_i), not the optimum sum a o / sum a
    q = (1 - 0.05 * a) ** 10
    drift_point = (o * (1 - q)).mean(0) / (1 - q).mean(0)
    assert float((drift_point - optimum).norm()) == pytest.approx(1.3751658366, rel=1e-9)
    torch.testing.assert_close(_federate("fedavg", "ce", rounds=80, per_round=4),
                               drift_point, rtol=0, atol=1e-12)
    torch.testing.assert_close(_federate("scaffold", "scaffold", rounds=80, per_round=4),
                               optimum, rtol=0, atol=1e-12)
    # partial participation (2 of 4 clients per round, c updated with |S|/N): still the optimum
    torch.testing.assert_close(_federate("scaffold", "scaffold", rounds=150, per_round=2),
                               optimum, rtol=0, atol=1e-12)


def test_prox_objective_with_any_strategy():
    # the FedProx client term beside a FedAdam server: its gradient is mu (t - x) whatever the
    # server does; every client returns x + 1, so D_u = 1 in each round
    obj = make_objective("prox", prox_mu=0.5)
    strategy = make_strategy("fedadam", variant="fedmllm", eta=0.05)
    x = {"t": torch.zeros(2, dtype=torch.float64)}
    ref, m, v = 0.0, None, 1e-6  # by hand: fedmllm FedAdam, v starts at tau^2
    for rnd in (1, 2, 3):
        ups = []
        for i in range(3):
            obj.begin(x, strategy.server_extras(x), {})
            t = (x["t"] + 1.0).requires_grad_(True)
            obj.penalty({"t": t}).backward()
            torch.testing.assert_close(t.grad, torch.full((2,), 0.5, dtype=torch.float64))
            obj.correct_gradients({"t": t})
            assert obj.end({"t": t}, 0.1) == ObjectiveResult()
            ups.append(ClientUpdate({"t": t.detach()}, 1, i))
        x = strategy.aggregate(x, ups, rnd)
        m = 1.0 if m is None else 0.9 * m + 0.1 * 1.0
        v = 0.99 * v + 0.01 * m * m
        ref += 0.05 * m / (math.sqrt(v) + 1e-3)
        torch.testing.assert_close(x["t"], torch.full((2,), ref, dtype=torch.float64),
                                   rtol=1e-14, atol=0)


def test_scaffold_objective_errors():
    obj = make_objective("scaffold")
    with pytest.raises(ValueError, match="client state 'v' does not match"):
        obj.begin({"w": torch.zeros(1)}, {}, {"v": torch.zeros(1)})
    with pytest.raises(ValueError, match="client state 'w' does not match"):
        obj.begin({"w": torch.zeros(1)}, {}, {"w": torch.zeros(2)})
    with pytest.raises(RuntimeError, match="before begin"):
        obj.end({"w": torch.zeros(1)}, 0.1)
    obj.begin({"w": torch.zeros(1)}, {}, {})
    with pytest.raises(ValueError, match="lr_sum > 0"):
        obj.end({"w": torch.zeros(1)}, 0.0)


def test_prox_rejects_parameters_missing_from_the_global_state():
    obj = make_objective("prox", prox_mu=0.1)
    obj.begin({"a": torch.zeros(2)}, {}, {})
    with pytest.raises(ValueError, match="'a.default' is not in the global state"):
        obj.penalty({"a.default": torch.zeros(2, requires_grad=True)})


def test_unknown_objective_gets_a_suggestion():
    with pytest.raises(ValueError) as e:
        make_objective("scafold")
    assert str(e.value) == ("unknown client objective 'scafold'; did you mean 'scaffold'? "
                            "choices: ce, prox, adaptive_prox, scaffold, yoco")


def test_a_registered_objective_is_made_by_name(monkeypatch):
    from fedmllm.fl import objectives
    from fedmllm.fl.types import ClientObjective

    monkeypatch.setattr(objectives, "_REGISTRY", dict(objectives._REGISTRY))

    class Scaled(ClientObjective):
        """A toy: the task loss times ``factor``."""

        name = "scaled"

        def __init__(self, *, factor: float = 2.0):
            self.factor = factor

    assert objectives.register_objective(Scaled) is Scaled
    assert objectives.objective_names()[-1] == "scaled"
    assert objective_params("scaled") == ("factor",)
    assert make_objective("scaled", factor=3.0).factor == 3.0
    with pytest.raises(ValueError, match="client objective 'scaled' is already registered"):
        objectives.register_objective(Scaled)
    monkeypatch.undo()
    assert "scaled" not in objectives.objective_names() and OBJECTIVES[-1] == "yoco"
