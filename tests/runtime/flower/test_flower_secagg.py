"""Secure aggregation (issue 24, item 3) without processes: the refusals, the quantization
error bound against Flower's own ``quantize``/``dequantize``, SecAgg+ itself over a loopback
grid (Flower's workflow and client mod, our messages, a node lost after the setup stage), and
the server round on the mean update alone.

The deployment (``fedmllm flower local``, the tiny model) is in
``test_flower_secagg_local.py``."""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest
import torch

pytest.importorskip("flwr")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

from flwr.app import Message
from flwr.clientapp import ClientApp
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.quantization import dequantize, quantize
from helpers.flower_loopback import LoopbackGrid, loopback_base
from helpers.flower_secagg import max_difference, round_bound, round_one_mean

from fedmllm.config import ConfigError, load_config
from fedmllm.engine.factory import plan_run
from fedmllm.engine.server import ServerRound
from fedmllm.fl import ClientUpdate, make_strategy
from fedmllm.runtime.executor import ClientTask
from fedmllm.runtime.flower import flwr_internals as fi
from fedmllm.runtime.flower import secagg
from fedmllm.runtime.flower.secagg import error_bound, flatten, float_keys, unflatten
from fedmllm.runtime.flower.server import CountingGrid

TINY = ["model.preset=tiny", "train.device=cpu", "fl.num_clients=4", "fl.clients_per_round=3"]


def planned(*overrides, over_flower=True):
    return plan_run(load_config(None, [*TINY, "fl.secure_aggregation=true", *overrides]),
                    over_flower=over_flower)


def refusal(*overrides, over_flower=True) -> str:
    with pytest.raises(ConfigError) as e:
        planned(*overrides, over_flower=over_flower)
    assert "\n" not in str(e.value)
    return str(e.value)


# ----------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("algorithm", ["fedavg", "fedavgm", "fedprox", "fedadagrad", "fedadam",
                                       "fedyogi"])
def test_the_rules_that_need_only_the_mean_are_planned(algorithm):
    assert planned(f"fl.algorithm={algorithm}").algorithm == algorithm


@pytest.mark.parametrize("algorithm, why", [
    ("median", "median of the individual updates"),
    ("trimmed_mean", "order of the individual updates"),
    ("krum", "distances between individual updates"),
    ("multikrum", "distances between individual updates"),
    ("bulyan", "distances between"),
    ("scaffold", "control-variate"),
    ("local", "nothing is aggregated"),
    ("zeroshot", "no training"),
])
def test_rules_that_need_each_update_are_refused_naming_why(algorithm, why):
    extra = ["fl.num_clients=8", "fl.clients_per_round=8"] if algorithm == "bulyan" else []
    msg = refusal(f"fl.algorithm={algorithm}", *extra)
    assert msg.startswith("fl.secure_aggregation:") and why in msg and "fedadam" in msg


def test_one_shot_runs_are_refused():
    assert "one-shot" in refusal("fl.algorithm=yoco")


def test_the_simulation_refuses_it_pointing_to_flower():
    msg = refusal(over_flower=False)
    assert "fedmllm flower local" in msg and "docs/flower.md" in msg


def test_server_side_clipping_is_refused():
    assert refusal("fl.strategy.clip_norm=1.0").startswith("fl.strategy.clip_norm:")


@pytest.mark.parametrize("mechanism, refused", [
    ("none", False), ("local", False), ("central_server", True), ("central_client", True),
    ("central_adaptive", True)])
def test_central_privacy_is_not_supported_yet(mechanism, refused):
    dp = [] if mechanism == "none" else [f"fl.privacy.mechanism={mechanism}",
                                         "fl.privacy.clipping_norm=1.0",
                                         "fl.privacy.noise_multiplier=0.1"]
    cfg = load_config(None, [*TINY, "fl.secure_aggregation=true", *dp])
    if not refused:
        plan_run(cfg, over_flower=True)
        return
    with pytest.raises(ConfigError, match="not supported yet"):
        plan_run(cfg, over_flower=True)


