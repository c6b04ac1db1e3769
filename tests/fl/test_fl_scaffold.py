"""SCAFFOLD end to end on heterogeneous quadratics: plain SGD clients, full participation, the
objective and the strategy from the registries, client states kept as a driver keeps them.

Client i minimises f_i(w, u) = 1/2 ||J_i z - b_i||^2 over z = (w, u) (w: 2 values, u: 1). Clients
2 and 3 do not reach u at all (their loss does not depend on it, so u.grad stays None), as a
LoRA tensor outside a client's computation. SCAFFOLD minimises the unweighted mean
F = (1/4) sum_i f_i, whose minimiser solves (sum_i J_i^T J_i) z = sum_i J_i^T b_i (computed in
closed form in float64 below).
"""

from __future__ import annotations

import torch

from fedmllm.fl import local_lr, make_objective, make_strategy

F64 = torch.float64
# rows of J_i over (w0, w1, u); clients 2 and 3 have a zero u column: u is not in their loss
J = [
    torch.tensor([[2.0, 0.5, 1.0], [0.0, 1.0, -1.5]], dtype=F64),
    torch.tensor([[1.0, -1.0, 0.5], [0.5, 0.0, 2.0]], dtype=F64),
    torch.tensor([[3.0, 0.0, 0.0], [1.0, 0.5, 0.0]], dtype=F64),
    torch.tensor([[0.2, 1.5, 0.0], [0.0, 0.3, 0.0]], dtype=F64),
]
B = [
    torch.tensor([1.0, -2.0], dtype=F64),
    torch.tensor([3.0, 0.5], dtype=F64),
    torch.tensor([-4.0, 1.0], dtype=F64),
    torch.tensor([0.5, 2.0], dtype=F64),
]
USES_U = [True, True, False, False]


def optimum() -> torch.Tensor:
    lhs = sum(j.T @ j for j in J)
    rhs = sum(j.T @ b for j, b in zip(J, B, strict=True))
    return torch.linalg.solve(lhs, rhs)


def loss(i: int, w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    if USES_U[i]:
        z = torch.cat([w, u])
        return 0.5 * (J[i] @ z - B[i]).square().sum()
    return 0.5 * (J[i][:, :2] @ w - B[i]).square().sum()  # u takes no part: no gradient


def run_scaffold(rounds: int, steps: int, base_lr: float, schedule: str = "constant",
                 warmup_ratio: float = 0.0) -> torch.Tensor:
    n = len(J)
    strategy = make_strategy("scaffold", num_clients=n)
    objective = make_objective("scaffold")
    x = {"w": torch.zeros(2, dtype=F64), "u": torch.zeros(1, dtype=F64)}
    client_states: dict[int, dict] = {}
    lrs = [local_lr(k, steps, base_lr, schedule, warmup_ratio) for k in range(steps)]
    from fedmllm.fl import ClientUpdate

    for rnd in range(1, rounds + 1):
        extras = strategy.server_extras(x)
        updates = []
        for i in range(n):
            objective.begin(x, extras, client_states.get(i, {}))
            params = {k: t.clone().requires_grad_(True) for k, t in x.items()}
            opt = torch.optim.SGD(list(params.values()), lr=base_lr)
            for lr in lrs:
                for group in opt.param_groups:
                    group["lr"] = lr
                opt.zero_grad(set_to_none=True)
                loss(i, params["w"], params["u"]).backward()
                objective.correct_gradients(params)
                opt.step()
            result = objective.end(params, sum(lrs))
            client_states[i] = result.client_state  # every update is accepted here
            updates.append(ClientUpdate({k: p.detach() for k, p in params.items()}, 1, i,
                                        extras=result.extras))
        x = strategy.aggregate(x, updates, rnd)
    return torch.cat([x["w"], x["u"]])


def test_scaffold_reaches_the_optimum_when_a_tensor_gets_no_gradient_on_some_clients():
    z_star = optimum()
    z = run_scaffold(rounds=300, steps=5, base_lr=0.05)
    torch.testing.assert_close(z, z_star, rtol=0, atol=1e-6)


def test_a_missing_gradient_gets_the_correction_by_hand():
    obj = make_objective("scaffold")
    x = {"a": torch.zeros(2, dtype=F64), "b": torch.zeros(1, dtype=F64)}
    obj.begin(x, {"control": {"a": torch.tensor([0.5, -1.0], dtype=F64),
                              "b": torch.tensor([2.0], dtype=F64)}},
              {"a": torch.tensor([0.25, 0.0], dtype=F64), "b": torch.tensor([2.0], dtype=F64)})
    a = torch.zeros(2, dtype=F64, requires_grad=True)
    b = torch.zeros(1, dtype=F64, requires_grad=True)
    obj.correct_gradients({"a": a, "b": b})
    torch.testing.assert_close(a.grad, torch.tensor([0.25, -1.0], dtype=F64))  # c - c_i
    assert b.grad is None  # c - c_i = 0 exactly: nothing to add
    a.grad.zero_()  # an optimizer's zero_grad(set_to_none=False) must not reach the correction
    obj.correct_gradients({"a": a, "b": b})
    torch.testing.assert_close(a.grad, torch.tensor([0.25, -1.0], dtype=F64))


def test_option_two_with_a_local_cosine_schedule_uses_the_summed_step_sizes():
    """Option II divides by lr_sum = sum_k lr_k: with a warm-up and cosine inside every local
    run (step sizes from 0.0125 to 0.05 and back down) SGD clients still reach the optimum."""
    lrs = [local_lr(k, 8, 0.05, "cosine", 0.25) for k in range(8)]
    assert lrs[:3] == [0.025, 0.05, 0.05] and min(lrs) < 0.01  # really not constant
    z = run_scaffold(rounds=300, steps=8, base_lr=0.05, schedule="cosine", warmup_ratio=0.25)
    torch.testing.assert_close(z, optimum(), rtol=0, atol=1e-6)


def test_option_two_control_is_the_step_size_weighted_mean_gradient():
    """From c = c_i = 0, SGD gives x - y = sum_k lr_k g_k, so c_i+ = (x - y) / lr_sum is the
    lr-weighted mean of the gradients along the local path (replayed here by hand)."""
    steps = 6
    lrs = [local_lr(k, steps, 0.08, "cosine", 0.3) for k in range(steps)]
    obj = make_objective("scaffold")
    x = {"w": torch.tensor([0.5, -0.5], dtype=F64), "u": torch.tensor([0.25], dtype=F64)}
    obj.begin(x, {}, {})
    z = torch.cat([x["w"], x["u"]])
    weighted = torch.zeros(3, dtype=F64)
    for lr in lrs:  # by hand: g = J^T (J z - b), z <- z - lr g
        g = J[0].T @ (J[0] @ z - B[0])
        weighted += lr * g
        z = z - lr * g
    result = obj.end({"w": z[:2].clone(), "u": z[2:].clone()}, sum(lrs))
    mean_grad = weighted / sum(lrs)
    torch.testing.assert_close(result.client_state["w"], mean_grad[:2], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(result.client_state["u"], mean_grad[2:], rtol=1e-12, atol=1e-14)
    # the step sizes really vary: K * base_lr would have scaled c_i+ by 1/0.63
    assert sum(lrs) / (steps * 0.08) < 0.7
