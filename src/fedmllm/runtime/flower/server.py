"""The ServerApp side of a Flower run: the engine's drivers with a Flower grid as their clients.

:func:`serve` is the whole ServerApp: it reads the configuration from the run config
(:mod:`.appconfig`), checks it and opens the output folder as ``fedmllm run`` does, and runs the
very same multi-round (or one-shot) driver, whose clients are the grid's nodes
(:class:`GridClients`) instead of this process's model. Sampling, the server round, central
evaluation, checkpoints and every output file are those of the simulation; a configuration
and seed give the same final adapter through both.

Nodes are known by their partition id, which each reports once (a ``query`` message). A
round's messages carry the start state, SCAFFOLD's server control, the round's learning rate
and the run's resolved configuration; replies carry the trained state, the control delta and
metrics. Clients that do not reply within ``fl.round_timeout`` (or reply with an error) are
recorded as ``dropped`` and the round goes on with the others; a node that comes back (a new
node id for its partition id) is used again from the next round. Bytes are counted from the
arrays that crossed the wire.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import torch
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from ...engine.client import FitResult
from ...fl import ClientUpdate
from .wire import from_record, record_bytes, to_record

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


class GridClients:
    """A round's clients on a Flower grid (an executor for
    :class:`~fedmllm.runtime.simulation.MultiRoundRun` and
    :class:`~fedmllm.runtime.oneshot.OneShotRun`)."""

    def __init__(self, grid: Grid):
        self.grid = grid
        self.nodes: dict[int, int] = {}  # partition id -> node id
        self.known: set[int] = set()  # node ids asked who they are
        self.accepted_round: dict[int, int] = {}  # partition id -> last accepted round
        self.in_sync: set[int] = set()  # partitions whose kept state matches the server's
        self.run = None

    # ------------------------------------------------------------------ executor protocol
    def attach(self, run) -> None:
        self.run = run
        self.cfg = run.cfg
        self.cfg_text = run.cfg.to_yaml()

    def accepted(self, round_: int, client_ids: list[int]) -> None:
        for k in client_ids:
            self.accepted_round[k] = round_

    def state_dict(self) -> dict:
        return {"accepted_round": {str(k): r for k, r in self.accepted_round.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.accepted_round = {int(k): int(r) for k, r in
                               state.get("accepted_round", {}).items()}
        self.in_sync = set()  # the nodes of this (new) Flower run hold no state yet

    # ------------------------------------------------------------------ nodes
    def refresh_nodes(self) -> None:
        """Ask every node not asked yet for its partition id."""
        new = [n for n in self.grid.get_node_ids() if n not in self.known]
        if not new:
            return
        msgs = [Message(RecordDict({}), dst_node_id=n, message_type=MessageType.QUERY,
                        group_id="who") for n in new]
        for reply, i in exchange(self.grid, msgs, QUERY_TIMEOUT):
            node = new[i]
            if reply.has_error():
                log.warning("node %d did not say who it is: %s", node, reply.error.reason)
                continue
            self.known.add(node)
            k = int(reply.content["node"]["partition-id"])
            if not 0 <= k < self.cfg.fl.num_clients:
                log.warning("node %d has partition id %d, outside fl.num_clients = %d; "
                            "not used", node, k, self.cfg.fl.num_clients)
                continue
            if self.nodes.get(k) != node:
                if k in self.nodes:
                    log.info("partition %d is now on node %d (was %d)", k, node, self.nodes[k])
                self.nodes[k] = node
                self.in_sync.discard(k)

    # ------------------------------------------------------------------ multi-round
    def fit(self, round_: int, chosen: list[int], lr: float, server_extras: dict, progress):
        from ..simulation import RoundFits

        run = self.run
        self.refresh_nodes()
        messages, asked, down = [], [], 0
        for k in chosen:
            node = self.nodes.get(k)
            if node is None:
                continue
            records = {"arrays": to_record(run.start_state(k))}
            if "control" in server_extras:
                records["control"] = to_record(server_extras["control"])
            mirror = run.client_states.get(k)
            if mirror and k not in self.in_sync:
                records["restore"] = to_record(mirror)
            down += record_bytes(*records.values())
            records["config"] = ConfigRecord({
                "config": self.cfg_text, "round": round_, "lr": float(lr),
                "accepted-round": self.accepted_round.get(k, -1)})
            messages.append(Message(RecordDict(records), dst_node_id=node,
                                    message_type=MessageType.TRAIN, group_id=str(round_)))
            asked.append(k)
        by_partition, up = {}, 0
        for reply, i in exchange(self.grid, messages, self.cfg.fl.round_timeout):
            k = asked[i]
            if reply.has_error():
                log.warning("round %d: client %d replied with an error: %s", round_, k,
                            reply.error.reason)
                self.in_sync.discard(k)  # e.g. it lost its state: send it with the next message
                continue
            fit, nbytes = self._fit_result(reply, k)
            up += nbytes
            by_partition[k] = fit
            self.in_sync.add(k)
            progress.client_done()
        fits = [by_partition[k] for k in chosen if k in by_partition]
        dropped = [k for k in chosen if k not in by_partition]
        return RoundFits(fits, dropped, bytes_uploaded=up, bytes_downloaded=down)

    def _fit_result(self, reply: Message, k: int) -> tuple[FitResult, int]:
        run = self.run
        content = reply.content
        template = run.session.initial_state
        device = run.session.bundle.device
        state = _received(content["arrays"], template, device)
        extras, nbytes = {}, record_bytes(content["arrays"])
        client_state = {}
        if "control_delta" in content:
            delta = _received(content["control_delta"], template, device, float32=True)
            extras["control_delta"] = delta
            nbytes += record_bytes(content["control_delta"])
            # the client keeps c_i + dc; the server mirrors it exactly (same arithmetic)
            mirror = run.client_states.get(k)
            client_state = {key: dc.clone() if key not in mirror else mirror[key] + dc
                            for key, dc in delta.items()}
        m = content["metrics"]
        update = ClientUpdate(state=state, num_examples=int(m["num-examples"]), client_id=k,
                              extras=extras,
                              metrics={"train_loss": float(m["train_loss"]),
                                       "steps": int(m["steps"]),
                                       "client_seconds": float(m.get("seconds", 0.0))})
        return FitResult(update, client_state), nbytes

    # ------------------------------------------------------------------ one-shot
    def fit_oneshot(self, client_ids: list[int]) -> dict[int, ClientUpdate]:
        """Every listed client's single upload (the ones that arrive in time)."""
        self.refresh_nodes()
        messages, asked = [], []
        for k in client_ids:
            node = self.nodes.get(k)
            if node is not None:
                content = RecordDict({"config": ConfigRecord({"config": self.cfg_text})})
                messages.append(Message(content, dst_node_id=node,
                                        message_type=f"{MessageType.TRAIN}.oneshot",
                                        group_id="oneshot"))
                asked.append(k)
        t0 = time.perf_counter()
        uploads: dict[int, ClientUpdate] = {}
        run = self.run
        for reply, i in exchange(self.grid, messages, self.cfg.fl.round_timeout):
            k = asked[i]
            if reply.has_error():
                log.warning("one-shot: client %d replied with an error: %s", k,
                            reply.error.reason)
                continue
            content = reply.content
            m = content["metrics"]
            metrics = {"train_loss": float(m["train_loss"]), "steps": int(m["steps"]),
                       "epochs": float(m["epochs"]), "lr": float(m["lr"])}
            losses = {key.split("/", 1)[1]: float(v) for key, v in m.items()
                      if key.startswith("val_loss/")}
            if losses:
                metrics["val_loss"] = losses
                metrics["held_out"] = int(m["held-out"])
            uploads[k] = ClientUpdate(
                state=_received(content["arrays"], run.session.initial_state,
                                run.session.bundle.device),
                num_examples=int(m["num-examples"]), client_id=k, metrics=metrics)
        missing = [k for k in client_ids if k not in uploads]
        if missing:
            log.warning("one-shot: no upload from clients %s within %.0f s", missing,
                        time.perf_counter() - t0)
        return uploads


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
            from ...config import ConfigError

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
                            clients=GridClients(grid))
    console.print(f"fedmllm ServerApp: finished; outputs in {result.out_dir}", markup=False)
