"""The drivers of the engine: the multi-round simulation and the one-shot run.

:func:`run_experiment` is the one place that chooses between them: it checks everything the
run needs (:func:`start_run`: the configuration, the model's source, the output folder, the
data) before it writes anything, opens the output folder (new, or an unfinished one to resume),
builds the shared :class:`~fedmllm.runtime.session.Session` and hands it to the driver the plan
names. Importing the package imports no session (nor the model libraries and evaluation it
brings): ``fedmllm run`` refuses a bad configuration or model path before they load.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ..config import Config, ConfigError, load_config
from ..engine.factory import RunPlan, plan_run
from ..errors import CheckpointError, OutputError
from ..files import atomic_write_text
from .outputs import RunFolder

if TYPE_CHECKING:
    from .session import RunResult

__all__ = [
    "RunResult", "Session", "Started", "build_driver", "load_resume_config", "open_run_folder",
    "run_experiment", "start_run",
]


def __getattr__(name: str):
    """:class:`~fedmllm.runtime.session.Session` and :class:`~fedmllm.runtime.session.RunResult`,
    imported on first use (they bring torch)."""
    if name in ("RunResult", "Session"):
        from . import session

        return getattr(session, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Started(NamedTuple):
    """A run that can start (:func:`start_run`): its plan, its opened output folder and its
    data, built and checked."""

    plan: RunPlan
    folder: RunFolder
    data: Any
    """The clients' and the test data (:class:`~fedmllm.data.types.FederatedData`; over
    Flower the test side only, no client's samples)."""


#: Keys a resumed run may change: they do not touch the results.
RESUME_OVERRIDES = ("output.progress", "output.plot")


def load_resume_config(folder: str | Path, overrides: list[str] | tuple = ()) -> Config:
    """The configuration saved in ``folder/config.yaml``, ``output.dir`` set to ``folder``,
    checked before anything loads: the overrides change only :data:`RESUME_OVERRIDES` (one
    giving a key the value it has changes nothing), and an unfinished run's newest readable
    checkpoint (:func:`~fedmllm.engine.checkpoint.newest_readable`) was written with this very
    configuration. Each refusal is one line naming every key that differs, ``key: old → new``,
    and what to do instead."""
    from ..engine.checkpoint import config_changes

    path = Path(folder) / "config.yaml"
    if not path.is_file():
        raise OutputError(f"{folder}: not a fedmllm run folder (no config.yaml)")
    saved, cfg = load_config(path), load_config(path, overrides)
    saved.output.dir = cfg.output.dir = str(folder)
    changes = [c for c in config_changes(saved.to_dict(), cfg.to_dict())
               if c.split(":", 1)[0] not in RESUME_OVERRIDES]
    if changes:
        raise ConfigError(f"--resume keeps the run's configuration, but the overrides change "
                          f"{'; '.join(changes)} (only {', '.join(RESUME_OVERRIDES)} may "
                          f"change; for other values start a new run: fedmllm run --config "
                          f"{path} {' '.join(overrides)} output.dir=NEW_FOLDER)")
    if not RunFolder(folder).finished:
        _check_resume_point(cfg, path)
    return cfg


def _check_resume_point(cfg: Config, path: Path) -> None:
    """Refuse, in one line, a run folder whose checkpoints all fail to read, or whose newest
    readable checkpoint was written with another configuration than ``path`` (its
    ``config.yaml``) now holds."""
    from ..engine.checkpoint import (
        FOLDER,
        config_changes,
        config_digest,
        newest_readable,
        results_config,
    )

    try:
        ckpt, _ = newest_readable(path.parent)
    except CheckpointError as e:
        raise CheckpointError(f"{e}; to run it again from the start, delete "
                              f"{path.parent / FOLDER} and resume") from None
    if ckpt is None or ckpt.config_sha256 == config_digest(cfg):
        return
    changes = config_changes(ckpt.config, results_config(cfg)) if ckpt.config else []
    what = f": {'; '.join(changes)}" if changes else ""
    raise ConfigError(f"{path} was edited after the run's checkpoint ({ckpt.where()}) was "
                      f"written{what}; put the old values back to resume, or start a new run "
                      f"with these: fedmllm run --config {path} output.dir=NEW_FOLDER")


