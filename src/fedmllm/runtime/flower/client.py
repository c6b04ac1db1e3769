"""The ClientApp side of a Flower run: one federation site's training, with the engine.

A site is a SuperNode started with ``--node-config "partition-id=K num-partitions=N"`` (and
optionally ``data-dir="<prepared folder>"``). Its data is client ``K`` of the configured dataset
(:func:`~fedmllm.data.build_client_data`: drawn from the run's seed without building the
other clients' samples) or, with ``data-dir``, the file ``client_K.json`` of a folder written
by ``fedmllm prepare`` (the folder may hold only that file and ``manifest.json``). The run's
configuration arrives with every message (the server's resolved ``config.yaml``), so every
node trains with exactly the server's settings. With ``eval.client_holdout`` a node splits off
its held-out samples as the simulation does, trains on the rest, and scores the global model
on them when the server asks (an ``evaluate`` message), replying with the metrics only.

The server asks each node once who it is (a ``query`` message): the node replies with its
partition id and what its data holds (the counts of ``data_manifest.json``, the held-out
count), never a sample.

What a node keeps between messages (:class:`ClientWorker`: its samples; the model, loaded
once on first use; the trainer) lives for as long as the ClientApp process does. Its client
state (SCAFFOLD's ``c_i``) lives in the Flower context of the run, in two parts: the state of
the last round whose update the server *accepted*, and the state its last update would give.
The server says with each message which round it last accepted from this node
(``accepted-round``); the node then keeps the pending state only if that is its round. A node
that lost its state (a restarted SuperNode, a resumed run) gets it back from the server
(``restore``), which mirrors every accepted control delta; a node that cannot tell replies with
an error and the server sends the state with its next message.
"""

from __future__ import annotations

import json
import logging
import time
from functools import cached_property

from flwr.app import ConfigRecord, Context, Message, RecordDict

from ...config import Config, ConfigError, config_from_yaml
from ...data.errors import DataError
from ...data.flip import flip_labels
from ...engine.bundle import build_bundle
from ...engine.client import make_trainer, train_round
from ...engine.factory import RunPlan, build_attack, plan_run
from ...engine.failpoints import failpoint
from ...model.collate import EncodedSamples
from ..oneshot import OneShotClient
from ..session import holdout_metrics, holdout_split
from .wire import from_record, metrics_record, to_record

log = logging.getLogger(__name__)

STATE, PENDING, META = "fedmllm.client_state", "fedmllm.pending_state", "fedmllm.state_rounds"
#: Client objectives that keep a state between rounds.
STATEFUL = ("scaffold",)


