"""The one-shot driver (:class:`OneShotRun`) for the methods ``test_oneshot.py`` leaves out.

The released code's init, the orthogonal A penalty, ``combine``, one application of the server
optimisers, the product merges and ``local``. Expectations are computed here from the
clients' uploads (``sim.updates``) with plain torch formulas; TIES and DARE are also checked
against :func:`merge_lora_products` called with the driver's arguments (tiny preset, 3 clients,
float32 on the CPU, bfloat16 tolerances on a GPU).
"""

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from helpers.merge_references import ties_by_hand
from helpers.oneshot_common import (
    N_CLIENTS,
    base_cfg,
    base_model,
    logits,
    run,
    sample_batch,
    shared_bundle,
    tol,
)

from fedmllm.config import ConfigError
from fedmllm.engine.factory import plan_run
from fedmllm.engine.server import state_bytes
from fedmllm.fl import lora_pairs, merge_lora_products
from fedmllm.seeding import torch_generator, torch_seed

pytestmark = pytest.mark.slow

R = 8  # the paper's targets: rank 8, alpha 8 (LoRA scaling 1) on the last layer's q_proj


@pytest.fixture(scope="module")
def code(tiny_dir, tmp_path_factory):
    """The released code's init: B0 from the SVD, A0 random, base weight unchanged."""
    return shared_bundle(tmp_path_factory, "fl.yoco.init=code")


# ----------------------------------------------------------------------------- helpers

def _pair(state):
    """(A key, B key) of the one LoRA module the paper's targets adapt."""
    pairs = lora_pairs(state)
    assert len(pairs) == 1, sorted(pairs)
    return next(iter(pairs.values()))


def _d(t):
    return t.detach().cpu().to(torch.float64)


def _eps(sim_or_bundle):
    """Relative tolerance of a merged state computed in float32 and stored in the model's
    dtype: float32 round-off, or bfloat16's (2^-9 relative) on a GPU."""
    bundle = getattr(sim_or_bundle, "bundle", sim_or_bundle)
    return 1e-5 if bundle.dtype == torch.float32 else 4e-3


def _peps(sim):
    """Relative (Frobenius) tolerance of a product of merged factors (float32 SVDs inside)."""
    return max(2.5 * _eps(sim), 1e-4)


def _close(got, want, eps):
    """``got`` (model dtype) equals the float64 reference ``want`` up to ``eps``."""
    scale = max(float(want.abs().max()), 1e-12)
    torch.testing.assert_close(_d(got), want, atol=eps * scale, rtol=eps)


def _apart(a, b, eps):
    """The float64 references ``a`` and ``b`` differ somewhere by more than :func:`_close`
    allows (atol + rtol |a| <= 2 eps max|a|), so a result equal to ``b`` would fail there."""
    scale = max(float(a.abs().max()), 1e-12)
    assert float((a - b).abs().max()) > 3 * eps * scale


def _same_run(a, b, eps):
    """Two runs with the same inputs: bit-identical on the CPU; on a GPU, whose attention
    backward may accumulate in another order, equal up to the storage round-off."""
    if a.device.type == "cpu":
        assert torch.equal(a, b)
    else:
        _close(a, _d(b), eps)


def _weights(sim):
    n = torch.tensor([float(u.num_examples) for u in sim.updates], dtype=torch.float64)
    assert len(set(n.tolist())) > 1  # unequal clients: weighted and unweighted rules differ
    return n / n.sum()


def _mean_delta(sim, key, weighted=True):
    """D_w = sum_i w_i (y_i - x0) (or D_u with w_i = 1/N), in float64."""
    w = _weights(sim) if weighted else torch.full((N_CLIENTS,), 1.0 / N_CLIENTS,
                                                   dtype=torch.float64)
    x0 = _d(sim.initial_state[key])
    return sum(wi * (_d(u.state[key]) - x0) for wi, u in zip(w, sim.updates, strict=True))


def _product(state, ka, kb):
    return _d(state[kb]) @ _d(state[ka])


