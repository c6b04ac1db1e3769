"""The driver/executor contract: a round's clients get everything in their task (start state,
server extras, their kept state, the last accepted round), the driver reads replies only, and
the rows count what the executor measured on the wire."""

import dataclasses

import pytest
import torch

from fedmllm.config import load_config
from fedmllm.fl import ClientUpdate
from fedmllm.runtime import build_driver
from fedmllm.runtime.executor import ClientReply, InProcessExecutor, wire_bytes


def _cfg(out, *extra):
    return load_config(None, [
        "model.preset=tiny", "fl.rounds=3", "fl.num_clients=3", "fl.clients_per_round=2",
        "fl.local_steps=2", "data.train_size=60", "data.test_size=8", "eval.every=3",
        "eval.views=[image_text]", "train.lr=5e-3", f"output.dir={out}",
        "output.progress=false", "output.plot=false", *extra])


class Scripted:
    """An executor outside the driver: trains in process, records every task (with a copy of
    the state it carried) and every reply's kept state, drops the first client asked in round
    ``drop_round``, and says it measured the bytes."""

    def __init__(self, session, drop_round):
        from fedmllm.engine.client import make_trainer

        trainer = make_trainer(session.cfg, session.plan, session.bundle)
        self.inner = InProcessExecutor(trainer, session.cfg, session.clients)
        self.drop_round, self.dropped = drop_round, None
        self.seen, self.kept = [], {}

    def fit(self, tasks):
        for t in tasks:
            self.seen.append(dataclasses.replace(
                t, client_state={k: v.clone() for k, v in t.client_state.items()}))
            if t.round == self.drop_round and self.dropped is None:
                self.dropped = t.client_id
                yield ClientReply(t.client_id, None, bytes_uploaded=0, bytes_downloaded=11)
                continue
            (reply,) = self.inner.fit([t])
            self.kept[t.round, t.client_id] = reply.client_state
            yield dataclasses.replace(reply, bytes_uploaded=7, bytes_downloaded=11)


def test_a_driver_hands_out_tasks_and_reads_replies(tmp_path, tiny_dir):
    made = []

    def factory(session):
        made.append(Scripted(session, drop_round=2))
        return made[-1]

    rows = build_driver(_cfg(tmp_path, "fl.algorithm=scaffold"), clients=factory).run().rows
    (ex,) = made
    assert rows[1]["dropped"] == [ex.dropped] and str(ex.dropped) not in rows[1]["train_loss"]
    assert "dropped" not in rows[0] and "dropped" not in rows[2]
    assert all(not r["rejected"] and not r["skipped"] for r in rows)
    for row in rows:  # the bytes the executor measured, not the tensors counted
        assert row["bytes_uploaded"] == 7 * len(row["train_loss"])
        assert row["bytes_downloaded"] == 11 * len(row["clients"])
    # every task carried the server's control and the client's c_i of its last accepted round
    accepted = {}
    for t in ex.seen:
        assert "control" in t.server_extras
        assert t.accepted_round == accepted.get(t.client_id, -1)
        want = ex.kept.get((t.accepted_round, t.client_id), {})
        assert want.keys() == t.client_state.keys()
        assert all(torch.equal(want[key], t.client_state[key]) for key in want)
        if (t.round, t.client_id) != (2, ex.dropped):
            accepted[t.client_id] = t.round
    assert any(t.client_state for t in ex.seen)  # a client came back with its c_i
def test_wire_bytes_only_when_every_reply_was_measured():
    u = ClientUpdate(state={}, num_examples=1, client_id=0)
    assert wire_bytes([ClientReply(0, u), ClientReply(1, u, bytes_uploaded=3)]) == (None, None)
    assert wire_bytes([ClientReply(0, u, bytes_uploaded=3, bytes_downloaded=5),
                       ClientReply(1, None, bytes_uploaded=0, bytes_downloaded=5)]) == (3, 10)


@pytest.mark.parametrize("metrics", [
    {"train_loss": 0.5, "steps": 3, "client_seconds": 1.25},
    {"train_loss": 0.5, "steps": 3, "epochs": 0.5, "lr": 1e-3,
     "val_loss": {"0.5": 0.25, "1": 0.75}, "held_out": 2},
    {"train_loss": 0.5, "steps": 3, "epochs": 1.0, "lr": 1e-3},
])
def test_client_statistics_cross_the_wire_unchanged(metrics):
    pytest.importorskip("flwr")
    from fedmllm.runtime.flower.wire import metrics_from_record, metrics_record

    record = metrics_record(ClientUpdate(state={}, num_examples=9, client_id=2,
                                         metrics=metrics))
    assert record["num-examples"] == 9 and record["partition-id"] == 2
    back = metrics_from_record(record)
    assert back == metrics and list(back) == list(metrics)
    assert isinstance(back["steps"], int)
