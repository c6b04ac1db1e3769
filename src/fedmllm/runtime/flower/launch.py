"""``fedmllm flower local``: a whole run over a Flower federation on this machine.

The command checks the configuration and opens the run folder exactly as ``fedmllm run`` does
(nothing is started for a configuration with a mistake), starts one SuperLink and N SuperNodes
on loopback (:mod:`.local`: TLS and SuperNode authentication by default), submits the app with
``flwr run`` and follows the ServerApp's output, then stops every process it started, also on
Ctrl-C or an error. The ServerApp takes over the folder the command prepared (status
``launching``, its ``config.yaml`` passed as ``config-file``), and ``--resume DIR`` after a
crash has the ServerApp continue from the checkpoint it wrote (``resume=true``).

The app is submitted from a folder written under ``<output.dir>/flower/app/``: a
``pyproject.toml`` with ``[tool.flwr.app]`` (components and the run-config table) and no
code, since every process imports the installed fedmllm. This works the same for an editable
and a regular install.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ... import __version__
from ...config import Config
from ...errors import OutputError
from ...files import atomic_write_text
from ..outputs import RunFolder, default_dir
from .appconfig import as_toml, flower_defaults

#: How a SuperNode runs its ClientApp: ``warm`` = one process per SuperNode for the whole run
#: (the model loads once); ``subprocess`` = flwr's default, a new process per message.
CLIENTAPP_MODES = ("warm", "subprocess")


def write_app(folder: Path) -> Path:
    """A Flower App folder for the installed fedmllm (``pyproject.toml`` only)."""
    folder.mkdir(parents=True, exist_ok=True)
    text = "\n".join([
        "[build-system]", 'requires = ["setuptools>=68"]',
        'build-backend = "setuptools.build_meta"', "",
        "[project]", 'name = "fedmllm"', f'version = "{__version__}"',
        'description = "fedmllm as a Flower App (the installed package runs it)"',
        'license = "Apache-2.0"', "",
        "[tool.flwr.app]", 'publisher = "fedmllm"', 'fab-include = ["pyproject.toml"]', "",
        "[tool.flwr.app.components]",
        'serverapp = "fedmllm.runtime.flower.app:server_app"',
        'clientapp = "fedmllm.runtime.flower.app:client_app"', "",
        "[tool.flwr.app.config]", as_toml(flower_defaults()), ""])
    atomic_write_text(folder / "pyproject.toml", text)
    return folder


def open_folder(cfg: Config, supernodes: int, *, resume: str | None, overwrite: bool
                ) -> RunFolder:
    """Check ``cfg`` for a federation of ``supernodes`` nodes (this process's one
    :func:`~fedmllm.engine.factory.plan_run` and the model's source: every mistake before a
    process starts) and open its run folder (absolute path) for the ServerApp."""
    from ...engine.factory import check_model_source, plan_run
    from .. import open_run_folder
    from .local import kill_recorded

    check_model_source(plan_run(cfg, supernodes=supernodes).model)
    if resume:
        folder = open_run_folder(cfg, resume=True)
        kill_recorded(folder.path)  # processes a crashed launcher left behind
    else:
        path = Path(cfg.output.dir) if cfg.output.dir else default_dir(cfg)
        cfg.output.dir = str(path.resolve())
        folder = open_run_folder(cfg, overwrite=overwrite)
    folder.mark("launching")  # the ServerApp process takes it over
    return folder


def run_local(cfg: Config, supernodes: int, console, *, resume: str | None = None,
              overwrite: bool = False, insecure: bool = False, clientapp: str = "warm",
              data_dir: str | None = None, timeout: float = 24 * 3600.0,
              gpus: list[str] | None = None) -> dict:
    """Run ``cfg`` over a loopback federation of ``supernodes`` nodes; its ``summary.json``.

    ``gpus``: SuperNode ``i`` (and its ClientApp processes) sees only device
    ``gpus[i % len(gpus)]`` (``CUDA_VISIBLE_DEVICES``).

    Raises :class:`~fedmllm.errors.OutputError` when the run does not finish (the message
    names the log to read); the folder then stays resumable.
    """
    from .local import start_federation

    folder = open_folder(cfg, supernodes, resume=resume, overwrite=overwrite)
    out = folder.path
    console.print(f"fedmllm flower local — {'resuming' if resume else 'starting'} in {out} "
                  f"({supernodes} SuperNodes, {'insecure' if insecure else 'TLS'}, "
                  f"ClientApp {clientapp}"
                  f"{', GPUs ' + ','.join(gpus) if gpus else ''})", markup=False)
    nodes = [{"data-dir": str(Path(data_dir).resolve())} for _ in range(supernodes)] \
        if data_dir else None
    app = write_app(out / "flower" / "app")
    # N ClientApps train at the same time on this machine's cores: one share each, or their
    # threads fight over the cores (measured here: 4-5x slower steps with 2 x 2 threads on 2)
    threads = str(max(1, (os.cpu_count() or 1) // supernodes))
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    try:
        with start_federation(out, supernodes, insecure=insecure, clientapp=clientapp,
                              node_configs=nodes, env=env, gpus=gpus) as fed:
            conf = {"resume": True} if resume else {"config-file": str(out / "config.yaml")}
            run = fed.submit_app(app, {**conf, "output.dir": str(out)})
            _follow(run, console)
            result = run.wait(timeout)
    except KeyboardInterrupt:
        _mark(folder, "interrupted")
        raise
    summary = out / "summary.json"
    if not result.ok or not summary.is_file():
        status = folder.status().get("status")
        if status in (None, "launching", "running"):
            _mark(folder, "failed", error=f"Flower run {result.status}")
        raise OutputError(f"the Flower run ended {result.status} ({result.details}); its "
                          f"output is in {result.log_path}")
    return json.loads(summary.read_text())


def _mark(folder: RunFolder, status: str, **extra) -> None:
    try:
        folder.mark(status, **extra)
    except OutputError:
        pass


def _follow(run, console, poll: float = 0.5) -> None:
    """Print the ServerApp's output as ``flwr run --stream`` writes it, until it ends."""
    path, offset, pending = run.proc.log_path, run.log_offset, ""
    while True:
        alive = run.proc.alive()
        try:
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
        except OSError:
            chunk = b""
        offset += len(chunk)
        pending += chunk.decode("utf-8", errors="replace")
        *lines, pending = pending.split("\n")
        for line in lines:
            if line.strip():
                console.print(line.rstrip(), markup=False)
        if not alive:
            if pending.strip():
                console.print(pending.rstrip(), markup=False)
            return
        time.sleep(poll)
