"""The ServerApp side of a Flower run: the engine's drivers with a Flower grid as their clients.

:func:`serve` is the whole ServerApp: it reads the configuration from the run config
(:mod:`.appconfig`), checks it and opens the output folder as ``fedmllm run`` does, and runs the
very same multi-round (or one-shot) driver, whose clients are the grid's nodes
(:class:`GridExecutor`) instead of this process's model. Sampling, the server round, central
evaluation, checkpoints and every output file are those of the simulation; a configuration
and seed give the same final adapter through both.

The ServerApp holds no client data: only the test set it evaluates on
(:func:`~fedmllm.data.build_test_data`). Nodes are known by their partition id, which each
reports once (a ``query`` message, which carries the run's configuration), with what its data
holds: the counts that ``data_manifest.json`` records and its held-out sample count. With
``eval.client_holdout`` the server asks the nodes holding samples out to score an adapter on
them (an ``evaluate`` message) and gets their metrics back. A round's messages carry the start
state, SCAFFOLD's server control, the round's learning rate and the run's resolved
configuration; replies carry the trained state, the control delta and metrics. Clients that do
not reply within ``fl.round_timeout`` (or reply with an error) are recorded as ``dropped`` and
the round goes on with the others; a node that comes back (a new node id for its partition id)
is used again from the next round. Bytes are counted from the arrays that crossed the wire.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import torch
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from ...config import Config, ConfigError
from ...engine.factory import build_strategy
from ...fl import ClientUpdate, StateDict
from ..executor import ClientReply, ClientTask, ExecutorFactory, SecureAggregate
from .wire import from_record, metrics_from_record, record_bytes, to_record

log = logging.getLogger(__name__)

#: How long to wait for a new node to say who it is.
QUERY_TIMEOUT = 120.0
#: How often to look for replies (``Grid.send_and_receive`` looks every 3 s).
PULL_INTERVAL = 0.25


def exchange(grid: Grid, messages: list[Message], timeout: float) -> list[tuple[Message, int]]:
    """Send ``messages`` and collect the replies that arrive within ``timeout`` seconds, as
    ``(reply, index of the message it answers)``. Like ``Grid.send_and_receive``, but looking
    every :data:`PULL_INTERVAL` seconds, and matching replies through the id of the message
    they answer (an error from the SuperLink about a lost node comes from the SuperLink's own
    node id, not the lost node's)."""
    if not messages:
        return []
    ids = list(grid.push_messages(messages))
    index = {mid: i for i, mid in enumerate(ids)}
    waiting, out = set(ids), []
    deadline = time.monotonic() + timeout
    while waiting:
        for reply in grid.pull_messages(list(waiting)):
            mid = reply.metadata.reply_to_message_id
            if mid in waiting:
                waiting.discard(mid)
                out.append((reply, index[mid]))
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(PULL_INTERVAL)
    return out


class CountingGrid(Grid):
    """``grid`` as Flower's SecAgg+ workflow sees it (:mod:`.secagg`): ``send_and_receive``
    is :func:`exchange` (replies looked for every :data:`PULL_INTERVAL`, matched by the
    message they answer, given up after ``timeout``), and the bytes of every message's
    records are counted per node, both ways (``up``, ``down``)."""

    def __init__(self, grid: Grid, timeout: float):
        self.grid, self.timeout = grid, timeout
        self.up: dict[int, int] = {}
        self.down: dict[int, int] = {}

    def set_run(self, run) -> None:  # pragma: no cover - the ServerApp set it already
        self.grid.set_run(run)

    @property
    def run(self):  # pragma: no cover
        return self.grid.run

    def create_message(self, *args, **kwargs) -> Message:  # pragma: no cover
        return self.grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        for m in messages:
            self._count(self.down, m.metadata.dst_node_id, m)
        out = []
        for reply, i in exchange(self, messages, self.timeout if timeout is None else timeout):
            if not reply.has_error():
                self._count(self.up, messages[i].metadata.dst_node_id, reply)
            out.append(reply)
        return out

    @staticmethod
    def _count(where: dict[int, int], node: int, message: Message) -> None:
        where[node] = where.get(node, 0) + sum(
            _config_bytes(r) if isinstance(r, ConfigRecord) else r.count_bytes()
            for r in message.content.values())


def _config_bytes(record: ConfigRecord) -> int:
    """A ``ConfigRecord``'s keys and values in bytes as ``ConfigRecord.count_bytes`` counts
    them (8 per number), which in flwr 1.42 fails on an empty list (SecAgg+ sends some)."""
    def size(v) -> int:
        if isinstance(v, list):
            return sum(size(x) for x in v)
        return len(v) if isinstance(v, (bytes, str)) else 8

    return sum(len(k) + size(v) for k, v in record.items())


class GridExecutor:
    """The clients of a run on a Flower grid: a
    :class:`~fedmllm.runtime.executor.ClientExecutor` for
    :class:`~fedmllm.runtime.simulation.MultiRoundRun` and (``oneshot``)
    :class:`~fedmllm.runtime.oneshot.OneShotRun`.

    Built with the run's configuration (sent with every message), its initial adapter (the
    template of the replies' keys, shapes and dtypes), the server's device and whether the
    rule weights clients by their example counts (``weighted``, for secure aggregation).
    """

    def __init__(self, grid: Grid, cfg: Config, template: StateDict, device, *,
                 oneshot: bool = False, on_reports: Callable[[dict], None] | None = None,
                 weighted: bool = True):
        self.grid, self.cfg, self.template, self.device = grid, cfg, template, device
        self.oneshot, self.on_reports, self.weighted = oneshot, on_reports, weighted
        self.cfg_text = cfg.to_yaml()
        self.nodes: dict[int, int] = {}  # partition id -> node id
        self.known: set[int] = set()  # node ids asked who they are
        self.in_sync: set[int] = set()  # partitions whose kept state matches the server's
        self.examples: dict[int, int] = {}  # partition id -> its reported training examples
        #: rounds go through SecAgg+ (:meth:`fit_secure`, see :mod:`.secagg`)
        self.secure_aggregation = cfg.fl.secure_aggregation and not oneshot

    # ------------------------------------------------------------------ nodes
    def refresh_nodes(self) -> None:
        """Ask every node not asked yet for its partition id and what its data holds (handed
        to ``on_reports`` as ``{partition id: {"num-examples", "held-out", "summary"}}``)."""
        new = [n for n in self.grid.get_node_ids() if n not in self.known]
        if not new:
            return
        content = RecordDict({"config": ConfigRecord({"config": self.cfg_text})})
        msgs = [Message(content, dst_node_id=n, message_type=MessageType.QUERY,
                        group_id="who") for n in new]
        reports = {}
        for reply, i in exchange(self.grid, msgs, QUERY_TIMEOUT):
            node = new[i]
            if reply.has_error():
                log.warning("node %d did not say who it is: %s", node, reply.error.reason)
                continue
            self.known.add(node)
            k = int(reply.content["node"]["partition-id"])
            n = reply.content["node"].get("num-partitions")
            if n is not None and int(n) != self.cfg.fl.num_clients:
                raise ConfigError(  # e.g. Flower's default simulated federation: 2 nodes
                    f"node {node} says num-partitions = {n}, the run has fl.num_clients = "
                    f"{self.cfg.fl.num_clients} (one SuperNode per client); size a simulation "
                    f"with: fedmllm flower simulation-config --clients {self.cfg.fl.num_clients}")
            if not 0 <= k < self.cfg.fl.num_clients:
                log.warning("node %d has partition id %d, outside fl.num_clients = %d; "
                            "not used", node, k, self.cfg.fl.num_clients)
                continue
            if self.nodes.get(k) != node:
                if k in self.nodes:
                    log.info("partition %d is now on node %d (was %d)", k, node, self.nodes[k])
                self.nodes[k] = node
                self.in_sync.discard(k)
            info = reply.content["node"]
            if "data" in info:
                self.examples[k] = int(info["num-examples"])
                reports[k] = {"num-examples": int(info["num-examples"]),
                              "held-out": int(info["held-out"]),
                              "summary": json.loads(str(info["data"]))}
        if reports and self.on_reports is not None:
            self.on_reports(reports)

    def evaluate(self, states: dict[int, StateDict]) -> dict[int, dict]:
        """Client-side evaluation: the node of each partition ``k`` scores ``states[k]`` on its
        own held-out samples and replies with its metrics; a partition without a node, or
        whose reply does not come within ``fl.round_timeout``, is left out."""
        self.refresh_nodes()
        asked = [k for k in sorted(states) if k in self.nodes]
        config = ConfigRecord({"config": self.cfg_text})
        msgs = [Message(RecordDict({"arrays": to_record(states[k]), "config": config}),
                        dst_node_id=self.nodes[k], message_type=MessageType.EVALUATE,
                        group_id="evaluate") for k in asked]
        out = {}
        for reply, i in exchange(self.grid, msgs, self.cfg.fl.round_timeout):
            if reply.has_error():
                log.warning("client %d: evaluation failed: %s", asked[i], reply.error.reason)
                continue
            out[asked[i]] = json.loads(str(reply.content["metrics"]["client-eval"]))
        return out

    # ------------------------------------------------------------------ the executor
    def fit(self, tasks: Sequence[ClientTask]) -> Iterator[ClientReply]:
        """Send every task whose client has a node, wait up to ``fl.round_timeout`` for the
        replies; yield one reply per task, in task order (``update=None``: none in time, or an
        error), with the bytes that crossed the wire."""
        self.refresh_nodes()
        asked = [t for t in tasks if t.client_id in self.nodes]
        messages, sent = [], {}
        for t in asked:
            message, sent[t.client_id] = self._message(t)
            messages.append(message)
        replies: dict[int, ClientReply] = {}
        for reply, i in exchange(self.grid, messages, self.cfg.fl.round_timeout):
            t = asked[i]
            if reply.has_error():
                log.warning("%s: client %d replied with an error: %s",
                            "one-shot" if self.oneshot else f"round {t.round}", t.client_id,
                            reply.error.reason)
                self.in_sync.discard(t.client_id)  # e.g. it lost its state: send it next time
                continue
            replies[t.client_id] = self._reply(reply, t, sent[t.client_id])
            self.in_sync.add(t.client_id)
        for t in tasks:
            yield replies.get(t.client_id) or ClientReply(
                t.client_id, None, bytes_uploaded=0, bytes_downloaded=sent.get(t.client_id, 0))

    def fit_secure(self, tasks: Sequence[ClientTask]) -> tuple[list[ClientReply],
                                                              SecureAggregate]:
        """The round's tasks through SecAgg+ (:func:`.secagg.secure_fit`): one reply per task
        with the client's statistics only, and the survivors' mean update."""
        from .secagg import secure_fit

        self.refresh_nodes()
        wire = CountingGrid(self.grid, self.cfg.fl.secagg.timeout or self.cfg.fl.round_timeout)
        return secure_fit(wire, self.cfg, self.cfg_text, tasks, self.nodes, self.examples,
                          self.template, self.device, self.weighted)

    def _message(self, t: ClientTask) -> tuple[Message, int]:
        """The message of task ``t`` and the bytes of its arrays. A one-shot client gets the
        configuration only (it derives the shared initial adapter itself); a round's client
        gets the start state, SCAFFOLD's server control, and its kept state when its node may
        not hold it."""
        node = self.nodes[t.client_id]
        if self.oneshot:
            content = RecordDict({"config": ConfigRecord({"config": self.cfg_text})})
            return Message(content, dst_node_id=node, message_type=f"{MessageType.TRAIN}.oneshot",
                           group_id="oneshot"), 0
        records = {"arrays": to_record(t.start_state)}
        if "control" in t.server_extras:
            records["control"] = to_record(t.server_extras["control"])
        if t.client_state and t.client_id not in self.in_sync:
            records["restore"] = to_record(t.client_state)
        down = record_bytes(*records.values())
        records["config"] = ConfigRecord({
            "config": self.cfg_text, "round": t.round, "lr": float(t.lr),
            "accepted-round": t.accepted_round})
        return Message(RecordDict(records), dst_node_id=node, message_type=MessageType.TRAIN,
                       group_id=str(t.round)), down

    def _reply(self, reply: Message, t: ClientTask, down: int) -> ClientReply:
        """Task ``t``'s reply as the client's update; its kept state is the task's
        ``c_i + dc``, the arithmetic the client itself does (the server's mirror of it)."""
        content, k = reply.content, t.client_id
        state = _received(content["arrays"], self.template, self.device)
        extras, up, client_state = {}, record_bytes(content["arrays"]), {}
        if "control_delta" in content:
            delta = _received(content["control_delta"], self.template, self.device,
                              float32=True)
            extras["control_delta"] = delta
            up += record_bytes(content["control_delta"])
            mirror = t.client_state
            client_state = {key: dc.clone() if key not in mirror else mirror[key] + dc
                            for key, dc in delta.items()}
        m = content["metrics"]
        update = ClientUpdate(state=state, num_examples=int(m["num-examples"]), client_id=k,
                              extras=extras, metrics=metrics_from_record(m))
        return ClientReply(k, update, client_state, bytes_uploaded=up, bytes_downloaded=down)


def grid_clients(grid: Grid) -> ExecutorFactory:
    """What a driver takes as ``clients`` to train on ``grid``'s nodes: a
    :class:`GridExecutor` built from the run's session, which learns what the nodes hold
    (the session's ``data_manifest.json``, its held-out counts) and scores its client-side
    evaluation on them."""
    def build(session) -> GridExecutor:
        secure = session.cfg.fl.secure_aggregation
        executor = GridExecutor(grid, session.cfg, session.initial_state,
                                session.bundle.device, oneshot=session.plan.oneshot,
                                on_reports=session.record_clients,
                                weighted=build_strategy(session.plan).weighted if secure
                                else True)
        session.score_holdout = executor.evaluate
        executor.refresh_nodes()  # the nodes present now report before the first round
        return executor
    build.nodes_hold_data = True  # the server builds only its test side
    return build


def _received(record, template: dict, device, float32: bool = False) -> dict:
    """A reply's tensors, in the template's dtype where key and shape match (anything else is
    left for the server's validation to reject)."""
    state = from_record(record, None, device)
    for key, t in state.items():
        ref = template.get(key)
        if ref is not None and t.shape == ref.shape:
            state[key] = t.to(torch.float32 if float32 else ref.dtype)
    return state


def serve(grid: Grid, run_config: dict, console=None) -> None:
    """The ServerApp: run the configuration in ``run_config`` over ``grid`` to the end.

    ``resume=true`` continues the run folder ``output.dir`` with its own ``config.yaml`` (from
    its last checkpoint, or from the start when ``fedmllm flower local`` has just opened it).
    Round lines go to ``console`` (standard output by default, which Flower forwards to
    ``flwr run --stream`` / ``flwr log``).
    """
    from rich.console import Console

    from ...report.console import quiet_libraries
    from .. import load_resume_config, run_experiment
    from .appconfig import config_from_run

    quiet_libraries()
    cfg, resume, overwrite = config_from_run(run_config)
    if resume:
        if not cfg.output.dir:
            raise ConfigError("resume: set output.dir to the run folder to resume")
        # round lines on: the ServerApp's output is not a terminal, so no progress bar shows
        cfg = load_resume_config(cfg.output.dir, ["output.progress=true"])
    if console is None:
        console = Console(file=sys.stdout, highlight=False, soft_wrap=True)
    going_on = resume and (Path(cfg.output.dir) / "checkpoint").is_dir()
    console.print(f"fedmllm ServerApp: {'resuming' if going_on else 'starting'} "
                  f"{cfg.fl.algorithm} in {cfg.output.dir or '(a new folder under runs/)'}",
                  markup=False)
    result = run_experiment(cfg, console=console, resume=resume, overwrite=overwrite,
                            clients=grid_clients(grid))
    console.print(f"fedmllm ServerApp: finished; outputs in {result.out_dir}", markup=False)
