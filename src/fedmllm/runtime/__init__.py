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
from ..errors import OutputError
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
    """The configuration saved in ``folder/config.yaml`` (with only :data:`RESUME_OVERRIDES`
    allowed as overrides) and ``output.dir`` set to ``folder``."""
    path = Path(folder) / "config.yaml"
    if not path.is_file():
        raise OutputError(f"{folder}: not a fedmllm run folder (no config.yaml)")
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key not in RESUME_OVERRIDES:
            raise ConfigError(f"{key}: a resumed run keeps its configuration; only "
                              f"{', '.join(RESUME_OVERRIDES)} may be changed")
    cfg = load_config(path, overrides)
    cfg.output.dir = str(folder)
    return cfg


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