def _truncate(m, rank):
    """Best rank-``rank`` approximation (Eckart-Young) and its Frobenius error."""
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    return (u[:, :rank] * s[:rank]) @ vh[:rank], float(s[rank:].square().sum().sqrt())


def _rel(a, b):
    return float(torch.linalg.matrix_norm(a - b) / torch.linalg.matrix_norm(b))










# ----------------------------------------------------------------------------- 1. init = code

@pytest.fixture(scope="module")
def code_run(code, tmp_path_factory):
    out = tmp_path_factory.mktemp("code")
    return (out, *run(code, out, "fl.yoco.init=code"))


def test_code_init_b_from_svd_a_random_base_unchanged(code, pissa, code_run):
    bundle, pristine, data = code
    out, sim, result = code_run
    assert sim.bundle.init == "code" and result.rows[0]["init"] == "code"
    ka, kb = _pair(sim.initial_state)
    for key in (ka, kb):
        assert torch.equal(sim.initial_state[key], pristine[key])
    a0, b0 = _d(sim.initial_state[ka]), _d(sim.initial_state[kb])
    module = ka.split(".lora_A")[0]
    fresh = base_model(bundle)
    w = fresh.get_submodule(module.removeprefix("base_model.model.")).weight.detach()

    # no residual: the wrapped base weight is the pre-trained one (PiSSA's is not)
    assert torch.equal(bundle.model.get_submodule(module).base_layer.weight.detach(), w)
    pissa_w = pissa[0].model.get_submodule(module).base_layer.weight.detach()
    assert not torch.allclose(pissa_w, w, atol=1e-3)

    # B0 = U_r sqrt(S_r) of the frozen weight, up to the sign of each column
    u, s, vh = torch.linalg.svd(_d(w), full_matrices=False)
    assert float(s[R - 1] - s[R]) > 1e-3 * float(s[0])  # the top-r subspace is well defined
    svd_b = u[:, :R] * s[:R].sqrt()
    signs = torch.sign((b0 * svd_b).sum(0))
    assert bool((signs != 0).all())
    eps = max(_eps(bundle), 1e-4)  # the driver's SVD runs in float32
    _close(sim.initial_state[kb], svd_b * signs, eps)

    # A0 is not the SVD factor sqrt(S_r) V_r^T but peft's kaiming-uniform draw, U(-1/sqrt(in), ..)
    svd_a = s[:R].sqrt()[:, None] * vh[:R]
    cos = (a0 * svd_a).sum(1) / (a0.norm(dim=1) * svd_a.norm(dim=1))
    assert float(cos.abs().max()) < 0.5
    bound = 1.0 / math.sqrt(w.shape[1])
    assert 0.9 * bound < float(a0.abs().max()) <= bound * (1 + eps)
    assert float(a0.std()) == pytest.approx(bound / math.sqrt(3), rel=0.1)
    drawn = torch.empty(R, w.shape[1])
    torch.nn.init.kaiming_uniform_(drawn, a=math.sqrt(5),
                                   generator=torch_generator(sim.cfg.seed, "code_init"))
    assert torch.equal(sim.initial_state[ka].cpu(), drawn.to(sim.initial_state[ka].dtype))

    # so the initial model is the base model perturbed by s B0 A0 (s = alpha / r = 1)
    batch = sample_batch(bundle, data)
    base_logits = logits(fresh, batch)
    bundle.adapter.set(sim.initial_state)
    assert not torch.allclose(logits(bundle.model, batch), base_logits, **tol(bundle))
    # and the saved merged adapter (no PiSSA conversion) loads on the original base model
    from peft import PeftModel

    meta = json.loads((out / "adapter" / "fedmllm.json").read_text())
    assert meta["init"] == "code" and meta["converted_from_pissa"] is False
    bundle.adapter.set(sim.global_state)
    loaded = PeftModel.from_pretrained(base_model(bundle), out / "adapter")
    torch.testing.assert_close(logits(loaded, batch), logits(bundle.model, batch),
                               **tol(bundle))


