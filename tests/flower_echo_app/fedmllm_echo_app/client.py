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


@app.query()
def echo(msg: Message, context: Context) -> Message:
    sleep = float(context.run_config.get("client-sleep", 0.0))
    if sleep > 0:
        time.sleep(sleep)
    arrays = msg.content.array_records["arrays"].to_numpy_ndarrays()
    reply = RecordDict(
        {
            "arrays": ArrayRecord([a + 1 for a in arrays]),
            "info": MetricRecord(
                {
                    "partition-id": int(context.node_config["partition-id"]),
                    "num-partitions": int(context.node_config.get("num-partitions", -1)),
                    "pid": os.getpid(),
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
