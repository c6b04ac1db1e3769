"""A Flower grid in this process: the ServerApp's messages go straight to a ClientApp, one
Context per node. For testing the App's logic and protocol without starting processes (the
deployment itself is tested in test_flower_local.py)."""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

# Messages take their run, node and task from the process's identity, which a real ServerApp
# process gets from its SuperLink; here the test process is the ServerApp.
TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0


class LoopbackGrid(Grid):
    """Nodes ``1..N`` with ``node_configs[i]``; ``dead`` nodes never reply."""

    def __init__(self, client_app, node_configs: list[dict], run_config: dict | None = None):
        self.client_app = client_app
        self.contexts = {i + 1: Context(run_id=1, node_id=i + 1, node_config=dict(nc),
                                        state=RecordDict(), run_config=dict(run_config or {}))
                         for i, nc in enumerate(node_configs)}
        self.dead: set[int] = set()
        self.sent: list[Message] = []
        self._replies: dict[str, Message] = {}
        self._count = 0
        self._run = None

    def set_run(self, run) -> None:  # pragma: no cover - not used here
        self._run = run

    @property
    def run(self):  # pragma: no cover
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return Message(content=content, dst_node_id=dst_node_id, message_type=message_type,
                       group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        return [n for n in self.contexts if n not in self.dead]

    def push_messages(self, messages):
        """Deliver each message at once; its reply waits to be pulled."""
        ids = []
        for msg in messages:
            self._count += 1
            msg.metadata.__dict__["_message_id"] = f"m{self._count}"  # what a SuperLink sets
            ids.append(msg.metadata.message_id)
            self.sent.append(msg)
            node = msg.metadata.dst_node_id
            if node in self.dead:
                continue
            try:  # a ClientApp that raises: the SuperNode replies with an error
                self._replies[msg.metadata.message_id] = self.client_app(msg, self.contexts[node])
            except Exception as e:  # noqa: BLE001
                self._replies[msg.metadata.message_id] = Message(
                    Error(code=1, reason=f"{type(e).__name__}: {e}"), reply_to=msg)
        return ids

    def pull_messages(self, message_ids):
        return [self._replies.pop(m) for m in message_ids if m in self._replies]

    def send_and_receive(self, messages, *, timeout=None):
        ids = self.push_messages(messages)
        return self.pull_messages(ids)

    def restart(self, node: int) -> None:
        """The node's process restarted: its context state is gone."""
        ctx = self.contexts[node]
        self.contexts[node] = Context(run_id=ctx.run_id, node_id=node,
                                      node_config=ctx.node_config, state=RecordDict(),
                                      run_config=ctx.run_config)


def loopback_base(num_clients: int, eval_every: int) -> list[str]:
    """The small run the loopback equivalence tests share: the tiny model on the CPU in
    float32, ``num_clients`` clients (2 per round, 2 local steps, 2 rounds), 48 training and 8
    test samples, evaluated every ``eval_every`` rounds on the image+text view."""
    return ["model.preset=tiny", "train.device=cpu", "model.dtype=float32", "lora.dropout=0.1",
            f"fl.num_clients={num_clients}", "fl.clients_per_round=2", "fl.local_steps=2",
            "fl.rounds=2", "data.train_size=48", "data.test_size=8", f"eval.every={eval_every}",
            "eval.views=[image_text]", "output.plot=false", "output.progress=false"]
