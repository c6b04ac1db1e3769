"""Process groups of the local federation (``fedmllm.runtime.flower.procs``, psutil): a process
we start leads its own group, and stopping it takes its whole tree, also a child that left
the group (found as a descendant) and one whose parent died (found through the group)."""

from __future__ import annotations

import os
import sys
import time

import psutil
import pytest

from fedmllm.runtime.flower.procs import Proc, free_ports, pid_alive, tree

pytestmark = pytest.mark.processes

# A parent with three children: one in its group, one that made a session of its own
# (as flwr's SuperLink starts its SuperExec), and one whose parent (a shell) has exited, so
# it was re-parented away from us. Each writes its pid to a file named after it.
SCRIPT = """
import subprocess, sys, time
out = sys.argv[1]
child = [sys.executable, "-c",
         "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(300)"]
subprocess.Popen([*child, out + "/group"])
subprocess.Popen([*child, out + "/session"], start_new_session=True)
subprocess.run(["bash", "-c", '"$@" &', "bash", *child, out + "/orphan"])
time.sleep(300)
"""
NAMES = ("group", "session", "orphan")


def _children(out, proc: Proc) -> dict[str, int]:
    deadline = time.monotonic() + 60
    while not all((out / n).exists() and (out / n).read_text().strip() for n in NAMES):
        assert proc.alive() and time.monotonic() < deadline, "the children did not start"
        time.sleep(0.1)
    return {n: int((out / n).read_text()) for n in NAMES}


@pytest.mark.parametrize("kill", [False, True])
def test_terminate_takes_the_whole_tree(tmp_path, kill):
    proc = Proc("parent", [sys.executable, "-c", SCRIPT, str(tmp_path)], dict(os.environ),
                tmp_path / "parent.log").start(tmp_path)
    assert os.getpgid(proc.pid) == proc.pid != os.getpgrp()  # a group of its own
    kids = _children(tmp_path, proc)
    members = {p.pid for p in tree(proc.pid)}
    assert set(kids.values()) <= members, (kids, members)
    assert os.getpgid(kids["session"]) != proc.pid  # found as a descendant only
    assert psutil.Process(kids["orphan"]).ppid() != proc.pid
    proc.kill() if kill else proc.terminate(grace=5.0)
    time.sleep(0.2)
    assert not proc.alive()
    assert not [n for n, pid in kids.items() if pid_alive(pid)]


def test_a_stopped_process_is_stopped_again_without_harm(tmp_path):
    proc = Proc("short", [sys.executable, "-c", "pass"], dict(os.environ),
                tmp_path / "short.log").start(tmp_path)
    proc.popen.wait(timeout=30)
    proc.terminate()
    proc.terminate()
    assert "fedmllm starts" in (tmp_path / "short.log").read_text()
    Proc("never", [], {}, tmp_path / "never.log").terminate()  # not started: nothing to do


def test_free_ports_are_distinct():
    ports = free_ports(5)
    assert len(set(ports)) == 5 and all(0 < p < 65536 for p in ports)


def test_kill_recorded_kills_only_our_recorded_processes_and_their_children(tmp_path):
    import json

    from fedmllm.runtime.flower.local import kill_recorded

    # "ours": a command line that names the warm ClientApp worker, with a child of its own
    ours = Proc("worker", [sys.executable, "-c", SCRIPT, str(tmp_path), "clientapp-worker"],
                dict(os.environ), tmp_path / "w.log").start(tmp_path)
    other = Proc("other", [sys.executable, "-c", "import time; time.sleep(300)"],
                 dict(os.environ), tmp_path / "o.log").start(tmp_path)
    kids = _children(tmp_path, ours)
    (tmp_path / "flower").mkdir()
    (tmp_path / "flower" / "processes.json").write_text(json.dumps({
        "superlink": other.pid,  # a recorded pid that is now someone else's process
        "supernodes": [{"pid": None, "clientapp_worker_pid": ours.pid}]}))
    try:
        assert kill_recorded(tmp_path) == [ours.pid]
        ours.popen.wait(timeout=10)
        time.sleep(0.2)
        assert not [n for n, pid in kids.items() if pid_alive(pid)]
        assert other.alive()
    finally:
        other.terminate()
        ours.terminate()
    assert kill_recorded(tmp_path / "nothing-here") == []
