"""Secure aggregation over Flower: a round's updates through SecAgg+, the server sees the mean.

With ``fl.secure_aggregation = true`` a Flower run's rounds go through Flower's SecAgg+
(Bell et al., "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS 2020):
the server drives the four stages of ``flwr.server.workflow.SecAggPlusWorkflow`` over the
grid (setup: public keys; share keys: each client's secrets split among its neighbours;
collect masked vectors: the local training, and each client's update quantized and masked;
unmask: the survivors' shares remove the masks) and each node's ``train`` handler runs under
``flwr.client.mod.secaggplus_mod``. What the server obtains is

    D = sum_i q_i (y_i - x) / sum_i q_i     over the clients i that sent a masked update,

``q_i`` the weight the mod quantizes (``n_i / max_weight``, with ``max_weight`` the largest
example count the nodes reported, or 1 for every client of an unweighted rule), and never
one ``y_i``. Clients send their *update* ``y_i - x``, not their adapter: a LoRA update is far
smaller than the adapter, so the clipping range (``fl.secagg.clipping_range``) and with it the
quantization step ``2 c / quantization_range`` can be small. The strategy's step takes ``D``
(:meth:`~fedmllm.engine.server.ServerRound.run_mean`).

Quantization error (Flower's ``quantize``: clip to ``[-c, c]``, scale by ``Q / 2c``, round
stochastically to an integer, so each client's coordinate is off by less than one step
``2c/Q``; its weight ``q_i`` is rounded to a multiple of ``1/Q``): per coordinate, with ``N``
survivors, ``W = sum_i q_i`` (at least 1 with the largest count as ``max_weight``),

    |D_secagg - D| < N (2c + max_i |y_i - x|) / (Q W)                   (:func:`error_bound`)

provided no coordinate of an update exceeds ``c`` (a node warns when one does: it is clipped).

The messages: the server's legacy strategy (:class:`_Nodes`) gives each node a ``FitIns``
whose parameters are its start state as one flat vector (the template's floating keys in
order; the layout travels beside it and the node checks it) and whose config is the round's
(configuration, round, learning rate, whether the rule is example-weighted); the node's reply
is a ``FitRes`` with its update as one flat float64 vector, its weight and its statistics
(:func:`~fedmllm.runtime.flower.wire.metrics_record`), which, like the example count, reach the
server in the clear; the mod masks the vector and removes it from the reply.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence

import numpy as np
import torch
from flwr.app import Context, Message
from flwr.serverapp import Grid

from ...fl import ClientUpdate, StateDict
from ..executor import ClientReply, ClientTask, SecureAggregate
from . import flwr_internals as fi
from .wire import metrics_from_record, metrics_record

log = logging.getLogger(__name__)

#: ``max_weight`` when a node did not report its example count (Flower's default).
FLOWER_MAX_WEIGHT = 1000.0


# ----------------------------------------------------------------------------- flat vectors

def float_keys(template: StateDict) -> list[str]:
    """The keys that travel through the protocol: the template's floating tensors, in order
    (non-floating ones keep their global value, as in every rule)."""
    return [k for k, t in template.items() if t.is_floating_point()]


def layout_of(template: StateDict) -> str:
    """The flat vector's layout, ``[[key, shape], ...]`` as JSON (what a node checks)."""
    return json.dumps([[k, list(template[k].shape)] for k in float_keys(template)])


def flatten(state: StateDict, keys: Sequence[str], dtype=torch.float64) -> np.ndarray:
    """``state``'s ``keys`` end to end as one numpy vector of ``dtype``."""
    return torch.cat([state[k].detach().to("cpu", dtype).reshape(-1) for k in keys]).numpy()


def unflatten(flat: np.ndarray, template: StateDict, keys: Sequence[str], device,
              dtype: torch.dtype | None = None) -> StateDict:
    """:func:`flatten` undone: ``keys`` shaped as in ``template``, in ``dtype`` (``None``:
    the template's), on ``device``; ``ValueError`` when the lengths do not match."""
    flat_t = torch.from_numpy(np.asarray(flat))
    sizes = [template[k].numel() for k in keys]
    if flat_t.ndim != 1 or flat_t.numel() != sum(sizes):
        raise ValueError(f"a flat vector of {flat_t.numel()} values for {sum(sizes)}")
    parts = torch.split(flat_t, sizes)
    return {k: p.reshape(template[k].shape).to(device, dtype or template[k].dtype)
            for k, p in zip(keys, parts, strict=True)}