# ----------------------------------------------------------------------------- 2. a_penalty

@pytest.fixture(scope="module")
def penalty_runs(pissa, tmp_path_factory):
    """(a_penalty, variant) -> (sim, result), all with seed 0 on the shared PiSSA bundle."""
    runs = {}
    for penalty in ("l1", "orthogonal"):
        for variant in ("full", "init_b"):
            out = tmp_path_factory.mktemp(f"{penalty}_{variant}")
            runs[penalty, variant] = run(pissa, out, f"fl.yoco.a_penalty={penalty}",
                                         f"fl.yoco.variant={variant}")
    return runs


def _gram_gap(a):
    a = _d(a)
    return float((a @ a.T - torch.eye(a.shape[0], dtype=a.dtype)).norm())


def test_orthogonal_a_penalty_changes_client_training(penalty_runs):
    sim_l1, _ = penalty_runs["l1", "full"]
    sim_o, res_o = penalty_runs["orthogonal", "full"]
    assert sim_o.trainer.objective.a_penalty == "orthogonal"
    assert sim_l1.trainer.objective.a_penalty == "l1"
    assert all(math.isfinite(v) for v in res_o.rows[0]["train_loss"].values())
    assert 0.0 <= res_o.final["final"]["accuracy"] <= 1.0
    ka, _ = _pair(sim_o.global_state)
    # same start, same seed, same data: only the A penalty differs
    assert torch.equal(sim_o.initial_state[ka], sim_l1.initial_state[ka])
    for uo, ul in zip(sim_o.updates, sim_l1.updates, strict=True):
        assert not torch.allclose(uo.state[ka], ul.state[ka])
        # ||A A^T - I|| is what the orthogonal penalty pulls down
        assert _gram_gap(uo.state[ka]) < _gram_gap(ul.state[ka])
    assert not torch.allclose(sim_o.global_state[ka], sim_l1.global_state[ka])


def test_a_penalty_has_no_effect_without_the_a_term(penalty_runs):
    """Variant init_b has no A penalty: l1 and orthogonal runs are identical (so the
    difference above is the penalty's, not run-to-run noise)."""
    sim_l1, _ = penalty_runs["l1", "init_b"]
    sim_o, _ = penalty_runs["orthogonal", "init_b"]
    for key in sim_l1.global_state:
        _same_run(sim_l1.global_state[key], sim_o.global_state[key], _eps(sim_l1))


def test_invalid_a_penalty_is_a_config_error(tmp_path, plain):
    with pytest.raises(ConfigError, match=r"fl\.yoco\.a_penalty"):
        base_cfg(tmp_path, "fl.yoco.a_penalty=l2")
    # a value that bypassed load_config is caught by the checks before anything loads
    cfg = base_cfg(tmp_path)
    cfg = dataclasses.replace(cfg, fl=dataclasses.replace(
        cfg.fl, yoco=dataclasses.replace(cfg.fl.yoco, a_penalty="l2")))
    with pytest.raises(ConfigError, match=r"fl\.yoco.*a_penalty"):
        plan_run(cfg)


# ----------------------------------------------------------------------------- 3. combine

def test_combine_mean_b_fedavgm_a(plain, tmp_path):
    sim, result = run(plain, tmp_path, "fl.yoco.method=combine", "fl.yoco.merge_b=mean",
                      "fl.yoco.merge_a=fedavgm", "fl.strategy.server_lr=2.0",
                      "fl.strategy.momentum=0.5")
    assert result.rows[0]["init"] == "default"
    eps = _eps(sim)
    ka, kb = _pair(sim.global_state)
    assert float(sim.initial_state[kb].abs().max()) == 0.0  # zero-B init
    # B: the unweighted mean of the clients' B (not the sample-weighted one)
    mean_b = torch.stack([_d(u.state[kb]) for u in sim.updates]).mean(0)
    weighted_b = sum(wi * _d(u.state[kb]) for wi, u in zip(_weights(sim), sim.updates,
                                                             strict=True))
    _close(sim.global_state[kb], mean_b, eps)
    _apart(mean_b, weighted_b, eps)
    # A: one textbook FedAvgM step from A0; the momentum buffer starts at the first delta,
    # so A_g = A0 + server_lr * D_w whatever the momentum (and not fedavg's A0 + D_w)
    a0, d_w = _d(sim.initial_state[ka]), _mean_delta(sim, ka)
    _close(sim.global_state[ka], a0 + 2.0 * d_w, eps)
    _apart(a0 + 2.0 * d_w, a0 + d_w, eps)