def node_partition(node_config: dict) -> tuple[int, int | None, str | None]:
    """``(partition id, number of partitions or None, data folder or None)`` of a node."""
    try:
        k = int(node_config["partition-id"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError("node config: 'partition-id' (an integer) is required, e.g. "
                          "--node-config \"partition-id=0 num-partitions=2\"") from None
    n = node_config.get("num-partitions")
    data_dir = node_config.get("data-dir") or None
    return k, None if n is None else int(n), None if data_dir is None else str(data_dir)


class FederationSizeError(ConfigError):
    """A node's ``num-partitions`` is not the run's ``fl.num_clients``."""


class ProcessModel:
    """The model and trainer of one configuration in this process, built when first used and
    shared by every node the process hosts (Flower's simulation runs many virtual nodes in
    one Ray worker; a loopback grid runs them all in one process), as the in-process
    simulation shares one model between its clients: each round starts from the state the
    server sends, so no node sees another's training."""

    def __init__(self, cfg: Config, plan: RunPlan):
        self.cfg, self.plan = cfg, plan

    @cached_property
    def bundle(self):
        return build_bundle(self.plan)

    @cached_property
    def initial_state(self) -> dict:
        return self.bundle.adapter.get()

    @cached_property
    def trainer(self):
        self.initial_state  # noqa: B018  (the model first, as the simulation builds it)
        return make_trainer(self.cfg, self.plan, self.bundle)


class ClientWorker:
    """One node's data for one configuration, and this process's model (built once per
    process): the samples at once, the model when first trained or evaluated."""

    def __init__(self, model: ProcessModel, node_config: dict):
        cfg = model.cfg
        self.model, self.cfg, self.plan = model, cfg, model.plan
        k, n, data_dir = node_partition(node_config)
        if not 0 <= k < cfg.fl.num_clients:
            raise ConfigError(f"node config: partition-id {k} is outside the run's "
                              f"fl.num_clients = {cfg.fl.num_clients}")
        if n is not None and n != cfg.fl.num_clients:
            raise FederationSizeError(f"node config: num-partitions {n} differs from the run's "
                              f"fl.num_clients = {cfg.fl.num_clients}")
        self.k = k
        if data_dir is not None:
            from ...data import load_prepared_client

            samples = load_prepared_client(data_dir, k)
        else:
            from ...data import build_client_data

            samples = build_client_data(cfg.data, cfg.fl.num_clients, cfg.seed, k)
        if not samples:
            raise DataError(f"client {k} has no training samples")
        from ...data.manifest import count_summary

        self.summary = count_summary(samples)
        self.train, self.held = holdout_split(samples, cfg.eval.client_holdout, cfg.seed, k)
        if build_attack(cfg).flips_labels(k):  # fl.attack: this node flips only its own
            self.train = flip_labels(self.train)
        self.eval_cache: dict = {}  # the held-out samples' encoded prompts

    @property
    def bundle(self):
        return self.model.bundle

    @property
    def initial_state(self) -> dict:
        return self.model.initial_state

    @property
    def trainer(self):
        return self.model.trainer

    @cached_property
    def items(self) -> EncodedSamples:
        """The training samples, encoded per batch."""
        return EncodedSamples(self.bundle.processor, self.train, self.cfg.data.prompt_strategy,
                              self.cfg.train.max_seq_len)


_WORKERS: dict[tuple, ClientWorker] = {}


def get_worker(cfg_text: str, node_config: dict) -> ClientWorker:
    """The worker for this configuration and node (kept for the life of the process)."""
    key = (cfg_text, tuple(sorted((str(k), str(v)) for k, v in node_config.items())))
    if key not in _WORKERS:
        from ...report.console import quiet_libraries

        quiet_libraries()
        for old in [k for k in _WORKERS if k[0] != cfg_text]:  # another run's: let it go
            del _WORKERS[old]
        # the process's plan and model of this run: shared by every node it hosts
        planned = next(iter(_WORKERS.values()), None)
        if planned is None:
            cfg = config_from_yaml(cfg_text, "the server's configuration")
            _WORKERS[key] = ClientWorker(ProcessModel(cfg, plan_run(cfg, over_flower=True)),
                                          node_config)
        else:
            _WORKERS[key] = ClientWorker(planned.model, node_config)
    return _WORKERS[key]


# ----------------------------------------------------------------------------- client state

def _rounds(context: Context) -> dict[str, int]:
    meta = context.state.config_records.get(META)
    if meta is None:
        return {"committed": -1, "pending": -1}
    return {"committed": int(meta["committed"]), "pending": int(meta["pending"])}


def client_state(context: Context, msg: Message, worker: ClientWorker) -> dict:
    """This node's kept state for the message's round (see the module docstring)."""
    if worker.plan.objective not in STATEFUL:
        return {}
    accepted = int(msg.content["config"]["accepted-round"])
    rounds = _rounds(context)
    device = worker.bundle.device
    if "restore" in msg.content:
        state = from_record(msg.content["restore"], worker.initial_state, device)
        rounds["committed"] = accepted
    elif rounds["pending"] == accepted and accepted >= 0 and PENDING in context.state:
        state = from_record(context.state[PENDING], worker.initial_state, device)
        rounds["committed"] = accepted
    elif rounds["committed"] == accepted:
        state = from_record(context.state[STATE], worker.initial_state, device) \
            if STATE in context.state else {}
    else:
        raise RuntimeError(f"client state lost: the server accepted round {accepted}, this "
                           f"node holds round {rounds['committed']}")
    if state:
        context.state[STATE] = to_record(state)
    context.state[META] = ConfigRecord({"committed": rounds["committed"], "pending": -1})
    return state


def keep_pending(context: Context, round_: int, state: dict) -> None:
    """Remember the state this round's update gives, until the server accepts it."""
    context.state[PENDING] = to_record(state)
    rounds = _rounds(context)
    context.state[META] = ConfigRecord({"committed": rounds["committed"], "pending": round_})


# ----------------------------------------------------------------------------- handlers

def handle_query(msg: Message, context: Context) -> Message:
    """Who this node is: its partition id (and number of partitions, if configured); when the
    server sends the run's configuration, what its data holds: the manifest's counts
    (``data``: samples, labels, modalities, as JSON), its training and held-out sample
    counts."""
    k, n, _ = node_partition(context.node_config)
    info = {"partition-id": k}
    if n is not None:
        info["num-partitions"] = n
    if "config" in msg.content:
        try:
            worker = get_worker(str(msg.content["config"]["config"]), context.node_config)
        except FederationSizeError:  # the server stops the run with the fix's command
            return Message(RecordDict({"node": ConfigRecord(info)}), reply_to=msg)
        info.update({"num-examples": len(worker.train), "held-out": len(worker.held),
                     "data": json.dumps(worker.summary)})
    return Message(RecordDict({"node": ConfigRecord(info)}), reply_to=msg)


def handle_evaluate(msg: Message, context: Context) -> Message:
    """Client-side evaluation: the server's adapter state on this node's held-out samples;
    the reply holds the metrics (``n``, accuracy, macro-F1, AUROC as the simulation computes
    them, :func:`~fedmllm.runtime.session.holdout_metrics`), never a sample."""
    worker = get_worker(str(msg.content["config"]["config"]), context.node_config)
    worker.bundle.adapter.set(from_record(msg.content["arrays"], worker.initial_state,
                                          worker.bundle.device))
    metrics = holdout_metrics(worker.bundle, worker.cfg, worker.held, worker.eval_cache)
    return Message(RecordDict({"metrics": ConfigRecord({"client-eval": json.dumps(metrics)})}),
                   reply_to=msg)


def handle_train(msg: Message, context: Context) -> Message:
    """One round of local training from the server's start state."""
    t0 = time.perf_counter()
    conf = msg.content["config"]
    worker = get_worker(str(conf["config"]), context.node_config)
    device = worker.bundle.device
    r, lr = int(conf["round"]), float(conf["lr"])
    start = from_record(msg.content["arrays"], worker.initial_state, device)
    extras = {}
    if "control" in msg.content:
        extras["control"] = {k: v.float() for k, v in from_record(
            msg.content["control"], worker.initial_state, device).items()}
    state = client_state(context, msg, worker)
    failpoint(f"node_{worker.k}_training", r)  # a test's crash of this node in round r
    fit = train_round(worker.trainer, worker.cfg, worker.items, worker.k, r, lr, start, extras,
                      state)
    if worker.plan.objective in STATEFUL:
        keep_pending(context, r, fit.client_state)
    fit.update.metrics["client_seconds"] = time.perf_counter() - t0
    content = RecordDict({"arrays": to_record(fit.update.state),
                          "metrics": metrics_record(fit.update)})
    delta = fit.update.extras.get("control_delta")
    if delta is not None:
        content["control_delta"] = to_record(delta)
    return Message(content, reply_to=msg)


def handle_oneshot(msg: Message, context: Context) -> Message:
    """A one-shot run's single local training and upload (from the shared initial adapter)."""
    conf = msg.content["config"]
    worker = get_worker(str(conf["config"]), context.node_config)
    client = OneShotClient(worker.cfg, worker.plan, worker.trainer, worker.items, worker.k,
                           worker.initial_state)
    upload = client.upload()
    content = RecordDict({"arrays": to_record(upload.state),
                          "metrics": metrics_record(upload)})
    return Message(content, reply_to=msg)
