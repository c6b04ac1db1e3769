"""``flwr run .`` on Flower's simulation engine, the way a Flower user runs the App.

- End to end: a fresh ``FLWR_HOME``, ``fedmllm flower simulation-config`` sizes the simulated
  federation (one SuperNode per client, through ``flwr federation simulation-config``, which
  starts flwr's managed local SuperLink), ``flwr run . --stream --run-config "fl.rounds=3
  seed=5 ..."`` from the repository root writes the usual run folder, whose adapter equals an
  in-process ``fedmllm run`` of the same configuration, and ``fedmllm flower stop-local`` stops
  the SuperLink flwr left running. flwr reads the managed SuperLink's ports from
  ``FLWR_LOCAL_SUPERLINK_HTTP_API_PORT`` / ``FLWR_LOCAL_CONTROL_API_PORT`` (defaults 39091 and
  39093, ``flwr/cli/constant.py``): the test takes free ones, so it never meets another
  SuperLink on the fixed ports, and a file lock keeps two of its runs apart.
- Without processes: the default run folder, the sizing command, a node sized for another
  federation, and which processes ``stop-local`` takes.
"""

import fcntl
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from helpers.flower_loopback import LoopbackGrid
from safetensors.torch import load_file

pytest.importorskip("flwr")

from fedmllm.cli import main
from fedmllm.config import Config, ConfigError, load_config
from fedmllm.runtime import run_experiment
from fedmllm.runtime.flower.simulation import (
    local_superlinks,
    simulation_config_argv,
    stop_local_superlink,
    with_output_dir,
)

ROOT = Path(__file__).resolve().parents[3]
#: The configuration of the end-to-end run (the tiny settings of the other equivalence tests).
RUN = {"fl.rounds": 3, "seed": 5, "fl.num_clients": 3, "fl.clients_per_round": 2,
       "fl.local_steps": 2, "data.train_size": 48, "data.test_size": 8, "eval.every": 3,
       "eval.views": "[image_text]", "model.preset": "tiny", "train.device": "cpu",
       "model.dtype": "float32", "lora.dropout": 0.1, "output.plot": False,
       "output.progress": False}


def test_a_run_without_output_dir_lands_in_the_repository_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the ServerApp's cwd is the managed SuperLink's, not the repo
    got = with_output_dir({"fl.algorithm": "fedprox"})["output.dir"]
    assert Path(got).is_absolute() and Path(got).parent == ROOT / "runs"
    assert Path(got).name.startswith("fedprox-synth-") and not Path(got).exists()
    for kept in ({"output.dir": "/x/y"}, {"overrides": "output.dir=/x/y"}, {"resume": True}):
        assert with_output_dir(kept) == kept


def test_simulation_config_is_flowers_own_command():
    argv = simulation_config_argv(10, gpus=0.5, cpus=1)
    assert Path(argv[0]).name == "flwr"
    assert argv[1:] == ["federation", "simulation-config", "--num-supernodes", "10",
                        "--client-resources-num-gpus", "0.5", "--client-resources-num-cpus", "1"]
    assert simulation_config_argv(3)[3:] == ["--num-supernodes", "3"]
    for bad in ({"supernodes": 0}, {"supernodes": 2, "gpus": -0.5}, {"supernodes": 2, "cpus": 0}):
        with pytest.raises(ConfigError):
            simulation_config_argv(**bad)


def test_a_node_of_a_federation_of_another_size_stops_the_run():
    from fedmllm.runtime.flower.app import client_app
    from fedmllm.runtime.flower.server import GridExecutor

    cfg = Config()
    cfg.fl.num_clients = 3  # Flower's default simulated federation has 2 SuperNodes
    grid = LoopbackGrid(client_app, [{"partition-id": k, "num-partitions": 2} for k in (0, 1)])
    with pytest.raises(ConfigError, match="simulation-config --clients 3"):
        GridExecutor(grid, cfg, {}, "cpu").refresh_nodes()
    cfg.fl.num_clients = 2
    executor = GridExecutor(grid, cfg, {}, "cpu")
    executor.refresh_nodes()
    assert sorted(executor.nodes) == [0, 1]


