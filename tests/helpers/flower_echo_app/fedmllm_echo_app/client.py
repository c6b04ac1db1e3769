"""ClientApp: reply with the node's ``partition-id`` and config, the array plus one, its PID."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()
# Messages this process has answered: 1 every time under flwr's one-process-per-message,
# counting up under a long-lived ClientApp process (fedmllm's clientapp="warm").
_CALLS = 0


@app.query()
def echo(msg: Message, context: Context) -> Message:
    global _CALLS
    _CALLS += 1
    cfg = context.run_config
    partition = int(context.node_config["partition-id"])
    if (partition, msg.metadata.group_id) == (cfg["fail-partition"], str(cfg["fail-round"])):
        raise RuntimeError(f"echo: failing on purpose (partition {partition})")
    sleep = float(cfg.get("client-sleep", 0.0))
    if sleep > 0:
        time.sleep(sleep)
    arrays = msg.content.array_records["arrays"].to_numpy_ndarrays()
    reply = RecordDict(
        {
            "arrays": ArrayRecord([a + 1 for a in arrays]),
            "info": MetricRecord(
                {
                    "partition-id": partition,
                    "num-partitions": int(context.node_config.get("num-partitions", -1)),
                    "pid": os.getpid(),
                    "calls": _CALLS,
                }
            ),
            "node": ConfigRecord(
                {
                    "node-config": json.dumps(dict(context.node_config)),
                    # Which interpreter runs us, where this module was imported from (the
                    # FAB unpacked under $FLWR_HOME/apps) and which fedmllm it would import.
                    "python": sys.executable,
                    "app-file": __file__,
                    "fedmllm": getattr(importlib.util.find_spec("fedmllm"), "origin", "") or "",
                }
            ),
        }
    )
    return Message(reply, reply_to=msg)