def error_bound(num_clients: int, weight_sum: float, clipping_range: float,
                quantization_range: int, max_update: float) -> float:
    """The bound on ``|D_secagg - D|`` per coordinate (see the module docstring)."""
    return num_clients * (2 * clipping_range + max_update) / (quantization_range * weight_sum)


# ----------------------------------------------------------------------------- the node

def secagg_mod(msg: Message, ctxt: Context, call_next):
    """The ClientApp's ``train`` mod: a message of a SecAgg+ stage goes through Flower's
    ``secaggplus_mod`` (which calls the handler in the collect stage); any other message
    (a run without secure aggregation) straight to the handler."""
    from flwr.client.mod import secaggplus_mod

    if fi.carries_secaggplus(msg.content):
        return secaggplus_mod(msg, ctxt, call_next)
    return call_next(msg, ctxt)


def handle_secure_train(msg: Message, context: Context) -> Message:
    """SecAgg+'s collect stage on a node: train from the ``FitIns``' start state and reply
    with the ``FitRes`` of the update ``y - x`` (one float64 vector), the weight (the example
    count, or 1 for an unweighted rule) and the statistics."""
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

    from ...engine.client import train_round
    from ...engine.failpoints import failpoint
    from .client import get_worker

    t0 = time.perf_counter()
    fitins = fi.fitins_from_content(msg.content)
    conf = fitins.config
    worker = get_worker(str(conf["config"]), context.node_config)
    template = worker.initial_state
    if str(conf["layout"]) != layout_of(template):
        raise ValueError("the server's adapter layout differs from this node's model")
    keys = float_keys(template)
    flat = parameters_to_ndarrays(fitins.parameters)[0]
    start = {**template, **unflatten(flat, template, keys, worker.bundle.device)}
    failpoint(f"node_{worker.k}_training", int(conf["round"]))  # after the setup stages
    fit = train_round(worker.trainer, worker.cfg, worker.items, worker.k, int(conf["round"]),
                      float(conf["lr"]), start, {})
    fit.update.metrics["client_seconds"] = time.perf_counter() - t0
    delta = flatten(fit.update.state, keys) - flatten(start, keys)
    c = worker.cfg.fl.secagg.clipping_range
    clipped = int((np.abs(delta) > c).sum())
    if clipped:
        log.warning("round %s: %d coordinate(s) of this node's update exceed "
                    "fl.secagg.clipping_range = %g and are clipped (largest %.3g)",
                    conf["round"], clipped, c, float(np.abs(delta).max()))
    weight = fit.update.num_examples if bool(conf["weighted"]) else 1
    fitres = FitRes(status=Status(code=Code.OK, message="ok"),
                    parameters=ndarrays_to_parameters([delta]), num_examples=weight,
                    metrics=dict(metrics_record(fit.update)))
    return Message(fi.fitres_content(fitres), reply_to=msg)


# ----------------------------------------------------------------------------- the server

def _nodes_strategy():
    """The legacy strategy class the workflow drives (built lazily: ``flwr.server`` is
    imported only by a run that uses secure aggregation)."""
    from flwr.server.strategy import Strategy

    class _Nodes(Strategy):
        """Hands each node its own ``FitIns`` (``configure_fit``) and keeps what the workflow
        hands ``aggregate_fit``: the survivors' ``FitRes``, each holding the unmasked mean."""

        def __init__(self, fitins: dict[int, object], grid: Grid):
            self.fitins, self.grid, self.results = fitins, grid, []

        def configure_fit(self, server_round, parameters, client_manager):
            proxies = []
            for node, ins in self.fitins.items():
                proxy = fi.node_proxy(node, self.grid)
                client_manager.register(proxy)
                proxies.append((proxy, ins))
            return proxies

        def aggregate_fit(self, server_round, results, failures):
            self.results = list(results)
            return None, {}

        def initialize_parameters(self, client_manager):  # pragma: no cover - not used
            return None

        def configure_evaluate(self, server_round, parameters, client_manager):
            return []  # pragma: no cover

        def aggregate_evaluate(self, server_round, results, failures):
            return None, {}  # pragma: no cover

        def evaluate(self, server_round, parameters):
            return None  # pragma: no cover

    return _Nodes