def _fake_superlink(folder: Path, home: Path) -> subprocess.Popen:
    """A process whose command line is that of flwr's managed SuperLink of ``home``, with a
    child (as its SuperExec)."""
    exe = folder / "flower-superlink"
    exe.write_text("import subprocess, sys, time\n"
                   "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
                   "time.sleep(60)\n")
    log = home / "local-superlink" / "superlink.log"
    return subprocess.Popen([sys.executable, str(exe), "--insecure", "--simulation",
                             "--log-file", str(log)])


@pytest.mark.processes
def test_stop_local_takes_the_superlink_of_its_flower_home_and_its_children(tmp_path, capsys):
    ours, other = tmp_path / "home", tmp_path / "other"
    procs = [_fake_superlink(tmp_path, ours), _fake_superlink(tmp_path, other)]
    try:
        deadline = time.monotonic() + 10
        while not all(len(links) == 1 and links[0].children()
                      for links in map(local_superlinks, (ours, other))):
            assert time.monotonic() < deadline, "the fake SuperLinks did not start"
            time.sleep(0.1)
        child = local_superlinks(ours)[0].children()[0].pid
        stopped = stop_local_superlink(ours, timeout=5)
        assert sorted(stopped) == sorted([procs[0].pid, child])
        assert procs[0].wait(5) is not None and procs[1].poll() is None
        assert local_superlinks(ours) == [] and len(local_superlinks(other)) == 1
        assert main(["flower", "stop-local", "--flwr-home", str(ours)]) == 0
        assert f"no local SuperLink of {ours} is running" in capsys.readouterr().out
    finally:
        stop_local_superlink(other, timeout=5)
        for p in procs:
            p.wait(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def local_flwr(tmp_path):
    """``(home, port, run)``: a fresh ``FLWR_HOME`` whose managed SuperLink takes free ports,
    and ``run(*argv)``, a command run in the repository root with that environment
    (``wait=False``: started, its ``Popen`` returned); afterwards
    ``fedmllm flower stop-local`` stops the SuperLink (which the test must have started).
    One at a time on this machine (a file lock: pytest-xdist 3.8's ``xdist_group`` did not
    keep two such tests on one worker here), also across test sessions."""
    with open(Path(tempfile.gettempdir()) / "fedmllm-flwr-local-superlink.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield from _local_flwr(tmp_path)


def _local_flwr(tmp_path):
    home, port = tmp_path / "flwr-home", _free_port()
    src = str(ROOT / "src")  # the ServerApp and the Ray workers import this checkout
    bin_dir = str(Path(sys.executable).parent)  # flwr starts `flower-superlink` from PATH
    env = {**os.environ, "FLWR_HOME": str(home),
           "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
           "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(port),
           "FLWR_LOCAL_CONTROL_API_PORT": str(_free_port()),
           "PYTHONPATH": os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])])}

    def run(*argv, wait=True):
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        if not wait:
            return proc
        out, err = proc.communicate(timeout=300)
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    try:
        yield home, port, run
    finally:
        stopped = run(sys.executable, "-m", "fedmllm.cli", "flower", "stop-local",
                      "--flwr-home", str(home))
    assert "stopped the local SuperLink" in stopped.stdout, stopped.stdout + stopped.stderr
    assert local_superlinks(home) == []


def _run_config(values: dict) -> str:
    """``values`` as flwr's ``--run-config`` text (TOML values: strings quoted)."""
    return " ".join(f"{k}={json.dumps(v) if not isinstance(v, bool) else str(v).lower()}"
                    for k, v in values.items())