@pytest.mark.parametrize("overrides, key", [
    (["fl.clients_per_round=1"], "fl.clients_per_round"),
    (["fl.secagg.num_shares=2"], "fl.secagg.num_shares"),
    (["fl.secagg.num_shares=5"], "fl.secagg.num_shares"),  # more than the 3 per round
    (["fl.secagg.num_shares=1.5"], "fl.secagg.num_shares"),
    (["fl.secagg.num_shares=3", "fl.secagg.reconstruction_threshold=3"],
     "fl.secagg.reconstruction_threshold"),
    (["fl.secagg.reconstruction_threshold=1"], "fl.secagg.reconstruction_threshold"),
    (["fl.secagg.modulus_range=1000000"], "fl.secagg.modulus_range"),
    (["fl.secagg.quantization_range=2000000000"], "fl.secagg.quantization_range"),
])
def test_protocol_parameters_are_checked_before_a_run(overrides, key):
    assert refusal(*overrides).startswith(f"{key}:")


def test_config_show_checks_a_secure_configuration_as_a_flower_run(capsys):
    from fedmllm.cli import main

    assert main(["config", "show", "fl.secure_aggregation=true"]) == 0
    assert "secure_aggregation: true" in capsys.readouterr().out
    assert main(["config", "show", "fl.secure_aggregation=true", "fl.algorithm=krum"]) == 2
    assert "fl.secure_aggregation: krum needs" in capsys.readouterr().err


def test_off_by_default_and_nothing_is_refused_then():
    cfg = load_config(None, [*TINY, "fl.algorithm=median"])
    assert cfg.fl.secure_aggregation is False
    assert plan_run(cfg).algorithm == "median"


# ----------------------------------------------------------------------------- the error bound

def test_quantization_error_bound_holds_for_flowers_round_trip():
    """The workflow's arithmetic on Flower's own quantize/dequantize: each client quantizes
    ``q_i d_i`` (``q_i`` its weight, rounded to a multiple of 1/Q), the integers are summed,
    dequantized, shifted by ``-(N - 1) c`` and divided by ``sum_i q_i``."""
    gen = np.random.default_rng(0)
    c, q_range, n = 1.0, 2**22, 7
    counts = gen.integers(5, 60, size=n)
    deltas = [gen.normal(0, 0.01, size=20_000) for _ in range(n)]
    q = [round(k / counts.max() * q_range) / q_range for k in counts]
    total = sum(quantize([qi * d], c, q_range)[0].astype(np.int64) for qi, d in zip(
        q, deltas, strict=True))
    got = (dequantize([total], c, q_range)[0] - (n - 1) * c) / sum(q)
    exact = sum(k * d for k, d in zip(counts, deltas, strict=True)) / counts.sum()
    err = float(np.abs(got - exact).max())
    bound = error_bound(n, sum(q), c, q_range, max(float(np.abs(d).max()) for d in deltas))
    assert err < bound
    assert err > bound / 50  # the bound is the error's order, not a vacuous one


def test_flat_vectors_round_trip_and_check_their_length():
    state = {"a": torch.randn(3, 4), "step": torch.tensor(3), "b": torch.randn(5)}
    keys = float_keys(state)
    assert keys == ["a", "b"]
    back = unflatten(flatten(state, keys), state, keys, "cpu")
    assert all(torch.equal(back[k], state[k]) for k in keys) and back["a"].dtype == torch.float32
    with pytest.raises(ValueError, match="16 values for 17"):
        unflatten(np.zeros(16), state, keys, "cpu")


# ----------------------------------------------------------------------------- the protocol

TEMPLATE = {"lora_A": torch.randn(4, 8, generator=torch.Generator().manual_seed(1)),
            "lora_B": torch.zeros(8, 4)}
KEYS = float_keys(TEMPLATE)
EXAMPLES = {0: 12, 1: 30, 2: 7, 3: 21}


def delta_of(k: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + k)
    return {key: torch.randn(t.shape, generator=g, dtype=torch.float64) * 0.02
            for key, t in TEMPLATE.items()}


def synthetic_client_app() -> ClientApp:
    """A ClientApp under our SecAgg+ mod whose node ``k`` 'trains' to ``x + delta_of(k)``,
    replying as :func:`fedmllm.runtime.flower.secagg.handle_secure_train` does."""
    app = ClientApp()

    @app.train(mods=[secagg.secagg_mod])
    def train(msg, context):
        fitins = fi.fitins_from_content(msg.content)
        k = int(context.node_config["partition-id"])
        start = parameters_to_ndarrays(fitins.parameters)[0]
        assert np.array_equal(start, flatten(TEMPLATE, KEYS, torch.float32))
        weight = EXAMPLES[k] if fitins.config["weighted"] else 1
        fitres = FitRes(Status(Code.OK, "ok"), ndarrays_to_parameters(
            [flatten(delta_of(k), KEYS)]), weight,
            {"num-examples": EXAMPLES[k], "partition-id": k, "train_loss": 0.5 + k, "steps": 2})
        return Message(fi.fitres_content(fitres), reply_to=msg)

    return app


