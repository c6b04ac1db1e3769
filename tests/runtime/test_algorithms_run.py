"""Every algorithm and client objective runs end to end in the simulator on the tiny preset."""

import math

import pytest
import torch

from fedmllm.config import load_config
from fedmllm.engine.bundle import build_bundle
from fedmllm.engine.factory import plan_run
from fedmllm.fl import ALGORITHMS
from fedmllm.runtime import build_driver

# (no slow mark: each test takes about a second once the shared model is loaded)


@pytest.fixture(scope="module")
def shared(tiny_dir, tmp_path_factory):
    """One loaded model and one dataset for all runs (the adapter is reset before each)."""
    from fedmllm.data import build_federated_data

    cfg = base_cfg(tmp_path_factory.mktemp("o"))
    bundle = build_bundle(plan_run(cfg))
    pristine = bundle.adapter.get()
    data = build_federated_data(cfg.data, cfg.fl.num_clients, cfg.seed)
    return bundle, pristine, data


def base_cfg(out, *extra):
    return load_config(None, [
        "model.preset=tiny", "fl.rounds=2", "fl.num_clients=4", "fl.clients_per_round=2",
        "fl.local_steps=2", "data.train_size=64", "data.test_size=16", "eval.every=1",
        "eval.views=[image_text]", f"output.dir={out}", "output.progress=false",
        "output.plot=false", *extra])


def run(shared, out, *extra):
    bundle, pristine, data = shared
    bundle.adapter.set(pristine)
    return build_driver(base_cfg(out, *extra), bundle=bundle, data=data).run()


#: robust rules need enough clients per round to be what they say (median: 3; trimmed mean
#: with beta: ceil(1 / beta); Krum and Multi-Krum 2f + 3, Bulyan 4f + 3: 3 with f = 0)
NEEDS = {"median": ["fl.clients_per_round=3"],
         "trimmed_mean": ["fl.clients_per_round=3", "fl.strategy.beta=0.34"],
         "krum": ["fl.clients_per_round=3"], "bulyan": ["fl.clients_per_round=3"],
         "multikrum": ["fl.clients_per_round=3", "fl.strategy.num_to_select=2"]}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_each_algorithm_completes(algorithm, shared, tmp_path):
    from safetensors.torch import load_file

    bundle, pristine, data = shared
    bundle.adapter.set(pristine)
    driver = build_driver(base_cfg(tmp_path, f"fl.algorithm={algorithm}",
                                   *NEEDS.get(algorithm, [])), bundle=bundle, data=data)
    result = driver.run()
    final = result.final["final"]
    assert 0.0 <= final["accuracy"] <= 1.0
    if algorithm == "zeroshot":
        assert result.rows == [] and result.final["totals"]["bytes_uploaded"] == 0
        return
    assert [r["round"] for r in result.rows] == [1, 2]
    assert not any(r["skipped"] for r in result.rows)
    assert all(math.isfinite(v) for r in result.rows for v in r["train_loss"].values())
    if algorithm == "local":
        assert "accuracy_std" in final and set(final["per_client"]) == {
            int(k) for r in result.rows for k in r["train_loss"]}
        assert result.final["totals"]["bytes_uploaded"] == 0
        assert all(torch.equal(driver.global_state[k], pristine[k]) for k in pristine)
        for k, state in driver.adapters.items():  # every client's own adapter is saved
            saved = load_file(tmp_path / "adapters" / f"client_{k}" /
                              "adapter_model.safetensors")
            assert all(torch.equal(saved[key], state[key].cpu()) for key in saved)
        return
    # the aggregate moved the global adapter, and that is what was saved
    assert any(not torch.equal(driver.global_state[k], pristine[k]) for k in pristine)
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert set(saved) == set(pristine)
    assert all(torch.equal(saved[k], driver.global_state[k].cpu()) for k in saved)
    if algorithm == "centralized":  # one pooled client, 2 clients x 2 steps a round, no bytes
        assert all(r["clients"] == ["all"] and r["local_steps"] == {"0": 4}
                   for r in result.rows)
        assert result.final["totals"]["bytes_uploaded"] == 0
        return
    assert result.final["totals"]["bytes_uploaded"] > 0
    if algorithm == "scaffold":  # control variates travel both ways
        adapter = result.final["totals"]["adapter_bytes"]
        assert result.rows[1]["bytes_uploaded"] == 2 * 2 * adapter


