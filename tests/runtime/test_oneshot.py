"""One-shot federated LoRA (YOCO and baselines) end to end in the simulator, tiny preset."""

import json
import math

import pytest
import torch
from helpers.oneshot_common import (
    N_CLIENTS,
    base_cfg,
    base_model,
    logits,
    run,
    sample_batch,
    tol,
)

from fedmllm.engine.server import state_bytes
from fedmllm.runtime import run_experiment

pytestmark = pytest.mark.slow










def test_pissa_targets_and_initial_model_equals_base(pissa):
    bundle, pristine, data = pissa
    keys = sorted(pristine)
    # the paper's targets: one q_proj in the last language-model layer, rank 8
    assert len(keys) == 2 and all("q_proj" in k for k in keys)
    assert {t.shape[0] for k, t in pristine.items() if "lora_A" in k} == {8}
    assert all(f"layers.{bundle.num_layers - 1}.self_attn" in k for k in keys)
    assert all(float(t.abs().sum()) > 0 for t in pristine.values())  # SVD factors, not zero-B
    bundle.adapter.set(pristine)
    batch = sample_batch(bundle, data)
    torch.testing.assert_close(logits(bundle.model, batch), logits(base_model(bundle), batch),
                               **tol(bundle))


VARIANTS = ("init", "init_b", "init_ba", "full")


@pytest.fixture(scope="module")
def yoco_runs(pissa, tmp_path_factory):
    """One run per YOCO variant on the shared PiSSA bundle: variant -> (out dir, sim, result)."""
    runs = {}
    for variant in VARIANTS:
        out = tmp_path_factory.mktemp(variant)
        runs[variant] = (out, *run(pissa, out, f"fl.yoco.variant={variant}"))
    return runs