class SerialisingGrid(LoopbackGrid):
    """A loopback grid that hands each node a copy of its message, as a real grid's wire
    does (the SecAgg+ workflow sends one content object to every node); ``lose_at_collect``:
    nodes that die when the collect stage (the training) reaches them."""

    def __init__(self, *args, lose_at_collect=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.lose_at_collect = set(lose_at_collect)

    def push_messages(self, messages):
        messages = [copy.deepcopy(m) for m in messages]
        for m in messages:
            if m.metadata.dst_node_id in self.lose_at_collect and \
                    "fitins.config" in m.content.config_records:
                self.dead.add(m.metadata.dst_node_id)
        return super().push_messages(messages)

    def pull_messages(self, message_ids):
        replies = super().pull_messages(message_ids)
        self.received = [*getattr(self, "received", []), *replies]
        return replies


def secure_round(clients, weighted=True, lose=(), timeout=1.0, **secagg_keys):
    grid = SerialisingGrid(synthetic_client_app(),
                           [{"partition-id": k} for k in range(4)], lose_at_collect=lose)
    cfg = load_config(None, [f"fl.round_timeout={timeout}", *[
        f"fl.secagg.{k}={v}" for k, v in secagg_keys.items()]])
    tasks = [ClientTask(k, 1, TEMPLATE, 0.1) for k in clients]
    nodes = {k: k + 1 for k in range(4)}
    return secagg.secure_fit(CountingGrid(grid, timeout), cfg, "cfg", tasks, nodes, EXAMPLES,
                             TEMPLATE, "cpu", weighted)


def plain_mean(clients, weighted=True):
    w = {k: EXAMPLES[k] if weighted else 1 for k in clients}
    return {key: sum(w[k] * delta_of(k)[key] for k in clients) / sum(w.values())
            for key in KEYS}


def max_error(mean, clients, weighted=True):
    exact = plain_mean(clients, weighted)
    return max(float((mean[k] - exact[k]).abs().max()) for k in KEYS)


def synthetic_bound(clients, weighted=True, c=1.0, q_range=2**22):
    weights = [EXAMPLES[k] / max(EXAMPLES[j] for j in clients) if weighted else 1.0
               for k in clients]
    biggest = max(float(delta_of(k)[key].abs().max()) for k in clients for key in KEYS)
    return error_bound(len(clients), sum(weights), c, q_range, biggest)


@pytest.mark.parametrize("weighted", [True, False])
def test_secure_aggregation_gives_the_mean_within_the_bound(weighted):
    clients = [0, 1, 3]
    replies, agg = secure_round(clients, weighted)
    assert agg.clients == clients and agg.num_examples == sum(EXAMPLES[k] for k in clients)
    assert agg.mean_delta["lora_A"].dtype == torch.float64
    assert max_error(agg.mean_delta, clients, weighted) < synthetic_bound(clients, weighted)
    # the clients' statistics reach the server, their states never do
    assert [r.client_id for r in replies] == clients
    assert all(r.update.state == {} and r.update.metrics["train_loss"] == 0.5 + r.client_id
               for r in replies)
    assert all(r.bytes_uploaded > 8 * TEMPLATE["lora_A"].numel() for r in replies)


def test_a_coarser_quantization_gives_a_larger_error_still_within_its_bound():
    clients = [0, 1, 2, 3]
    _, fine = secure_round(clients)
    _, coarse = secure_round(clients, quantization_range=2**12, clipping_range=0.5)
    err_fine, err_coarse = max_error(fine.mean_delta, clients), max_error(coarse.mean_delta,
                                                                           clients)
    assert err_fine < err_coarse < synthetic_bound(clients, c=0.5, q_range=2**12)


def test_a_node_lost_after_the_setup_stage_leaves_the_others_mean():
    clients = [0, 1, 2, 3]
    replies, agg = secure_round(clients, lose={3})  # node 3 holds partition 2
    assert agg.clients == [0, 1, 3]
    assert [r.client_id for r in replies if r.update is None] == [2]
    survivors = [0, 1, 3]
    assert max_error(agg.mean_delta, survivors) < synthetic_bound(survivors)


@pytest.mark.slow
def test_the_tiny_model_through_secagg_over_a_loopback_grid(tmp_path, tiny_dir):
    """The App end to end in one process: the round's mean update within the bound of the
    plain run's, and no client reply holding an array (only masked integers)."""
    from fedmllm.runtime.flower.app import client_app
    from fedmllm.runtime.flower.server import serve

    base = [*loopback_base(3, eval_every=2), "fl.clients_per_round=3"]
    plain, secure = tmp_path / "plain", tmp_path / "secure"
    grids = {}
    for out, extra in ((plain, []), (secure, ["fl.secure_aggregation=true"])):
        grids[out] = SerialisingGrid(client_app, [{"partition-id": k, "num-partitions": 3}
                                                  for k in range(3)])
        serve(grids[out], {"overrides": " ".join([*base, *extra, f"output.dir={out}"])})
    (d_plain, slack), (d_secure, _) = (round_one_mean(o, "fedavg") for o in (plain, secure))
    assert max_difference(d_plain, d_secure) <= round_bound(secure, [0, 1, 2]) + slack
    rows = [[json.loads(x) for x in (o / "metrics.jsonl").read_text().splitlines()]
            for o in (plain, secure)]
    assert rows[0][0]["train_loss"] == rows[1][0]["train_loss"]
    trained = [m for m in grids[secure].received if not m.has_error()
               and "fitres.num_examples" in m.content.metric_records]
    assert len(trained) == 6  # 3 clients x 2 rounds
    assert all(len(r) == 0 for m in trained for r in m.content.array_records.values())
    assert all(m.content.config_records["secaggplus_configs"]["masked_params"]
               for m in trained)


def test_too_few_survivors_for_the_threshold_end_the_round_without_an_aggregate():
    replies, agg = secure_round([0, 1, 2], lose={1, 2}, reconstruction_threshold=2)
    assert agg.mean_delta is None and "without an aggregate" in agg.halted
    assert all(r.update is None for r in replies)


# ----------------------------------------------------------------------------- the server round

def updates_and_mean(global_state):
    ups = [ClientUpdate({k: (global_state[k].double() + delta_of(i)[k]).float()
                         for k in KEYS}, EXAMPLES[i], client_id=i) for i in range(3)]
    mean = {k: sum(u.num_examples * (u.state[k].double() - global_state[k].double())
                   for u in ups) / sum(u.num_examples for u in ups) for k in KEYS}
    return ups, mean


@pytest.mark.parametrize("algorithm", ["fedavg", "fedadam", "fedavgm"])
def test_the_strategy_steps_on_the_mean_as_on_the_updates(algorithm):
    ups, mean = updates_and_mean(TEMPLATE)
    plain, secure = (ServerRound(make_strategy(algorithm)) for _ in range(2))
    a = plain.run(TEMPLATE, ups, 1).global_state
    b = secure.run_mean(TEMPLATE, mean, [0, 1, 2], sum(EXAMPLES[i] for i in range(3)), 1)
    assert b.accepted == [0, 1, 2] and b.skipped is None
    assert max(float((a[k] - b.global_state[k]).abs().max()) for k in KEYS) < 1e-6


def test_the_checks_that_remain_apply_to_the_mean():
    _, mean = updates_and_mean(TEMPLATE)
    server = ServerRound(make_strategy("fedavg"), max_update_norm=0.01, min_clients=2)
    assert "2 needed" in server.run_mean(TEMPLATE, mean, [0], 12, 1).skipped
    assert "exceeds the update bound" in server.run_mean(TEMPLATE, mean, [0, 1], 42, 1).skipped
    bad = {**mean, "lora_B": mean["lora_B"].clone().fill_(float("nan"))}
    out = ServerRound(make_strategy("fedavg")).run_mean(TEMPLATE, bad, [0, 1], 42, 1)
    assert "not finite" in out.skipped and out.global_state is TEMPLATE
    assert "needed" in server.run_mean(TEMPLATE, None, [], 0, 1).skipped
