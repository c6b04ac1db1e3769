"""The multi-machine recipe of docs/flower.md runs as it is written (issue 25, item 7).

The test reads the fenced ``bash`` blocks of the "Across machines" section, each marked by an
HTML comment ``<!-- recipe: WHERE[, background] -->`` (WHERE: ``server``, ``site``,
``operator`` or ``checkout``), and runs them in document order on loopback: each machine is a
temporary folder (the operator shares the server's), a ``site`` block runs once per site, a
``background`` block is a long-lived process (SuperLink, SuperNode) that the test waits for and
stops by PID at the end, also on failure. Only what a test must change is replaced
(:func:`replaced`: the server's address, free ports, the run folder, the site number and a
one-round tiny run); what the recipe says to copy between machines (``ca.crt``, the public
keys) the test copies.
"""

import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import ROOT

pytest.importorskip("flwr")

from fedmllm.cli import main
from fedmllm.runtime.flower.procs import Proc, log_tail, pid_alive

DOC = ROOT / "docs" / "flower.md"
SITES = (0, 1)
BLOCK = re.compile(r"<!-- recipe: (\w+)(, background)? -->\s*```bash\n(.*?)```", re.DOTALL)
TINY = ("fl.rounds=1 fl.local_steps=2 data.train_size=48 data.test_size=8 "
        "eval.views='[image_text]' train.device='cpu' output.plot=false output.progress=false")
