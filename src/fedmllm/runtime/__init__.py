"""The drivers of the engine: the multi-round simulation and the one-shot run.

:func:`run_experiment` is the one place that chooses between them: it checks the whole
configuration (:func:`~fedmllm.engine.factory.plan_run`) before anything is loaded, opens the
output folder (new, or an unfinished one to resume), builds the shared
:class:`~fedmllm.runtime.session.Session` and hands it to the driver the plan names.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config, ConfigError, load_config
from ..engine.factory import RunPlan, plan_run
from ..errors import CheckpointError, OutputError
from ..files import atomic_write_text
from .outputs import RunFolder
from .session import RunResult, Session

__all__ = [
    "RunResult", "Session", "build_driver", "load_resume_config", "open_run_folder",
    "run_experiment", "start_run",
]

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
              over_flower: bool = False) -> tuple[RunPlan, RunFolder]:
    """Check ``cfg`` (:func:`~fedmllm.engine.factory.plan_run`; ``over_flower``: its clients
    are a Flower federation's nodes) and open its output folder; nothing is loaded yet. The
    plan is this process's: pass it on (``started``) rather than planning again."""
    plan = plan_run(cfg, over_flower=over_flower)
    return plan, open_run_folder(cfg, resume=resume, overwrite=overwrite)


def open_run_folder(cfg: Config, *, resume: bool = False, overwrite: bool = False
                    ) -> RunFolder:
    """The output folder of a planned ``cfg``: a new one with its ``config.yaml``, or with
    ``resume`` the unfinished one at ``output.dir``, marked ``running``."""
    if resume:
        folder = RunFolder.resume(cfg.output.dir)
        folder.mark("running")
        return folder
    folder = RunFolder.new(cfg, overwrite=overwrite)
    try:
        atomic_write_text(folder.path / "config.yaml", cfg.to_yaml())
    except OSError as e:
        raise OutputError(f"{e.filename or folder.path}: cannot write ({e.strerror})") from None
    return folder


def build_driver(cfg: Config, console=None, *, resume: bool = False, overwrite: bool = False,
                 bundle=None, data=None, started: tuple[RunPlan, RunFolder] | None = None,
                 clients=None):
    """The driver of ``cfg`` (a multi-round or one-shot run) with its session set up, not run.

    ``bundle``/``data`` reuse a model and data a caller already built (tests, benchmarks; the
    bundle's adapter must hold the run's initial state); ``started`` is :func:`start_run`'s
    result when the caller opened the folder itself; ``clients`` trains the clients somewhere
    else than in this process (the Flower server passes its grid's; the plan then refuses what
    a federation cannot do).
    """
    plan, folder = started or start_run(cfg, resume=resume, overwrite=overwrite,
                                        over_flower=clients is not None)
    session = Session(cfg, plan, folder, console=console, bundle=bundle, data=data)
    session.save_data_manifest()
    if plan.oneshot:
        from .oneshot import OneShotRun

        return OneShotRun(session, clients=clients)
    from .simulation import MultiRoundRun

    return MultiRoundRun(session, clients=clients)


def run_experiment(cfg: Config, console=None, *, resume: bool = False, overwrite: bool = False,
                   bundle=None, data=None, started: tuple[RunPlan, RunFolder] | None = None,
                   clients=None) -> RunResult:
    """Run ``cfg`` to the end (from its last checkpoint with ``resume``); see
    :func:`build_driver` for the arguments. An exception or Ctrl-C leaves the folder marked
    ``failed``/``interrupted`` (resumable)."""
    plan, folder = started or start_run(cfg, resume=resume, overwrite=overwrite,
                                        over_flower=clients is not None)
    try:
        driver = build_driver(cfg, console, resume=resume, bundle=bundle, data=data,
                              started=(plan, folder), clients=clients)
        return driver.run(resume=resume)
    except KeyboardInterrupt:
        _mark_quietly(folder, "interrupted")
        raise
    except BaseException as e:
        _mark_quietly(folder, "failed",
                      error=str(e).splitlines()[0] if str(e) else type(e).__name__)
        raise


def _mark_quietly(folder: RunFolder, status: str, **extra) -> None:
    """Record how a run stopped, unless the folder itself is what failed."""
    try:
        folder.mark(status, **extra)
    except (OSError, OutputError):
        pass