# ----------------------------------------------------------------------------- 4. server optimisers

def _fedavgm(x0, d_w, d_u, p):
    return x0 + p["server_lr"] * d_w  # first step: v (textbook) = m (fedmllm) = D_w


def _fedadagrad(x0, d_w, d_u, p):
    if p.get("variant") == "fedmllm":  # m = D_u, v = tau^2 + m^2
        m = d_u
        v = p["tau"] ** 2 + m.square()
    else:  # m = (1 - beta1) D_w (m starts at 0), v = 0 + D_w^2
        m = (1 - p["beta1"]) * d_w
        v = d_w.square()
    return x0 + p["eta"] * m / (v.sqrt() + p["tau"])


def _fedyogi(x0, d_w, d_u, p):
    if p.get("variant") == "fedmllm":  # m = D_u the first time, v0 = tau^2, q = m
        m, v0, q = d_u, torch.full_like(d_u, p["tau"] ** 2), d_u
    else:  # m = (1 - beta1) D_w, v0 = 0, q = D_w
        m, v0, q = (1 - p["beta1"]) * d_w, torch.zeros_like(d_w), d_w
    v = v0 - (1 - p["beta2"]) * q.square() * torch.sign(v0 - q.square())
    return x0 + p["eta"] * m / (v.sqrt() + p["tau"])


#: explicit parameters, chosen so that each rule's step is far from fedavg's (x0 + D_w)
SERVER_RULES = {
    "fedavgm": ("fedavgm", _fedavgm, {"server_lr": 2.5, "momentum": 0.7}),
    "fedavgm-fedmllm": ("fedavgm", _fedavgm,
                        {"server_lr": 2.5, "momentum": 0.7, "variant": "fedmllm"}),
    "fedadagrad": ("fedadagrad", _fedadagrad, {"eta": 0.2, "tau": 0.01, "beta1": 0.5}),
    "fedadagrad-fedmllm": ("fedadagrad", _fedadagrad,
                           {"eta": 0.2, "tau": 0.01, "variant": "fedmllm"}),
    "fedyogi": ("fedyogi", _fedyogi, {"eta": 0.2, "tau": 0.01, "beta1": 0.5, "beta2": 0.9}),
    "fedyogi-fedmllm": ("fedyogi", _fedyogi, {"eta": 0.2, "tau": 0.01, "beta1": 0.5,
                                              "beta2": 0.9, "variant": "fedmllm"}),
}


@pytest.mark.parametrize("case", sorted(SERVER_RULES))
def test_oneshot_server_optimiser_is_one_step(case, plain, tmp_path):
    """fl.yoco.fedopt_step picks the adaptive rules' first step: research (default, the
    fedmllm variant's), textbook where the case is (its variant is the default one)."""
    method, rule, params = SERVER_RULES[case]
    adaptive = method != "fedavgm"
    step = "research" if params.get("variant") == "fedmllm" else "textbook"
    sim, result = run(plain, tmp_path, f"fl.yoco.method={method}",
                      *(f"fl.strategy.{k}={v}" for k, v in params.items()),
                      *([f"fl.yoco.fedopt_step={step}"] if adaptive else []))
    assert result.final["method"] == method and sim.cfg.fl.strategy == params
    assert result.final["oneshot"] == {"method": method,
                                       "fedopt_step": step if adaptive else None}
    assert result.rows[0]["fedopt_step"] == result.final["oneshot"]["fedopt_step"]
    assert set(sim.global_state) == set(sim.initial_state)
    eps = _eps(sim)
    for key, merged in sim.global_state.items():  # the rule applies to A and B alike
        x0 = _d(sim.initial_state[key])
        d_w, d_u = _mean_delta(sim, key), _mean_delta(sim, key, weighted=False)
        want = rule(x0, d_w, d_u, params)
        _close(merged, want, eps)
        _apart(want, x0 + d_w, eps)  # not plain fedavg
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