@pytest.mark.slow
@pytest.mark.processes
def test_flwr_run_dot_reproduces_fedmllm_run(tmp_path, tiny_dir, local_flwr):
    _, port, run = local_flwr
    out = tmp_path / "flower"
    sized = run(sys.executable, "-m", "fedmllm.cli", "flower", "simulation-config",
                "fl.num_clients=3")
    assert sized.returncode == 0, sized.stdout + sized.stderr
    # the free port was taken (flwr prints it as it starts the SuperLink)
    assert "--num-supernodes 3" in sized.stdout and f"127.0.0.1:{port}" in sized.stdout
    # with Flower's default 2 SuperNodes the ServerApp would stop on num-partitions = 2
    flwr = run("flwr", "run", ".", "--stream", "--run-config",
               _run_config({**RUN, "output.dir": str(out)}), wait=False)
    ref = tmp_path / "sim"  # the in-process run meanwhile
    try:
        run_experiment(load_config(None, [f"{k}={str(v).lower() if isinstance(v, bool) else v}"
                                          for k, v in RUN.items()] + [f"output.dir={ref}"]))
        stdout, stderr = flwr.communicate(timeout=300)
    finally:
        if flwr.poll() is None:
            flwr.kill()
            flwr.wait()
    assert flwr.returncode == 0, stdout + stderr
    assert f"finished; outputs in {out}" in stdout, stdout + stderr
    a, b = (load_file(d / "adapter" / "adapter_model.safetensors") for d in (ref, out))
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5


#: A Flower App whose ClientApp replies with the GPUs it sees and its PID.
ENV_APP = {
    "pyproject.toml": """
[project]
name = "envapp"
version = "0.1.0"
[tool.flwr.app]
publisher = "fedmllm"
[tool.flwr.app.components]
serverapp = "envapp.apps:server"
clientapp = "envapp.apps:client"
[tool.flwr.app.config]
result-file = ""
""",
    "envapp/__init__.py": "",
    "envapp/apps.py": """
import json, os, time
from pathlib import Path
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

client = ClientApp()
server = ServerApp()

@client.query()
def env(msg, context):
    seen = {"pid": os.getpid(), "partition": int(context.node_config["partition-id"]),
            "gpus": os.environ.get("CUDA_VISIBLE_DEVICES", "unset")}
    return Message(RecordDict({"env": ConfigRecord(seen)}), reply_to=msg)

@server.main()
def main(grid, context):
    deadline = time.monotonic() + 60  # the simulation registers its nodes as it starts
    while len(grid.get_node_ids()) < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    msgs = [Message(RecordDict(), dst_node_id=n, message_type="query")
            for n in grid.get_node_ids()]
    rows = [dict(r.content["env"]) for r in grid.send_and_receive(msgs, timeout=120)]
    Path(str(context.run_config["result-file"])).write_text(json.dumps(rows))
""",
}


@pytest.mark.slow
@pytest.mark.processes
def test_simulated_clientapps_get_their_gpu_fraction(tmp_path, local_flwr):
    """``--gpus 0.5``: Ray runs at most two ClientApps per GPU and shows each its GPU. On a
    machine without one, Ray is told there is one (``--init-args-num-gpus 1``): every
    ClientApp sees ``CUDA_VISIBLE_DEVICES=0``, and at most two processes serve the 4 nodes."""
    _, _, run = local_flwr
    app, result = tmp_path / "envapp", tmp_path / "env.json"
    for name, text in ENV_APP.items():
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text(text.lstrip())
    sized = run(*simulation_config_argv(4, gpus=0.5, cpus=1), "--init-args-num-gpus", "1")
    assert sized.returncode == 0, sized.stdout + sized.stderr
    done = run("flwr", "run", str(app), "--stream", "--run-config",
               _run_config({"result-file": str(result)}))
    assert done.returncode == 0 and result.is_file(), done.stdout + done.stderr
    rows = json.loads(result.read_text())
    assert sorted(r["partition"] for r in rows) == [0, 1, 2, 3], done.stdout + done.stderr
    assert {r["gpus"] for r in rows} == {"0"}, rows
    assert len({r["pid"] for r in rows}) <= 2, rows
