"""ServerApp: one message per node and round; check the replies; write a JSON result."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    num_nodes = int(cfg["num-nodes"])
    deadline = time.monotonic() + float(cfg["wait-nodes-timeout"])
    node_ids = list(grid.get_node_ids())
    while len(node_ids) < num_nodes and time.monotonic() < deadline:
        time.sleep(0.5)
        node_ids = list(grid.get_node_ids())
    print(f"ECHO nodes: {sorted(node_ids)}", flush=True)

    base = np.arange(4, dtype=np.float32)
    result: dict = {"node_ids": sorted(node_ids), "rounds": []}
    problems: list[str] = []
    for rnd in range(1, int(cfg["rounds"]) + 1):
        msgs = [
            Message(
                RecordDict({"arrays": ArrayRecord([base * rnd])}),
                dst_node_id=nid,
                message_type="query",
                group_id=str(rnd),
            )
            for nid in node_ids
        ]
        t0 = time.monotonic()
        replies = list(grid.send_and_receive(msgs, timeout=float(cfg["reply-timeout"])))
        # Error replies the SuperLink makes itself (e.g. NODE_UNAVAILABLE once a dead node
        # missed its heartbeats) come from node 1, the SuperLink: map them back through the
        # id of the message they answer (set on our messages when they were pushed).
        dst_of = {m.metadata.message_id: m.metadata.dst_node_id for m in msgs}
        entry: dict = {"round": rnd, "seconds": round(time.monotonic() - t0, 2),
                       "replies": [], "errors": []}
        for rep in replies:
            src = dst_of.get(rep.metadata.reply_to_message_id, rep.metadata.src_node_id)
            if rep.has_error():
                entry["errors"].append(
                    {"node_id": src, "src_node_id": rep.metadata.src_node_id,
                     "code": rep.error.code, "reason": rep.error.reason}
                )
                continue
            (arr,) = rep.content.array_records["arrays"].to_numpy_ndarrays()
            info = rep.content.metric_records["info"]
            node = rep.content.config_records["node"]
            node_config = json.loads(str(node["node-config"]))
            ok = bool(np.array_equal(arr, base * rnd + 1))
            entry["replies"].append(
                {"node_id": src, "partition_id": int(info["partition-id"]),
                 "num_partitions": int(info["num-partitions"]),
                 "pid": int(info["pid"]), "calls": int(info["calls"]), "array_ok": ok,
                 "node_config": node_config,
                 "python": node["python"], "app_file": node["app-file"],
                 "fedmllm": node["fedmllm"]}
            )
            if not ok:
                problems.append(f"round {rnd}: node {src} returned a wrong array")
        answered = {r["node_id"] for r in entry["replies"]}
        entry["missing"] = sorted(set(node_ids) - answered)
        if entry["missing"] or entry["errors"]:
            problems.append(f"round {rnd}: no valid reply from nodes {entry['missing']}")
        result["rounds"].append(entry)
        print("ECHO round " + json.dumps(entry), flush=True)

    result["problems"] = problems
    text = json.dumps(result)
    print("ECHO_RESULT " + text, flush=True)
    if cfg["result-file"]:
        Path(str(cfg["result-file"])).write_text(text, encoding="utf-8")
    if problems and bool(cfg["require-all"]):
        raise RuntimeError("; ".join(problems))