# ----------------------------------------------------------------------------- 5. product merges

PRODUCT_RUNS = {
    "exact": ["fl.yoco.method=exact"],  # default fl.yoco.product_rank: auto
    "exact_client": ["fl.yoco.method=exact", "fl.yoco.product_rank=client"],
    "task_arithmetic": ["fl.yoco.method=task_arithmetic"],
    "ties": ["fl.yoco.method=ties", "fl.yoco.density=0.3"],
    "dare": ["fl.yoco.method=dare_linear", "fl.yoco.density=0.5"],
    "dare_again": ["fl.yoco.method=dare_linear", "fl.yoco.density=0.5"],
    "dare_seed1": ["fl.yoco.method=dare_linear", "fl.yoco.density=0.5", "seed=1"],
}


@pytest.fixture(scope="module")
def product_runs(plain, tmp_path_factory):
    """name -> (sim, result) for the product merges on the shared zero-B bundle."""
    return {name: run(plain, tmp_path_factory.mktemp(name), *extra)
            for name, extra in PRODUCT_RUNS.items()}


def _weighted_product(sim, ka, kb):
    return sum(wi * _product(u.state, ka, kb)
               for wi, u in zip(_weights(sim), sim.updates, strict=True))


#: the merged rank of each linear product merge: exact keeps the lossless rank N r by default
#: (fl.yoco.product_rank=auto -> full), the others re-factorize to the clients' r
LINEAR_RANKS = {"exact": N_CLIENTS * R, "exact_client": R, "task_arithmetic": R}


@pytest.mark.parametrize("name", sorted(LINEAR_RANKS))
def test_linear_product_merge_is_truncated_weighted_mean(name, product_runs):
    """B_g A_g is the best rank-k approximation of sum_i w_i B_i A_i (k = the merged rank):
    the Eckart-Young truncation of the dense mean, with its error sqrt(sum_{j>k} s_j^2)."""
    sim, result = product_runs[name]
    rank = LINEAR_RANKS[name]
    eps = _peps(sim)
    ka, kb = _pair(sim.global_state)
    assert sim.global_state[ka].shape[0] == rank and sim.global_state[kb].shape[1] == rank
    dense = _weighted_product(sim, ka, kb)
    best, err = _truncate(dense, rank)
    merged = _product(sim.global_state, ka, kb)
    assert _rel(merged, best) < eps
    got_err = float(torch.linalg.matrix_norm(dense - merged))
    assert got_err == pytest.approx(err, rel=1e-2, abs=eps * float(dense.norm()))
    if rank < N_CLIENTS * R:  # the truncation drops something: the checks above can fail
        assert err > 1e-3 * float(dense.norm())
    saved = json.loads((Path(sim.cfg.output.dir) / "adapter" / "adapter_config.json").read_text())
    assert saved["r"] == rank
    assert 0.0 <= result.final["final"]["accuracy"] <= 1.0


def test_exact_at_client_rank_equals_task_arithmetic(product_runs):
    """Linear task arithmetic with lam = 1 is the weighted mean whatever P_0 is."""
    ex, ta = product_runs["exact_client"][0], product_runs["task_arithmetic"][0]
    ka, kb = _pair(ex.global_state)
    assert _rel(_product(ta.global_state, ka, kb), _product(ex.global_state, ka, kb)) < _peps(ex)


def _direct(sim, method, density, seed):
    """merge_lora_products on the run's uploads, with the arguments the driver uses for run
    seed ``seed``."""
    return merge_lora_products([u.state for u in sim.updates],
                               [u.num_examples for u in sim.updates], method=method,
                               rank="client", initial=sim.initial_state, density=density,
                               seed=torch_seed(seed, "dare"))