@pytest.mark.parametrize("objective", ["prox", "adaptive_prox"])
def test_client_objectives_change_training(objective, shared, tmp_path):
    plain = run(shared, tmp_path / "a", "fl.client.prox_mu=0", "fl.client.s_layer=0",
                f"fl.client.objective={objective}")
    strong = run(shared, tmp_path / "b", "fl.client.prox_mu=100", "fl.client.mu_w=1",
                 "fl.client.s_layer=0", f"fl.client.objective={objective}")
    ce = run(shared, tmp_path / "c")
    # mu = 0 is plain cross-entropy; a strong pull changes the client losses
    assert plain.rows[0]["train_loss"] == ce.rows[0]["train_loss"]
    assert strong.rows[1]["train_loss"] != ce.rows[1]["train_loss"]


def test_rejected_update_skips_round(shared, tmp_path):
    _bundle, pristine, _ = shared
    result = run(shared, tmp_path, "fl.max_update_norm=1e-12", "fl.min_clients=1")
    row = result.rows[0]
    assert row["skipped"] and len(row["rejected"]) == 2
    assert "norm" in row["rejected"][0]["reason"]
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    for k, v in pristine.items():
        assert torch.equal(saved[k], v.cpu())




def test_scaffold_server_control_is_the_mean_of_the_kept_client_controls(shared, tmp_path):
    """c = (1/N) sum_i c_i after every round: a client keeps its new c_i only when the server
    accepted its update (a rejected update leaves both sides unchanged)."""
    bundle, pristine, data = shared
    bundle.adapter.set(pristine)
    rejected = build_driver(base_cfg(tmp_path / "a", "fl.algorithm=scaffold",
                                     "fl.max_update_norm=1e-12"), bundle=bundle, data=data)
    result = rejected.run()
    assert all(r["skipped"] for r in result.rows) and len(rejected.client_states) == 0
    assert rejected.strategy.state_dict() == {}

    bundle.adapter.set(pristine)
    cfg = base_cfg(tmp_path / "b", "fl.algorithm=scaffold", "fl.rounds=3")
    run = build_driver(cfg, bundle=bundle, data=data)
    run.run()
    control = run.strategy.server_extras()["control"]
    assert control and len(run.client_states) >= 2
    n = cfg.fl.num_clients
    for key, c in control.items():
        kept = [run.client_states.get(i).get(key) for i in range(n)]
        mean = sum(t.double() for t in kept if t is not None) / n
        torch.testing.assert_close(c.double(), mean, atol=1e-6, rtol=1e-5)
    assert any(float(c.abs().max()) > 0 for c in control.values())


def test_centralized_is_one_client_on_the_pooled_data(shared, tmp_path):
    """Round 1 of centralized training is exactly a local run of client 0 on every client's
    samples together, for clients_per_round x local_steps steps."""
    from fedmllm.engine.client import train_round

    bundle, pristine, data = shared
    bundle.adapter.set(pristine)
    driver = build_driver(base_cfg(tmp_path, "fl.algorithm=centralized", "fl.rounds=1"),
                          bundle=bundle, data=data)
    driver.run()
    cfg = driver.cfg
    pooled = [e for c in driver.session.clients for e in c]
    assert len(pooled) == sum(len(c) for c in data.clients)
    lr = driver.session.plan.lr  # the round-level schedule's first round (warm-up of 1)
    from fedmllm.fl import round_lr

    lr = round_lr(1, 1, lr, cfg.train.lr_schedule, cfg.train.warmup_rounds,
                  cfg.train.min_lr_ratio)
    alone = train_round(driver.trainer, cfg, pooled, 0, 1, lr, pristine, {}, steps=4)
    assert all(torch.equal(alone.update.state[k], driver.global_state[k]) for k in pristine)


def test_split_holdout_is_seeded_disjoint_and_keeps_a_training_sample():
    from fedmllm.runtime.session import split_holdout

    clients = [list(range(10)), list(range(100, 103)), [7]]
    train, held = split_holdout(clients, 0.3, seed=5)
    assert [len(t) for t in train] == [7, 3, 1] and {k: len(v) for k, v in held.items()} == \
        {0: 3}  # floor(0.3 * 3) = 0 and a one-sample client keeps its sample
    assert sorted(train[0] + held[0]) == clients[0]
    assert split_holdout(clients, 0.3, seed=5) == (train, held)
    assert split_holdout(clients, 0.3, seed=6)[1] != held
    assert split_holdout(clients, 0.0, seed=5) == (clients, {})


