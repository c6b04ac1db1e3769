"""``flwr run .`` on Flower's simulation engine: where its run folders go, the size of the
simulated federation, and the local SuperLink that flwr leaves running.

From the repository root, ``flwr run . --stream`` submits the App to the default SuperLink
connection of the Flower configuration (``$FLWR_HOME/config.toml``, ``FLWR_HOME`` defaulting to
``~/.flwr``). A fresh ``FLWR_HOME`` gets one whose default connection is ``local``, address
``":local:"``: flwr then starts a managed SuperLink in simulation mode (a detached
``flower-superlink --simulation``, its state and log in ``$FLWR_HOME/local-superlink/``; see
``flwr/cli/local_superlink.py``), submits the run to it and leaves it running. That SuperLink
keeps the simulated federation's size in memory (not in its database): 2 virtual SuperNodes
from every start until ``flwr federation simulation-config --num-supernodes N`` changes it.
Flower's simulation engine gives virtual node ``i`` the node config ``partition-id=i
num-partitions=N``, which is what the ClientApp reads (:func:`.client.node_partition`): N must
be ``fl.num_clients``.

- :func:`simulation_config_argv`: the ``flwr federation simulation-config`` command for one
  SuperNode per client (``fedmllm flower simulation-config`` runs it).
- :func:`stop_local_superlink`: stop the managed SuperLink of an ``FLWR_HOME`` and its
  children (``fedmllm flower stop-local``); Flower 1.42 has no command for it.
- :func:`with_output_dir`: the ServerApp's run folder when the run config names none.

Importing this module imports nothing from Flower (it drives flwr's command line).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ...config import ConfigError


def flwr_home() -> Path:
    """The Flower home folder: ``$FLWR_HOME``, else ``~/.flwr`` (as flwr resolves it)."""
    return Path(os.environ.get("FLWR_HOME") or Path.home() / ".flwr")


def flwr_exe() -> str:
    """The ``flwr`` command of this Python environment (else the one on ``PATH``)."""
    from .procs import FederationError, exe

    try:
        return exe("flwr")
    except FederationError as e:
        raise ConfigError(f"{e}: pip install 'fedmllm[flower]'") from None


# ----------------------------------------------------------------------------- run folders

def runs_root() -> Path:
    """Where a run folder without ``output.dir`` goes: ``runs/`` of the source tree this
    fedmllm is imported from (an editable install: the repository ``flwr run .`` is typed in),
    else of the working directory (the one the local SuperLink was started from)."""
    import fedmllm

    src = Path(fedmllm.__file__).resolve().parent.parent
    if src.name == "src" and (src.parent / "pyproject.toml").is_file():
        return src.parent / "runs"
    return Path.cwd().resolve() / "runs"


def with_output_dir(run_config: dict[str, Any]) -> dict[str, Any]:
    """``run_config`` with ``output.dir`` set to a new absolute folder under :func:`runs_root`
    when neither the run config, its ``config-file`` nor its ``overrides`` set one (and it does
    not ``resume``). The ServerApp's working directory is the managed SuperLink's, not the
    user's: a relative ``runs/`` would land wherever that SuperLink was first started."""
    from ..outputs import default_dir
    from .appconfig import config_from_run

    if run_config.get("resume") or run_config.get("output.dir"):
        return run_config
    cfg, _, _ = config_from_run(run_config)
    if cfg.output.dir:
        return run_config
    return {**run_config, "output.dir": str(default_dir(cfg, runs_root()))}


# ----------------------------------------------------------------------------- sizing

def simulation_config_argv(supernodes: int, gpus: float | None = None,
                           cpus: int | None = None) -> list[str]:
    """``flwr federation simulation-config`` for ``supernodes`` virtual SuperNodes (one per
    client), each ClientApp given ``gpus`` of a GPU (a fraction: 0.5 puts two on one GPU) and
    ``cpus`` CPUs (Ray's ``client-resources``; flwr's defaults: 0 GPUs, 2 CPUs)."""
    if supernodes < 1:
        raise ConfigError(f"--clients {supernodes}: at least 1 SuperNode")
    if gpus is not None and gpus < 0:
        raise ConfigError(f"--gpus {gpus}: a GPU fraction is >= 0")
    if cpus is not None and cpus < 1:
        raise ConfigError(f"--cpus {cpus}: at least 1 CPU per ClientApp")
    argv = [flwr_exe(), "federation", "simulation-config", "--num-supernodes", str(supernodes)]
    if gpus is not None:
        argv += ["--client-resources-num-gpus", str(gpus)]
    if cpus is not None:
        argv += ["--client-resources-num-cpus", str(cpus)]
    return argv


# ----------------------------------------------------------------------------- stopping

def local_superlinks(home: Path):
    """The running managed SuperLinks of Flower home ``home`` (``psutil.Process``es): the
    ``flower-superlink --simulation`` processes whose ``--log-file`` lies in
    ``home/local-superlink/``, as flwr starts them."""
    import psutil

    folder = (Path(home) / "local-superlink").resolve()
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if not any(Path(c).name == "flower-superlink" for c in cmd[:2]):
            continue
        if "--simulation" in cmd and "--log-file" in cmd[:-1]:
            log = Path(cmd[cmd.index("--log-file") + 1])
            if log.resolve().parent == folder:
                found.append(proc)
    return found


def stop_local_superlink(home: Path, timeout: float = 10.0) -> list[int]:
    """Stop the managed SuperLink of ``home`` and its children (its SuperExec, a simulation
    still running and the Ray processes it started): SIGTERM, then SIGKILL after ``timeout``
    seconds. Returns the PIDs stopped (empty: none was running). Its database
    (``local-superlink/state.db``: the runs) stays; the federation's size, which it keeps in
    memory, is Flower's default again at its next start."""
    import psutil

    procs = []
    for link in local_superlinks(home):
        try:
            procs += [link, *link.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=timeout)
    return [p.pid for p in procs]