def test_ties_merge(product_runs):
    sim, _ = product_runs["ties"]
    ka, kb = _pair(sim.global_state)
    expected = _direct(sim, "ties", 0.3, sim.cfg.seed)
    for key in (ka, kb):
        assert torch.equal(sim.global_state[key], expected[key])
    # independently: TIES of the task vectors P_i - P_0 (float32 products, as the driver forms)
    def f32(t):
        return t.detach().cpu().float()

    p0 = f32(sim.initial_state[kb]) @ f32(sim.initial_state[ka])
    taus = [(f32(u.state[kb]) @ f32(u.state[ka]) - p0).double() for u in sim.updates]
    dense = p0.double() + ties_by_hand(taus, _weights(sim), 0.3)
    best, _ = _truncate(dense, R)
    eps = _peps(sim)
    assert _rel(_product(sim.global_state, ka, kb), best) < eps
    # trimming and sign election really changed the result relative to the weighted mean
    linear, _ = _truncate(_weighted_product(sim, ka, kb), R)
    assert _rel(best, linear) > 20 * eps


def test_dare_linear_is_seeded(product_runs):
    sim, _ = product_runs["dare"]
    again, _ = product_runs["dare_again"]
    other, _ = product_runs["dare_seed1"]
    assert other.cfg.seed == 1
    ka, kb = _pair(sim.global_state)
    eps = _peps(sim)
    for key in (ka, kb):
        # the driver's merge is DARE with density fl.yoco.density, drawn with seed
        assert torch.equal(sim.global_state[key], _direct(sim, "dare_linear", 0.5, 0)[key])
        assert torch.equal(other.global_state[key], _direct(other, "dare_linear", 0.5, 1)[key])
        # same seed twice: identical training and draw
        _same_run(sim.global_state[key], again.global_state[key], _eps(sim))
    # another seed: another draw, even on the very same uploads
    p0 = _product(_direct(sim, "dare_linear", 0.5, 0), ka, kb)
    assert _rel(_product(_direct(sim, "dare_linear", 0.5, 1), ka, kb), p0) > 20 * eps
    assert _rel(_product(other.global_state, ka, kb),
                _product(_direct(other, "dare_linear", 0.5, 0), ka, kb)) > 20 * eps
    # dropping half the entries (rescaled by 2) is not the plain weighted mean
    linear, _ = _truncate(_weighted_product(sim, ka, kb), R)
    assert _rel(_product(sim.global_state, ka, kb), linear) > 20 * eps


# ----------------------------------------------------------------------------- 6. local

def test_local_reports_the_client_models(plain, tmp_path):
    sim, result = run(plain, tmp_path, "fl.yoco.method=local")
    final = result.final["final"]
    per_client = final["per_client"]
    assert sorted(per_client) == list(range(N_CLIENTS))
    accs = [per_client[k]["accuracy"] for k in range(N_CLIENTS)]
    mean = sum(accs) / len(accs)
    assert final["accuracy"] == pytest.approx(mean, abs=1e-12)
    assert final["accuracy_std"] == pytest.approx(
        math.sqrt(sum((a - mean) ** 2 for a in accs) / len(accs)), abs=1e-12)
    assert final["accuracy_min"] == min(accs) and final["accuracy_max"] == max(accs)
    if "auroc" in final:
        aurocs = [per_client[k]["auroc"] for k in range(N_CLIENTS)]
        assert final["auroc"] == pytest.approx(sum(aurocs) / len(aurocs), abs=1e-12)
    # each entry is that client's own adapter on the test set
    for k in range(N_CLIENTS):
        assert sim.session.evaluate(sim.updates[k].state)["accuracy"] == accs[k]
    # nothing is communicated and nothing is merged or saved
    row, totals = result.rows[0], result.final["totals"]
    assert totals["bytes_uploaded"] == 0 and row["bytes_uploaded"] == 0
    assert row["upload_units"] == 0 and row["bytes_uploaded_per_client"] == 0
    assert not (tmp_path / "adapter").exists()
    for key, t in sim.global_state.items():
        assert torch.equal(t, sim.initial_state[key])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["final"]["accuracy"] == pytest.approx(mean, abs=1e-12)
    assert summary["totals"]["adapter_bytes"] == state_bytes(sim.initial_state)


