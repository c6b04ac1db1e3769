"""The loopback Flower deployment (``fedmllm.runtime.flower.local``) with a throw-away echo app.

Real ``flower-superlink`` / ``flower-supernode`` processes on 127.0.0.1 (flwr 1.42), driven
through ``flwr run``; the app is ``tests/flower_echo_app`` (not fedmllm's): its ServerApp sends
one message per node and round, each ClientApp replies with its node config's
``partition-id`` and the array plus one, and the ServerApp writes what it saw to a JSON file.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
import zipfile
from pathlib import Path

import psutil
import pytest

pytest.importorskip("flwr")

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from helpers import ROOT
from helpers.flower_faults import clientapp_pids, kill_supernode, restart_supernode

from fedmllm.runtime.flower.certs import generate_node_keys, generate_tls_files
from fedmllm.runtime.flower.local import (
    LocalFederation,
    pid_alive,
    start_federation,
)

APP = ROOT / "tests" / "helpers" / "flower_echo_app"
RUN_TIMEOUT = 180.0


def _recorded_pids(out: Path) -> list[int]:
    rec = json.loads((out / "flower" / "processes.json").read_text())
    return [rec["superlink"]] + [n["pid"] for n in rec["supernodes"]]


def _assert_gone(pids: list[int]) -> None:
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def _ours_alive(out: Path) -> list[str]:
    """Live processes whose command line names ``out`` (flwr children get our paths)."""
    found = []
    for proc in psutil.process_iter():
        try:
            cmd = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if proc.pid != os.getpid() and str(out) in cmd and pid_alive(proc.pid):
            found.append(f"{proc.pid}: {cmd[:200]}")
    return found


def _echo(fed: LocalFederation, out: Path, name: str, **config) -> tuple:
    result_file = out / f"{name}.json"
    res = fed.run_app(APP, {"result-file": str(result_file), **config}, timeout=RUN_TIMEOUT)
    data = json.loads(result_file.read_text()) if result_file.exists() else None
    return res, data


# ----------------------------------------------------------------------------- fast


def test_tls_files_are_valid_for_loopback(tmp_path):
    files = generate_tls_files(tmp_path)
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    assert oct(files.server_key.stat().st_mode)[-3:] == "600"


def test_node_keys_are_what_flwr_supernode_register_accepts(tmp_path):
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.supernode.cli.flower_supernode import _try_setup_client_authentication

    keys = generate_node_keys(tmp_path, "n0")
    assert try_load_public_key(keys.public_key)  # NIST EC key in OpenSSH format

    class Args:
        auth_supernode_private_key = str(keys.private_key)
        auth_supernode_public_key = None

    private, _ = _try_setup_client_authentication(Args())
    assert isinstance(private, ec.EllipticCurvePrivateKey)


def test_unknown_run_config_key_is_refused_before_submitting(tmp_path):
    fed = LocalFederation(tmp_path, 1, insecure=True)  # not started: nothing runs
    with pytest.raises(ValueError, match="not-a-key"):
        fed.submit_app(APP, {"not-a-key": 1})


def test_fedmllm_fab_holds_only_the_package_source():
    from flwr.cli.build import build_fab_from_disk

    fab = build_fab_from_disk(ROOT)
    names = zipfile.ZipFile(io.BytesIO(fab)).namelist()
    assert len(fab) < 10 * 1024 * 1024
    assert "pyproject.toml" in names
    assert "src/fedmllm/runtime/flower/local.py" in names
    others = [n for n in names if not n.startswith("src/fedmllm/")]
    assert sorted(others) == [".info/CONTENT", "pyproject.toml"]
    assert not [n for n in names if "__pycache__" in n or not n.endswith((".py", ".toml"))
                and n != ".info/CONTENT"]


# ----------------------------------------------------------------------------- processes


@pytest.mark.slow
@pytest.mark.processes
def test_echo_over_two_supernodes_with_tls_and_auth(tmp_path):
    configs = [{"data-dir": str(tmp_path / "data 0")}, {"data-dir": "it's \"quoted\""}]
    with start_federation(tmp_path, 2, node_configs=configs) as fed:
        rec = json.loads((tmp_path / "flower" / "processes.json").read_text())
        assert rec["tls"] and rec["supernode_auth"]
        assert [n["partition_id"] for n in rec["supernodes"]] == [0, 1]
        assert (tmp_path / "flower" / "certs" / "ca.crt").exists()
        res, data = _echo(fed, tmp_path, "echo", rounds=2)
        assert res.ok, (res.status, res.details, res.log_text[-2000:])
        assert "ECHO_RESULT" in res.log_text  # the ServerApp's stdout, via flwr run --stream
        assert data["problems"] == []
        node_ids = {n.node_id for n in fed.nodes}  # registered with flwr supernode register
        assert set(data["node_ids"]) == node_ids
        pids_by_round = []
        for rnd in data["rounds"]:
            assert rnd["missing"] == [] and rnd["errors"] == []
            replies = sorted(rnd["replies"], key=lambda r: r["partition_id"])
            assert [r["partition_id"] for r in replies] == [0, 1]
            assert all(r["array_ok"] and r["num_partitions"] == 2 for r in replies)
            assert [r["node_config"]["data-dir"] for r in replies] == [
                c["data-dir"] for c in configs
            ]
            # The ClientApp runs in this virtualenv; the app module comes from the FAB
            # unpacked under the SuperNode's FLWR_HOME; fedmllm would be the installed one.
            for r in replies:
                assert Path(r["python"]).parent == Path(sys.executable).parent
                assert str(tmp_path / "flower" / "home") in r["app_file"]
                assert r["fedmllm"] == str(ROOT / "src" / "fedmllm" / "__init__.py")
            pids_by_round.append({r["pid"] for r in replies})
        # flwr 1.42 starts a new flwr-clientapp process for every message.
        assert pids_by_round[0].isdisjoint(pids_by_round[1])
        pids = _recorded_pids(tmp_path)
    _assert_gone(pids)
    assert _ours_alive(tmp_path) == []


@pytest.mark.slow
@pytest.mark.processes
def test_insecure_federation_and_restart(tmp_path):
    with start_federation(tmp_path, 2, insecure=True) as fed:
        rec = json.loads((tmp_path / "flower" / "processes.json").read_text())
        assert not rec["tls"] and not rec["supernode_auth"]
        assert not (tmp_path / "flower" / "certs").exists()
        res, data = _echo(fed, tmp_path, "first")
        assert res.ok, (res.status, res.details, res.log_text[-2000:])
        assert sorted(r["partition_id"] for r in data["rounds"][0]["replies"]) == [0, 1]

        old_pid, old_id = fed.supernode_pid(1), fed.nodes[1].node_id
        kill_supernode(fed, 1)
        restart_supernode(fed, 1)
        assert fed.supernode_pid(1) not in (None, old_pid)
        # Without authentication the restarted node is a new node to the SuperLink, and the
        # dead one stays "online" until its heartbeat lapses (60 s), so it is asked and is
        # silent until the ServerApp's own timeout.
        assert fed.nodes[1].node_id != old_id
        # (the timeout leaves the restarted node's new ClientApp process time to start on a
        # loaded machine: the suite runs three workers on two cores)
        res, data = _echo(fed, tmp_path, "second", **{"reply-timeout": 20.0, "require-all": False})
        assert res.ok, (res.status, res.details, res.log_text[-2000:])
        rnd = data["rounds"][0]
        answered = {r["node_id"]: r["partition_id"] for r in rnd["replies"]}
        assert answered == {fed.nodes[0].node_id: 0, fed.nodes[1].node_id: 1}
        assert rnd["missing"] == ([old_id] if old_id in data["node_ids"] else [])
        assert json.loads((tmp_path / "flower" / "processes.json").read_text())[
            "supernodes"][1]["pid"] == fed.supernode_pid(1)
        pids = _recorded_pids(tmp_path) + [old_pid]
    _assert_gone(pids)
    assert _ours_alive(tmp_path) == []


@pytest.mark.slow
@pytest.mark.processes
def test_stop_after_an_exception_in_the_with_block(tmp_path):
    with (
        pytest.raises(RuntimeError, match="boom"),
        start_federation(tmp_path, 1, insecure=True) as fed,
    ):
        pids = _recorded_pids(tmp_path)
        assert all(pid_alive(p) for p in pids)
        raise RuntimeError("boom")
    assert fed.stopped
    _assert_gone(pids)
    assert _ours_alive(tmp_path) == []
    fed.stop()  # idempotent


@pytest.mark.slow
@pytest.mark.processes
def test_killed_supernode_does_not_hang_the_run(tmp_path):
    with start_federation(tmp_path, 2) as fed:
        # (1) The ServerApp waits for replies with a timeout: the dead node's reply is missing.
        # node 0 replies after a new ClientApp process has started and slept 5 s: the timeout
        # leaves that time on a loaded machine (it failed at 12 s under three test workers)
        run = fed.submit_app(APP, {"client-sleep": 5.0, "reply-timeout": 25.0,
                                   "require-all": False,
                                   "result-file": str(tmp_path / "killed.json")})
        deadline = time.monotonic() + 90
        while not clientapp_pids(fed, 1):  # node 1 is working on its message
            assert time.monotonic() < deadline, "no ClientApp process under SuperNode 1"
            time.sleep(0.2)
        killed_pid = fed.supernode_pid(1)
        kill_supernode(fed, 1)
        assert not pid_alive(killed_pid)
        res = run.wait(RUN_TIMEOUT)
        assert res.ok, (res.status, res.details, res.log_text[-2000:])
        data = json.loads((tmp_path / "killed.json").read_text())
        rnd = data["rounds"][0]
        assert [r["partition_id"] for r in rnd["replies"]] == [0]
        assert rnd["missing"] == [fed.nodes[1].node_id]
        assert rnd["seconds"] < 45

        # (2) A ServerApp that would wait (almost) forever: run_app's own timeout stops the
        # run (flwr stop) instead of hanging.
        t0 = time.monotonic()
        res = fed.run_app(APP, {"reply-timeout": 3600.0, "require-all": False}, timeout=15)
        assert res.timed_out
        assert res.status in ("finished:stopped", "timeout"), res.status
        assert time.monotonic() - t0 < 60


@pytest.mark.slow
@pytest.mark.processes
def test_warm_clientapp_is_one_process_per_supernode(tmp_path):
    """clientapp="warm": the same ClientApp process answers every round (module state kept),
    and an exception in the ClientApp is an error reply, not the end of the process."""
    with start_federation(tmp_path, 2, insecure=True, clientapp="warm") as fed:
        rec = json.loads((tmp_path / "flower" / "processes.json").read_text())
        workers = [n["clientapp_worker_pid"] for n in rec["supernodes"]]
        assert all(pid_alive(p) for p in workers)
        res, data = _echo(fed, tmp_path, "warm", rounds=3, **{
            "fail-partition": 1, "fail-round": 1, "require-all": False})
        assert res.ok, (res.status, res.details, res.log_text[-2000:])
        first, *rest = data["rounds"]
        assert [r["partition_id"] for r in first["replies"]] == [0]
        assert [e["node_id"] for e in first["errors"]] == [fed.nodes[1].node_id]
        assert "failing on purpose" in first["errors"][0]["reason"]
        for rnd in rest:
            assert rnd["missing"] == [] and rnd["errors"] == []
            by_partition = {r["partition_id"]: r for r in rnd["replies"]}
            assert {p: by_partition[p]["pid"] for p in (0, 1)} == dict(enumerate(workers))
        # One process, counting its messages: partition 0 answered 3, partition 1 three too
        # (the failed call counts).
        assert [r["calls"] for r in sorted(rest[-1]["replies"], key=lambda r: r["partition_id"])
                ] == [3, 3]
        pids = _recorded_pids(tmp_path) + workers
    _assert_gone(pids)
    assert _ours_alive(tmp_path) == []


# ----------------------------------------------------------------------------- --gpus


def test_gpus_are_dealt_round_robin_to_supernodes_and_their_workers(tmp_path, monkeypatch):
    from fedmllm.runtime.flower.procs import Proc

    fed = LocalFederation(tmp_path, 3, insecure=True, clientapp="warm", gpus=["0", "GPU-b"])
    assert [n.env.get("CUDA_VISIBLE_DEVICES") for n in fed.nodes] == ["0", "GPU-b", "0"]
    started = []

    def start(self, cwd):
        started.append((self.name, self.env.get("CUDA_VISIBLE_DEVICES")))
        self.popen = type("Popen", (), {"pid": 1})()
        return self

    monkeypatch.setattr(Proc, "start", start)
    for node in fed.nodes:
        fed.starter.start(node)
    assert started == [("supernode-0", "0"), ("clientapp-0", "0"),
                       ("supernode-1", "GPU-b"), ("clientapp-1", "GPU-b"),
                       ("supernode-2", "0"), ("clientapp-2", "0")]
    assert LocalFederation(tmp_path, 2).nodes[0].env == {}  # no --gpus: nothing set


def test_gpus_option_parses_a_device_list():
    from fedmllm.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["flower", "local", "--supernodes", "2", "--gpus", "0, 1"])
    assert args.gpus == ["0", "1"]
    assert parser.parse_args(["flower", "local", "--supernodes", "2"]).gpus is None
    with pytest.raises(SystemExit):
        parser.parse_args(["flower", "local", "--supernodes", "2", "--gpus", "0,,1"])


@pytest.mark.slow
@pytest.mark.processes
def test_each_supernode_and_its_clientapps_see_only_their_gpu(tmp_path):
    """What each process got, read from its environment (psutil), with no GPU needed."""
    with start_federation(tmp_path, 2, insecure=True, gpus=["3", "5"]) as fed:
        run = fed.submit_app(APP, {"client-sleep": 3.0, "result-file": str(tmp_path / "g.json")})
        seen: dict[int, set[str | None]] = {0: set(), 1: set()}
        deadline = time.monotonic() + 90
        while not all(seen.values()):
            assert time.monotonic() < deadline, f"no ClientApp process seen: {seen}"
            for i, devices in seen.items():
                for pid in clientapp_pids(fed, i):
                    try:
                        devices.add(psutil.Process(pid).environ().get("CUDA_VISIBLE_DEVICES"))
                    except psutil.Error:
                        pass
            time.sleep(0.1)
        assert seen == {0: {"3"}, 1: {"5"}}
        for i, device in enumerate(("3", "5")):
            node = psutil.Process(fed.supernode_pid(i))
            family = [node, *node.children(recursive=True)]  # SuperExec and its ClientApps
            assert {p.environ().get("CUDA_VISIBLE_DEVICES") for p in family} == {device}
        res = run.wait(RUN_TIMEOUT)
        assert res.ok, (res.status, res.details, res.log_text[-2000:])
        rec = json.loads((tmp_path / "flower" / "processes.json").read_text())
        assert rec["gpus"] == ["3", "5"]
        assert [n["env"] for n in rec["supernodes"]] == [{"CUDA_VISIBLE_DEVICES": d}
                                                         for d in ("3", "5")]