def start_run(cfg: Config, *, resume: bool = False, overwrite: bool = False,
              over_flower: bool = False, test_only: bool = False, data=None) -> Started:
    """Check everything ``cfg`` needs, then open its output folder: nothing is written before
    the run can start, and a refusal (one line) leaves no folder behind.

    In order, cheapest first: the configuration (:func:`~fedmllm.engine.factory.plan_run`;
    ``over_flower``: its clients are a Flower federation's nodes; a local model folder is
    there), the model's source (:func:`~fedmllm.engine.factory.check_model_source`: a hub id
    is cached, or refused offline, or on the hub), the output folder (new and writable, or
    with ``resume`` an unfinished run; nothing created yet), the data (built and checked;
    ``data``: the caller's, checked; ``test_only``: the test side only, a federation's nodes
    hold the clients' samples); then the folder is opened (:func:`open_run_folder`).
    The plan and the data are this process's: pass them on (``started``).
    """
    from ..engine.factory import check_model_source

    plan = plan_run(cfg, over_flower=over_flower)
    check_model_source(plan.model)
    if resume:
        RunFolder.resume(cfg.output.dir)
    else:
        RunFolder.check_new(cfg, overwrite)
    from .session import check_data

    data = check_data(cfg, data, test_only)
    return Started(plan, open_run_folder(cfg, resume=resume, overwrite=overwrite), data)


def open_run_folder(cfg: Config, *, resume: bool = False, overwrite: bool = False
                    ) -> RunFolder:
    """The output folder of a planned ``cfg``: a new one with its ``config.yaml``, or with
    ``resume`` the unfinished one at ``output.dir``, marked ``running``. A new folder that
    cannot be written is removed again (:meth:`~fedmllm.runtime.outputs.RunFolder.discard`)."""
    if resume:
        folder = RunFolder.resume(cfg.output.dir)
        folder.mark("running")
        return folder
    folder = RunFolder.new(cfg, overwrite=overwrite)
    try:
        atomic_write_text(folder.path / "config.yaml", cfg.to_yaml())
    except OSError as e:
        folder.discard()
        raise OutputError(f"{e.filename or folder.path}: cannot write ({e.strerror})") from None
    return folder


def nodes_hold_data(clients) -> bool:
    """Whether an executor factory's clients hold their own samples (a Flower grid's nodes:
    its ``nodes_hold_data`` is true), so that the server builds only its test side."""
    return bool(getattr(clients, "nodes_hold_data", False))


def build_driver(cfg: Config, console=None, *, resume: bool = False, overwrite: bool = False,
                 bundle=None, data=None, started: Started | None = None, clients=None):
    """The driver of ``cfg`` (a multi-round or one-shot run) with its session set up, not run.

    ``bundle``/``data`` reuse a model and data a caller already built (tests, benchmarks; the
    bundle's adapter must hold the run's initial state); ``started`` is :func:`start_run`'s
    result when the caller started the run itself; ``clients`` trains the clients somewhere
    else than in this process (the Flower server passes its grid's; the plan then refuses what
    a federation cannot do).
    """
    from .session import Session

    plan, folder, data = started or start_run(cfg, resume=resume, overwrite=overwrite,
                                              over_flower=clients is not None,
                                              test_only=nodes_hold_data(clients), data=data)
    session = Session(cfg, plan, folder, console=console, bundle=bundle, data=data)
    session.save_data_manifest()
    if plan.oneshot:
        from .oneshot import OneShotRun

        return OneShotRun(session, clients=clients)
    from .simulation import MultiRoundRun

    return MultiRoundRun(session, clients=clients)


def run_experiment(cfg: Config, console=None, *, resume: bool = False, overwrite: bool = False,
                   bundle=None, data=None, started: Started | None = None,
                   clients=None) -> RunResult:
    """Run ``cfg`` to the end (from its last checkpoint with ``resume``); see
    :func:`build_driver` for the arguments. A run that cannot start writes nothing
    (:func:`start_run`); once started, an exception or Ctrl-C leaves its folder marked
    ``failed``/``interrupted`` (resumable)."""
    started = started or start_run(cfg, resume=resume, overwrite=overwrite,
                                   over_flower=clients is not None,
                                   test_only=nodes_hold_data(clients), data=data)
    try:
        driver = build_driver(cfg, console, resume=resume, bundle=bundle, started=started,
                              clients=clients)
        return driver.run(resume=resume)
    except KeyboardInterrupt:
        _mark_quietly(started.folder, "interrupted")
        raise
    except BaseException as e:
        _mark_quietly(started.folder, "failed",
                      error=str(e).splitlines()[0] if str(e) else type(e).__name__)
        raise


def _mark_quietly(folder: RunFolder, status: str, **extra) -> None:
    """Record how a run stopped, unless the folder itself is what failed."""
    try:
        folder.mark(status, **extra)
    except (OSError, OutputError):
        pass