def test_combine_takes_separate_params_for_a_and_b(plain, tmp_path):
    """Two stateful rules with different parameter names: ``params_a`` / ``params_b``."""
    adam = ["fl.yoco.params_b={eta: 0.05, tau: 0.001}"]
    sim, _ = run(plain, tmp_path / "c", "fl.yoco.method=combine", "fl.yoco.merge_b=fedadam",
                 "fl.yoco.merge_a=fedavgm", "fl.yoco.params_a={server_lr: 2.0, momentum: 0.5}",
                 *adam)
    ka, kb = _pair(sim.global_state)
    eps = _eps(sim)
    _close(sim.global_state[ka], _d(sim.initial_state[ka]) + 2.0 * _mean_delta(sim, ka), eps)
    # B: the same one-step FedAdam as the one-shot fedadam method with those parameters
    ref, _ = run(plain, tmp_path / "r", "fl.yoco.method=fedadam", "fl.strategy.eta=0.05",
                 "fl.strategy.tau=0.001")
    _close(sim.global_state[kb], _d(ref.global_state[kb]), eps)
    _apart(_d(ref.global_state[kb]), _d(sim.initial_state[kb]) + _mean_delta(sim, kb), eps)


# ----------------------------------------------------------------------------- 7. PCA settings

def test_pca_settings_reach_the_merge(plain, tmp_path):
    """fl.yoco.pca_power / pca_center / pca_sample_weighted / pca_k are the merge's own."""
    from fedmllm.fl import merge_lora_uploads

    extra = ("fl.yoco.method=combine", "fl.yoco.merge_b=fedavg", "fl.yoco.merge_a=pca",
             "fl.yoco.pca_k=2", "fl.yoco.pca_power=1.0", "fl.yoco.pca_center=false",
             "fl.yoco.pca_sample_weighted=false")
    sim, _ = run(plain, tmp_path, *extra)
    states = [{k: _d(t) for k, t in u.state.items()} for u in sim.updates]
    counts = [u.num_examples for u in sim.updates]
    initial = {k: _d(t) for k, t in sim.initial_state.items()}
    want = merge_lora_uploads(states, counts, initial=initial, pca_k=2, pca_power=1.0,
                              pca_center=False, pca_sample_weighted=False)
    default = merge_lora_uploads(states, counts, initial=initial, pca_k=2)
    ka, _ = _pair(sim.global_state)
    eps = _eps(sim)
    _close(sim.global_state[ka], want[ka], eps)
    _apart(want[ka], default[ka], eps)
    with pytest.raises(ConfigError, match="fl.yoco.pca_power: must be a positive"):
        plan_run(base_cfg(tmp_path, "fl.yoco.pca_power=0"))


def test_a_strategy_variant_contradicting_the_oneshot_step_is_refused_by_the_plan(tmp_path):
    plan_run(base_cfg(tmp_path, "fl.yoco.method=fedadam", "fl.strategy.variant=fedmllm"))
    with pytest.raises(ConfigError, match=r"^fl.strategy: rule 'fedadam': variant 'textbook' "
                                          r"contradicts fedopt_step 'research' [^\n]*$"):
        plan_run(base_cfg(tmp_path, "fl.yoco.method=fedadam", "fl.strategy.variant=textbook"))
    with pytest.raises(ConfigError, match=r"^fl.yoco.params_b: rule 'fedyogi': variant "):
        plan_run(base_cfg(tmp_path, "fl.yoco.method=combine", "fl.yoco.merge_b=fedyogi",
                          "fl.yoco.params_b={variant: fedmllm}", "fl.yoco.fedopt_step=textbook"))