def _fitins(cfg_text: str, t: ClientTask, keys: list[str], layout: str, weighted: bool):
    """Task ``t``'s ``FitIns``: its start state as one flat vector, the round's config."""
    from flwr.common import FitIns, ndarrays_to_parameters

    dtype = torch.float64 if any(t.start_state[k].dtype == torch.float64 for k in keys) \
        else torch.float32
    return FitIns(ndarrays_to_parameters([flatten(t.start_state, keys, dtype)]),
                  {"config": cfg_text, "round": t.round, "lr": float(t.lr),
                   "accepted-round": t.accepted_round, "weighted": weighted, "layout": layout})


def workflow_for(cfg, max_weight: float):
    """Flower's ``SecAggPlusWorkflow`` with ``fl.secagg``'s parameters (``timeout``, per
    stage: ``fl.round_timeout`` when unset)."""
    from flwr.server.workflow import SecAggPlusWorkflow

    sa = cfg.fl.secagg
    return SecAggPlusWorkflow(sa.num_shares, sa.reconstruction_threshold,
                              max_weight=max_weight, clipping_range=float(sa.clipping_range),
                              quantization_range=sa.quantization_range,
                              modulus_range=sa.modulus_range,
                              timeout=sa.timeout or cfg.fl.round_timeout)


def secure_fit(wire, cfg, cfg_text: str, tasks: Sequence[ClientTask], nodes: dict[int, int],
               examples: dict[int, int], template: StateDict, device,
               weighted: bool) -> tuple[list[ClientReply], SecureAggregate]:
    """One round of ``tasks`` through SecAgg+ on the nodes ``nodes`` (partition id -> node id;
    ``examples``: the example counts they reported) of the grid ``wire`` (a
    :class:`~fedmllm.runtime.flower.server.CountingGrid`, whose ``send_and_receive`` gives up
    after ``fl.secagg.timeout``): one reply per task (statistics only; ``update=None`` for a
    client that did not survive) and the survivors' mean update."""
    from flwr.common import parameters_to_ndarrays
    from flwr.server import LegacyContext, SimpleClientManager

    asked = [t for t in tasks if t.client_id in nodes]
    keys, layout = float_keys(template), layout_of(template)
    strategy = _nodes_strategy()({nodes[t.client_id]: _fitins(cfg_text, t, keys, layout,
                                                               weighted) for t in asked}, wire)
    counts = [examples.get(t.client_id) for t in asked]
    max_weight = 1.0 if not weighted else \
        float(max(counts)) if counts and None not in counts else FLOWER_MAX_WEIGHT
    r = tasks[0].round if tasks else 0
    context = LegacyContext(Context(run_id=0, node_id=0, node_config={},
                                    state=fi.legacy_round_state(r), run_config={}),
                            strategy=strategy, client_manager=SimpleClientManager())
    if len(asked) >= 2:
        workflow_for(cfg, max_weight)(wire, context)
    partition = {node: k for k, node in nodes.items()}
    survivors = {partition[proxy.node_id]: res for proxy, res in strategy.results}
    replies = []
    for t in tasks:
        node = nodes.get(t.client_id)
        res = survivors.get(t.client_id)
        update = None if res is None else ClientUpdate(
            state={}, num_examples=int(res.metrics["num-examples"]), client_id=t.client_id,
            metrics=metrics_from_record(res.metrics))
        replies.append(ClientReply(t.client_id, update, bytes_uploaded=wire.up.get(node, 0),
                                   bytes_downloaded=wire.down.get(node, 0)))
    if not survivors:
        return replies, SecureAggregate(None, halted=f"secure aggregation ended without an "
                                        f"aggregate ({len(asked)} client(s) reachable)")
    flat = parameters_to_ndarrays(next(iter(survivors.values())).parameters)[0]
    mean = unflatten(flat, template, keys, device, torch.float64)
    return replies, SecureAggregate(mean, sorted(survivors),
                                    sum(u.update.num_examples for u in replies if u.update))