def test_client_side_evaluation_scores_each_clients_own_held_out_samples(shared, tmp_path):
    from fedmllm.eval import evaluate

    bundle, pristine, data = shared
    bundle.adapter.set(pristine)
    driver = build_driver(base_cfg(tmp_path, "eval.client_holdout=0.25"), bundle=bundle,
                          data=data)
    result = driver.run()
    s = driver.session
    assert set(s.holdout) == {k for k, c in enumerate(data.clients) if len(c) >= 4}
    for k, held in s.holdout.items():
        assert len(held) == len(data.clients[k]) // 4
        assert not {x.id for x in held} & {x.id for x in s.train_samples[k]}
    assert all("client_eval" in r for r in result.rows)  # eval.every=1
    ce = result.final["final"]["client_eval"]
    k = min(s.holdout)
    bundle.adapter.set(driver.global_state)
    direct = evaluate(bundle.model, bundle.processor, s.holdout[k], views=("image_text",))
    assert ce["per_client"][str(k)]["accuracy"] == direct["accuracy"]
    accs = [m["accuracy"] for m in ce["per_client"].values()]
    assert ce["accuracy"]["min"] == min(accs) and ce["accuracy"]["max"] == max(accs)
    manifest = __import__("json").loads((tmp_path / "data_manifest.json").read_text())
    assert manifest["client_holdout"]["held_out"] == {str(k): len(v)
                                                      for k, v in s.holdout.items()}
    # local-only: every client's own adapter on its own held-out samples
    bundle.adapter.set(pristine)
    local = build_driver(base_cfg(tmp_path / "local", "eval.client_holdout=0.25",
                                  "fl.algorithm=local"), bundle=bundle, data=data)
    ce = local.run().final["final"]["client_eval"]
    k = min(local.session.holdout)
    bundle.adapter.set(local.adapters.get(k) or pristine)
    direct = evaluate(bundle.model, bundle.processor, local.session.holdout[k],
                      views=("image_text",))
    assert ce["per_client"][str(k)]["accuracy"] == direct["accuracy"]


def test_client_holdout_is_refused_where_it_is_not_built(tmp_path):
    from fedmllm.config import ConfigError

    with pytest.raises(ConfigError, match="eval.client_holdout: must be in"):
        base_cfg(tmp_path, "eval.client_holdout=1.0")
    with pytest.raises(ConfigError, match="eval.client_holdout: client-side evaluation is for "
                                          "multi-round"):
        plan_run(base_cfg(tmp_path, "eval.client_holdout=0.2", "fl.algorithm=yoco"))


def test_tensorboard_events_carry_the_metrics_rows(shared, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    bundle, pristine, data = shared
    bundle.adapter.set(pristine)
    result = build_driver(base_cfg(tmp_path, "output.tensorboard=true",
                                   "eval.client_holdout=0.25"),
                          bundle=bundle, data=data).run()
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    got = {e.step: e.value for e in acc.Scalars("test/image_text/accuracy")}
    assert got == pytest.approx({r["round"]: r["eval"]["accuracy"] for r in result.rows})
    loss = {e.step: e.value for e in acc.Scalars("train/loss")}
    assert loss == pytest.approx({r["round"]: r["train_loss_mean"] for r in result.rows})
    assert "clients/accuracy_min" in acc.Tags()["scalars"]
    # without the package the key is refused before anything runs
    import importlib.util

    from fedmllm.config import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match=r"output.tensorboard: needs the tensorboard package"):
        plan_run(base_cfg(tmp_path, "output.tensorboard=true"))