FLOWER_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
              "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "HF_HUB_OFFLINE": "1",
              "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def recipe_blocks() -> list[tuple[str, bool, str]]:
    """``(where, background, text)`` of every marked block of the section, in order."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## Across machines"):]
    section = section[:section.find("\n## ")] if "\n## " in section else section
    return [(m[1], bool(m[2]), m[3]) for m in BLOCK.finditer(section)]


def free_ports() -> tuple[int, int]:
    """A free loopback port for the SuperLink and a base B with B and B + 1 free (the
    SuperNodes' ``9094 + K``)."""
    while True:
        socks = [socket.socket() for _ in range(3)]
        try:
            socks[0].bind(("127.0.0.1", 0))
            socks[1].bind(("127.0.0.1", 0))
            base = socks[1].getsockname()[1]
            socks[2].bind(("127.0.0.1", base + 1))
            return socks[0].getsockname()[1], base
        except (OSError, OverflowError):  # B + 1 taken, or past 65535
            continue
        finally:
            for s in socks:
                s.close()


def test_recipe_blocks_are_marked_and_name_what_the_test_replaces():
    blocks = recipe_blocks()
    assert [(w, bg) for w, bg, _ in blocks] == [
        ("server", False), ("server", True), ("site", False), ("operator", False),
        ("site", True), ("checkout", False)]
    text = "".join(t for _, _, t in blocks)
    for placeholder in ("10.0.0.5", "0.0.0.0", "9092", "9094", "/srv/runs/exp1", "K=0",
                        "fl.rounds=20"):
        assert placeholder in text, placeholder
        assert placeholder not in replaced(text, Path("/tmp"), 1, 2, 1), placeholder
    # the three mistakes of issue 25: order, relative certificate paths, a shared port
    steps = [(w, bg) for w, bg, _ in blocks]
    assert steps.index(("operator", False)) < steps.index(("site", True))
    assert "root-certificates = \"$PWD/" in text and "--root-certificates $PWD/" in text
    assert "--port $((9094 + K))" in text


def test_certs_and_node_keys_print_the_absolute_paths_flwr_reads(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["flower", "certs", "--out", "certs", "--host", "127.0.0.1"]) == 0
    assert main(["flower", "node-key", "--out", "keys", "--name", "site-0"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'certs' / 'ca.crt'} " in out
    assert f"--auth-supernode-private-key) and {tmp_path / 'keys' / 'site-0.pub'} " in out
    assert f"flwr supernode register {tmp_path / 'keys' / 'site-0.pub'} <" in out


def replaced(text: str, tmp: Path, link_port: int, node_port: int, site: int) -> str:
    """The block with the test's values for the recipe's placeholders (in one pass, so that
    no value put in is replaced again)."""
    values = {"10.0.0.5": "127.0.0.1", "0.0.0.0": "127.0.0.1", "9092": str(link_port),
              "9094": str(node_port), "/srv/runs/exp1": str(tmp / "runs" / "exp1"),
              "K=0": f"K={site}", "fl.rounds=20": TINY}
    return re.sub("|".join(map(re.escape, values)), lambda m: values[m[0]], text)


class Machines:
    """The recipe's machines as folders; the background processes it started."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.server = tmp / "server"
        self.sites = {k: tmp / f"site-{k}" for k in SITES}
        for d in (self.server, *self.sites.values(), tmp / "logs"):
            d.mkdir(parents=True)
        bindir = str(Path(sys.executable).parent)
        self.env = {**os.environ, **FLOWER_ENV, "FLWR_HOME": str(tmp / "flwr-home"),
                    "PATH": os.pathsep.join([bindir, os.environ.get("PATH", "")]),
                    "PYTHONPATH": os.pathsep.join([str(ROOT / "src"),
                                                   os.environ.get("PYTHONPATH", "")])}
        self.procs: list[Proc] = []

    def folder(self, where: str, site: int) -> Path:
        return {"server": self.server, "operator": self.server, "checkout": ROOT,
                "site": self.sites[site]}[where]

    def run(self, blocks: list[tuple[str, Path]], timeout: float) -> None:
        """Run each (block, folder) to its end, the machines at the same time."""
        procs = [subprocess.Popen(["bash", "-e", "-c", text], cwd=cwd, env=self.env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
                 for text, cwd in blocks]
        try:
            for proc, (text, _) in zip(procs, blocks, strict=True):
                output = proc.communicate(timeout=timeout)[0]
                assert proc.returncode == 0, f"{text}\n{output[-4000:]}"
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()

    def start(self, name: str, text: str, cwd: Path) -> Proc:
        proc = Proc(name, ["bash", "-e", "-c", text], self.env, self.tmp / "logs" / f"{name}.log")
        self.procs.append(proc)
        return proc.start(cwd)

    def deliver(self) -> None:
        """What the recipe sends between machines: ca.crt to the sites, keys to the server."""
        ca = self.server / "certs" / "ca.crt"
        for k, site in self.sites.items():
            if ca.is_file() and not (site / "ca.crt").exists():
                shutil.copy(ca, site / "ca.crt")
            pub = site / "keys" / f"site-{k}.pub"
            if pub.is_file():
                shutil.copy(pub, self.server / pub.name)

    def stop(self) -> list[int]:
        """Stop every background process (tree) by PID; the PIDs that were started."""
        with ThreadPoolExecutor() as pool:
            list(pool.map(Proc.terminate, self.procs))
        return [p.pid for p in self.procs if p.pid]


def wait_for(what: str, ready, procs: list[Proc], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        for proc in procs:
            assert proc.alive(), f"{proc.name} exited ({proc.popen.returncode}) while {what}:" \
                                 f"\n{log_tail(proc.log_path)[-3000:]}"
        assert time.monotonic() < deadline, f"not {what} after {timeout:.0f} s"
        time.sleep(0.3)


def superlink_up(port: int, ca: Path):
    def ready() -> bool:
        try:
            ctx = ssl.create_default_context(cafile=str(ca))
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/health", timeout=2,
                                        context=ctx) as resp:
                return resp.status == 200
        except OSError:
            return False
    return ready


@pytest.mark.slow
@pytest.mark.processes
def test_the_multi_machine_recipe_runs_verbatim_on_loopback(tmp_path, tiny_dir):
    link_port, node_port = free_ports()
    machines = Machines(tmp_path)
    git_before = _git_status()
    try:
        for where, background, text in recipe_blocks():
            blocks = [(replaced(text, tmp_path, link_port, node_port, k),
                       machines.folder(where, k)) for k in (SITES if where == "site" else (0,))]
            if not background:
                machines.run(blocks, timeout=420 if where == "checkout" else 120)
            elif where == "server":
                link = machines.start("superlink", *blocks[0])
                wait_for("the SuperLink answers", superlink_up(
                    link_port, machines.server / "certs" / "ca.crt"), [link])
            else:
                nodes = [machines.start(f"supernode-{k}", *block)
                         for k, block in zip(SITES, blocks, strict=True)]
                wait_for("the SuperNodes are connected", lambda nodes=nodes: all(
                    "SuperNode ID" in log_tail(p.log_path) for p in nodes), machines.procs)
            machines.deliver()
    finally:
        pids = machines.stop()
    out = tmp_path / "runs" / "exp1"
    assert (out / "summary.json").is_file()
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["round"] for r in rows] == [1]
    assert len(pids) == 3 and not any(pid_alive(p) for p in pids)
    assert _git_status() == git_before  # `flwr run .` left the checkout as it was


def _git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                          text=True, check=False).stdout