@pytest.mark.parametrize("variant", VARIANTS)
def test_yoco_variant_runs(variant, yoco_runs, pissa):
    from fedmllm.fl import conflict_report

    out, sim, result = yoco_runs[variant]
    (row,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert row["variant"] == variant and row["init"] == "pissa"
    assert all(math.isfinite(v) for v in row["train_loss"].values())
    # the logged conflict rates are those of the uploads (and of their updates)
    uploads = [u.state for u in sim.updates]
    for logged, want in ((row["conflict"], conflict_report(uploads)),
                         (row["conflict_update"], conflict_report(uploads, sim.initial_state))):
        for role in ("lora_A", "lora_B"):
            assert logged[role] == pytest.approx(want[role])
            assert 0.0 <= logged[role]["C"] <= 0.5 and logged[role]["num_clients"] == N_CLIENTS
    adapter = state_bytes(pissa[1])
    # every client uploads its adapter and receives the merged one (same size, rank r)
    assert row["bytes_uploaded"] == N_CLIENTS * adapter
    assert row["bytes_downloaded"] == N_CLIENTS * state_bytes(sim.global_state) == \
        N_CLIENTS * adapter
    # drift from the shared start, per client, by hand
    from fedmllm.fl import lora_pairs

    for u in sim.updates:
        (ka, kb), = lora_pairs(u.state).values()
        a, b = u.state[ka].double(), u.state[kb].double()
        a0, b0 = sim.initial_state[ka].double(), sim.initial_state[kb].double()
        got = row["drift"][str(u.client_id)]
        assert got["dB_rel"] == pytest.approx(float((b - b0).norm() / b0.norm()))
        assert got["dW_rel"] == pytest.approx(float((b @ a - b0 @ a0).norm() / (b0 @ a0).norm()))
    assert row["upload_unit"] == "1x1x1" and row["upload_units"] == N_CLIENTS
    assert 0.0 <= result.final["final"]["accuracy"] <= 1.0
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


def test_variants_differ_where_they_should(yoco_runs):
    states = {v: yoco_runs[v][1].global_state for v in VARIANTS}
    kb = next(k for k in states["init"] if "lora_B" in k)
    ka = next(k for k in states["init"] if "lora_A" in k)
    # the sign penalty changes training of B; the PCA merge changes the merged A
    assert not torch.equal(states["init"][kb], states["init_b"][kb])
    assert torch.equal(states["init_ba"][kb], states["full"][kb])
    assert not torch.allclose(states["init_ba"][ka], states["full"][ka])


def test_saved_pissa_adapter_loads_on_original_base(pissa, yoco_runs):
    from peft import PeftModel

    tmp_path, sim, _ = yoco_runs["full"]
    bundle, _, data = pissa
    bundle.adapter.set(sim.global_state)
    batch = sample_batch(bundle, data)
    merged = logits(bundle.model, batch)
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert cfg["r"] == 16 and cfg["init_lora_weights"] is True  # [A; A0], [B, -B0]
    loaded = PeftModel.from_pretrained(base_model(bundle), tmp_path / "adapter")
    torch.testing.assert_close(logits(loaded, batch), merged, **tol(bundle))
    assert not torch.allclose(logits(base_model(bundle), batch), merged, atol=1e-6)


def test_oneshot_fedavg_is_weighted_mean(plain, tmp_path):
    sim, result = run(plain, tmp_path, "fl.algorithm=oneshot", "fl.yoco.method=fedavg")
    row = result.rows[0]
    assert row["init"] == "default" and row["variant"] is None
    assert row["bytes_uploaded"] == N_CLIENTS * state_bytes(plain[1])
    assert set(row["conflict"]) == {"lora_A", "lora_B"}
    assert 0.0 <= result.final["final"]["accuracy"] <= 1.0
    n = torch.tensor([float(u.num_examples) for u in sim.updates])
    for key, merged in sim.global_state.items():
        stack = torch.stack([u.state[key] for u in sim.updates]).cpu()
        merged = merged.cpu()
        torch.testing.assert_close(merged, (n[:, None, None] * stack).sum(0) / n.sum())
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_ensemble_through_simulator_dispatch(plain, tmp_path):
    bundle, pristine, data = plain
    bundle.adapter.set(pristine)
    cfg = base_cfg(tmp_path, "fl.algorithm=oneshot", "fl.yoco.method=ensemble")
    result = run_experiment(cfg, bundle=bundle, data=data)
    assert result.final["method"] == "ensemble" and result.final["totals"]["rounds"] == 1
    row = result.rows[0]
    assert row["ensemble_cost"]["forward_passes_per_sample"] == N_CLIENTS
    assert 0.0 <= result.final["final"]["accuracy_vote"] <= 1.0
    assert not (tmp_path / "adapter").exists()


def test_ensemble_averages_probabilities_and_votes(plain, tmp_path):
    sim, result = run(plain, tmp_path, "fl.yoco.method=ensemble")
    final = result.final["final"]
    preds = [sim.session.evaluate(u.state, return_predictions=True)["_predictions"]["image_text"]
             for u in sim.updates]
    samples = preds[0][0]
    y = torch.tensor([s.label for s in samples])
    probs = torch.stack([p[1]["probs"] for p in preds])  # clients x samples x options
    assert final["accuracy"] == pytest.approx(float((probs.mean(0).argmax(-1) == y).double()
                                                    .mean()))
    votes = torch.nn.functional.one_hot(probs.argmax(-1), probs.shape[-1]).sum(0).double()
    voted = (votes + 1e-6 * probs.mean(0).double()).argmax(-1)  # ties: the mean probability
    assert final["accuracy_vote"] == pytest.approx(float((voted == y).double().mean()))


def _dense_merged_logits(bundle, sim, batch, pissa_init: bool):
    """Independent reference: the original base with ``s (sum_i w_i B_i A_i - [pissa] B0 A0)``
    added to every target weight, computed densely."""
    from fedmllm.fl import lora_module, lora_role

    model = base_model(bundle)
    lora = sim.session.plan.lora
    scale = lora.alpha / lora.r
    n = torch.tensor([float(u.num_examples) for u in sim.updates], dtype=torch.float64)
    w = n / n.sum()
    with torch.no_grad():
        for ka in sim.updates[0].state:
            if lora_role(ka) != "A":
                continue
            kb = ka.replace("lora_A", "lora_B")
            delta = sum(wi * (u.state[kb].double() @ u.state[ka].double())
                        for wi, u in zip(w, sim.updates, strict=True))
            if pissa_init:
                delta = delta - sim.initial_state[kb].double() @ sim.initial_state[ka].double()
            name = lora_module(ka).replace("base_model.model.", "", 1)
            weight = model.get_submodule(name).weight
            weight += (scale * delta).to(weight)
    return logits(model, batch)


@pytest.mark.parametrize("which", ["plain", "pissa"])
def test_exact_full_rank_merge_is_lossless_and_loads_on_original_base(which, plain, pissa,
                                                                       tmp_path):
    from peft import PeftModel

    shared = {"plain": plain, "pissa": pissa}[which]
    extra = ["fl.yoco.method=exact"] + (["fl.yoco.init=pissa"] if which == "pissa" else [])
    sim, result = run(shared, tmp_path, *extra)
    r = sim.session.plan.lora.r
    rank = N_CLIENTS * r + (r if which == "pissa" else 0)
    assert {t.shape[0] for k, t in sim.global_state.items() if "lora_A" in k} == {rank}
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert cfg["r"] == rank
    assert cfg["lora_alpha"] == pytest.approx(sim.session.plan.lora.alpha * rank / r)
    bundle = shared[0]
    batch = sample_batch(bundle, shared[2])
    reference = _dense_merged_logits(bundle, sim, batch, which == "pissa")
    # the run's own (rank-N r) model, the saved adapter on the original base, and the dense
    # reference agree; and the merge changed the model
    torch.testing.assert_close(logits(sim.bundle.model, batch), reference, **tol(bundle))
    loaded = PeftModel.from_pretrained(base_model(bundle), tmp_path / "adapter")
    torch.testing.assert_close(logits(loaded, batch), reference, **tol(bundle))
    assert not torch.allclose(logits(base_model(bundle), batch), reference, atol=1e-5)
    assert result.final["totals"]["adapter_bytes"] > N_CLIENTS * state_bytes(shared[1]) - 1


def test_product_rank_full_only_for_exact(plain, tmp_path):
    from fedmllm.config import ConfigError

    with pytest.raises(ConfigError, match="fl.yoco.product_rank"):
        run(plain, tmp_path, "fl.yoco.method=ties", "fl.yoco.product_rank=full")
    sim, _ = run(plain, tmp_path, "fl.yoco.method=exact", "fl.yoco.product_rank=client")
    ranks = {t.shape[0] for k, t in sim.global_state.items() if "lora_A" in k}
    assert ranks == {sim.session.plan.lora.r}


def test_select_epochs_on_a_client_held_out_split(plain, tmp_path):
    sim, result = run(plain, tmp_path, "fl.yoco.method=fedavg", "fl.yoco.select_epochs=[0.5,2]",
                      "fl.yoco.val_fraction=0.25")
    row = result.rows[0]
    data = plain[2]
    for k, u in enumerate(sim.updates):
        n = len(data.clients[k])
        held = max(1, round(0.25 * n))
        assert row["held_out"][str(k)] == held
        client = sim.executor.client(k)
        assert u.num_examples == len(client.train_items) == n - held
        train_ids = {s.id for s in client.train_items.samples}  # encoded per batch
        assert not train_ids & {s.id for s in client.val_items.samples}
        losses = {float(e): v for e, v in row["val_loss"][str(k)].items()}
        assert set(losses) == {0.5, 2.0}
        assert row["local_epochs"][str(k)] == min(losses, key=losses.get)
        # the upload is the chosen candidate: its held-out loss, recomputed, is the minimum
        sim.bundle.adapter.set(u.state)
        assert client.validation_loss() == pytest.approx(min(losses.values()), rel=1e-4)
    # the compute counts both candidates' steps of every client (0.5 + 2 epochs each)
    from fedmllm.engine.client import local_steps

    tried = {str(k): sum(local_steps(len(sim.executor.client(k).train_items), 4, 1, epochs=e)
                         for e in (0.5, 2.0)) for k in range(len(sim.updates))}
    assert row["local_steps_tried"] == tried
    assert result.final["compute"] == {"client_steps": sum(tried.values()),
                                       "client_runs": len(sim.updates)}
    # validation_loss against a per-sample cross-entropy over the answer tokens
    from fedmllm.model.collate import collate

    b, k = sim.bundle, 0
    b.adapter.set(sim.updates[k].state)
    b.model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for e in sim.executor.client(k).val_items:
            batch = {n: v.to(b.device) for n, v in
                     collate([e], b.processor.tokenizer.pad_token_id).items()}
            lg = b.model(**batch).logits[0, :-1].float()
            labels = batch["labels"][0, 1:]
            keep = labels != -100
            total += float(torch.nn.functional.cross_entropy(lg[keep], labels[keep],
                                                             reduction="sum"))
            count += int(keep.sum())
    assert sim.executor.client(k).validation_loss() == pytest.approx(total / count, rel=1e-3)


def test_select_epochs_rejects_bad_values(plain, tmp_path):
    from fedmllm.config import ConfigError

    with pytest.raises(ConfigError, match="fl.yoco.select_epochs"):
        run(plain, tmp_path, "fl.yoco.method=fedavg", "fl.yoco.select_epochs=[0]")
    with pytest.raises(ConfigError, match="fl.yoco.val_fraction"):
        run(plain, tmp_path, "fl.yoco.method=fedavg", "fl.yoco.select_epochs=[1]",
            "fl.yoco.val_fraction=1.5")


def test_select_lr_per_client_on_its_held_out_split(plain, tmp_path):
    """Each client trains one adapter per (epochs, lr) candidate and uploads the one with the
    lowest held-out loss; the choice is recorded per client."""
    sim, result = run(plain, tmp_path, "fl.yoco.method=fedavg", "fl.yoco.select_lr=[0.0001,0.01]",
                      "train.local_lr_schedule=cosine", "train.local_warmup_ratio=0.1")
    row = result.rows[0]
    for k, u in enumerate(sim.updates):
        losses = row["val_loss"][str(k)]
        assert set(losses) == {"1@0.0001", "1@0.01"}
        best = min(losses, key=losses.get)
        assert row["client_lr"][str(k)] == u.metrics["lr"] == float(best.split("@")[1])
        sim.bundle.adapter.set(u.state)
        assert sim.executor.client(k).validation_loss() == pytest.approx(losses[best], rel=1e-4)
    # the two candidates differ: a rate 100 x larger moves the adapter further
    client = sim.executor.client(0)
    small, large = client.train_for(1, 1e-4), client.train_for(1, 1e-2)
    start = sim.session.initial_state
    move = [sum(float((u.state[key] - start[key]).norm()) for key in start)
            for u in (small, large)]
    assert move[1] > 5 * move[0]
    from fedmllm.config import ConfigError

    with pytest.raises(ConfigError, match="fl.yoco.select_lr"):
        run(plain, tmp_path / "bad", "fl.yoco.method=fedavg", "fl.yoco.select_lr=[0]")


def test_upload_cache_shares_one_training_between_merges(plain, tmp_path):
    """Runs that differ in the merge only load the first run's uploads (bit for bit the ones
    a fresh run trains); a run that trains differently trains again."""
    cache = tmp_path / "cache"
    _, r1 = run(plain, tmp_path / "a", "fl.yoco.method=fedavg", f"fl.yoco.upload_cache={cache}")
    assert r1.rows[0]["uploads_loaded_from"] is None
    second, r2 = run(plain, tmp_path / "b", "fl.yoco.method=ties", f"fl.yoco.upload_cache={cache}")
    assert r2.rows[0]["uploads_loaded_from"] is not None
    fresh, _ = run(plain, tmp_path / "c", "fl.yoco.method=ties")
    for u2, u3 in zip(second.updates, fresh.updates, strict=True):
        assert u2.num_examples == u3.num_examples
        for key in u3.state:
            torch.testing.assert_close(u2.state[key].cpu(), u3.state[key].cpu(), rtol=0, atol=0)
    assert r2.final["final"]["accuracy"] == \
        json.loads((tmp_path / "c" / "summary.json").read_text())["final"]["accuracy"]
    _, r4 = run(plain, tmp_path / "d", "fl.yoco.method=ties", "train.lr=0.001",
                    f"fl.yoco.upload_cache={cache}")
    assert r4.rows[0]["uploads_loaded_from"] is None
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 2


def test_training_key_ignores_the_merge_only():
    from fedmllm.config import load_config
    from fedmllm.engine.factory import plan_run
    from fedmllm.runtime.uploads import training_inputs, training_key

    def key(*extra):
        cfg = load_config(None, ["fl.algorithm=yoco", "lora.modules=[q_proj,v_proj]", *extra])
        return training_key(training_inputs(cfg, plan_run(cfg)))

    base = key("fl.yoco.method=fedavg")
    for same in (["fl.yoco.method=ties", "fl.yoco.density=0.3"], ["fl.yoco.method=ensemble"],
                 ["fl.yoco.method=fedadam", "fl.strategy.eta=0.1"],
                 ["fl.yoco.method=fedavg", "eval.views=[text_only]", "eval.batch_size=3"],
                 ["fl.yoco.method=local", "output.plot=false"]):
        assert key(*same) == base, same
    assert key("fl.yoco.method=yoco") != base  # PiSSA start and the YOCO objective
    assert key("fl.yoco.variant=full") == key("fl.yoco.variant=init_ba", "fl.yoco.pca_k=2") \
        != key("fl.yoco.variant=init_b") != key("fl.yoco.variant=init")
    for other in ("train.lr=0.001", "seed=1", "fl.yoco.local_epochs=2", "data.alpha=5",
                  "fl.yoco.select_lr=[0.001]"):
        assert key("fl.yoco.method=fedavg", other) != base, other


def test_oneshot_row_reports_the_base_spectrum_and_drift(plain, tmp_path):
    sim, result = run(plain, tmp_path, "fl.yoco.method=fedavg")
    row = result.rows[0]
    spec = row["spectrum"]
    assert spec["r"] == sim.session.plan.lora.r and spec["modules"]
    from fedmllm.engine.bundle import base_weights

    weights = base_weights(sim.bundle, sim.session.initial_state)
    name, w = next(iter(weights.items()))
    s = torch.linalg.svdvals(w)
    r = spec["r"]
    assert spec["modules"][name]["gap"] == pytest.approx(float(s[r - 1] / s[r]))
    # zero-B LoRA: the relative drift is undefined, the absolute one is there
    assert all(d["dB_rel"] is None and d["dB"] > 0 for d in row["drift"].values())


def test_base_weights_undo_the_pissa_residual(pissa):
    from fedmllm.engine.bundle import base_weights

    bundle, pristine, _ = pissa
    original = dict(base_model(bundle).named_parameters())
    weights = base_weights(bundle, pristine)
    assert weights
    for name, w in weights.items():
        tail = name[name.index("language_model"):].split(".", 1)[1] + ".weight"
        key = next(k for k in original if "language_model" in k and k.endswith(tail))
        torch.testing.assert_close(w.float(), original[key].detach().float(), atol=1e-5,
                                   rtol=1e-5)