@pytest.mark.parametrize("local_clients", ["all", "sampled"])
def test_local_only_trains_every_client_every_round_unless_sampled(local_clients, shared,
                                                                   tmp_path):
    """fl.local_clients = all (default): the 4 clients all train in both rounds (2 x 4 x 2 =
    16 client steps); sampled: only the 2 sampled each round (8 steps), as summary.json's
    compute says; a client sampled twice continues from its own adapter."""
    from fedmllm.fl import sample_clients

    result = run(shared, tmp_path, "fl.algorithm=local", f"fl.local_clients={local_clients}")
    want = [list(range(4))] * 2 if local_clients == "all" else \
        [sample_clients(4, 2, r, 0) for r in (1, 2)]
    assert [r["clients"] for r in result.rows] == want
    assert [sorted(map(int, r["local_steps"])) for r in result.rows] == want
    steps = sum(len(c) for c in want) * 2
    assert result.final["compute"] == {"client_steps": steps, "client_runs": steps // 2}
    assert set(result.final["final"]["per_client"]) == set().union(*want)


def test_compute_counts_every_clients_steps(shared, tmp_path):
    """A FedAvg run's compute: 2 rounds x 2 sampled clients x 2 steps."""
    result = run(shared, tmp_path, "fl.algorithm=fedavg")
    assert result.final["compute"] == {"client_steps": 8, "client_runs": 4}


def _strip_calibrated(ev: dict) -> dict:
    """``ev`` without the calibrated threshold's keys (what a fixed-threshold run reports)."""
    drop = ("accuracy_calibrated", "threshold", "calibration_accuracy")
    return {k: (_strip_calibrated(v) if isinstance(v, dict) else v)
            for k, v in ev.items() if k not in drop}


@pytest.mark.parametrize("algorithm", ["fedavg", "local"])
def test_calibrated_threshold_is_chosen_on_held_out_samples_and_reported_beside(
        algorithm, shared, tmp_path):
    """eval.threshold = calibrated: the threshold of the held-out counts (summed over the
    clients; local-only: each client's own) is applied to the test set; every fixed figure
    is the fixed-threshold run's, bit for bit."""
    from fedmllm.eval import evaluate
    from fedmllm.eval.threshold import calibrated_metrics, choose_threshold, correct_counts

    bundle, pristine, data = shared
    extra = ["eval.client_holdout=0.25", f"fl.algorithm={algorithm}"]
    fixed = run(shared, tmp_path / "f", *extra)
    bundle.adapter.set(pristine)
    driver = build_driver(base_cfg(tmp_path / "c", *extra, "eval.threshold=calibrated"),
                          bundle=bundle, data=data)
    result = driver.run()
    final, s = result.final["final"], driver.session
    assert _strip_calibrated(final) == fixed.final["final"]
    assert [_strip_calibrated(r.get("eval", {})) for r in result.rows] == \
        [r.get("eval", {}) for r in fixed.rows]

    def probs(k: int, held: bool):
        state = driver.adapters.get(k) if algorithm == "local" else driver.global_state
        bundle.adapter.set(state)
        samples = s.holdout[k] if held else data.test
        p = evaluate(bundle.model, bundle.processor, samples, views=("image_text",),
                     return_predictions=True)["_predictions"]["image_text"][1]["probs"]
        return [x.label for x in samples], p.numpy()

    if algorithm == "local":
        k = min(s.holdout)
        t, _ = choose_threshold([correct_counts(*probs(k, True))])
        assert final["client_eval"]["per_client"][str(k)]["threshold"] == t
        assert final["per_client"][k]["threshold"] == t
        return
    t, correct = choose_threshold([correct_counts(*probs(k, True)) for k in sorted(s.holdout)])
    assert final["threshold"] == final["client_eval"]["threshold"] == t
    assert final["client_eval"]["calibration_accuracy"] == correct / sum(
        len(v) for v in s.holdout.values())
    assert final["accuracy_calibrated"] == calibrated_metrics(*probs(0, False), t)[
        "accuracy_calibrated"]
    assert all("accuracy_calibrated" in r["eval"] for r in result.rows)


def test_calibrated_threshold_needs_held_out_samples(tmp_path):
    from fedmllm.config import ConfigError

    with pytest.raises(ConfigError, match=r"^eval.threshold: 'calibrated' is chosen on the "
                                          r"clients' held-out samples: set eval.client_holdout"):
        plan_run(base_cfg(tmp_path, "eval.threshold=calibrated"))
    with pytest.raises(ConfigError, match=r"^eval.threshold: [^\n]*multi-round runs only"):
        plan_run(base_cfg(tmp_path, "eval.threshold=calibrated", "fl.algorithm=yoco"))
