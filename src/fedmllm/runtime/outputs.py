"""The output folder of a run, and the rules that keep finished runs from being lost.

A run folder holds ``run.json`` (its status), ``config.yaml``, ``data_manifest.json``,
``metrics.jsonl``, ``checkpoint/`` and, once finished, ``summary.json``, ``adapter/`` and
``metrics.png``. The status is ``launching`` while ``fedmllm flower local`` starts the processes
that will run it, ``running`` while a process works on it, ``interrupted``
(Ctrl-C) or ``failed`` (an error) when it stopped early, and ``finished`` once ``summary.json``
is written; a run killed outright stays ``running`` with a process id that no longer exists.

- Without ``output.dir`` a new folder ``runs/<algorithm>-<dataset>-<YYYYmmdd-HHMMSS>`` is made
  (``-2``, ``-3`` ... when that name is taken).
- A folder that holds a finished run is refused unless ``--overwrite``; one that holds an
  unfinished run says to ``--resume`` it (or ``--overwrite``); a non-empty folder that is not a
  run folder is refused (``--overwrite`` never deletes what fedmllm did not write).
- A path that is a file, or cannot be written, is one :class:`~fedmllm.errors.OutputError`
  naming it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

from ..config import Config
from ..errors import OutputError
from ..files import atomic_write_json

STATUS = "run.json"
SUMMARY = "summary.json"
#: Files whose presence marks a folder as a fedmllm run folder.
RUN_MARKERS = (STATUS, "config.yaml", SUMMARY)


def default_dir(cfg: Config, root: str | Path = "runs") -> Path:
    """``runs/<algorithm>-<dataset>-<YYYYmmdd-HHMMSS>``, made unique with a ``-N`` suffix."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{cfg.fl.algorithm}-{cfg.data.dataset}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _check_writable(path: Path) -> None:
    """``path``, or the folder it would be created in (its nearest existing ancestor), is a
    folder this process may write in; one :class:`~fedmllm.errors.OutputError` otherwise."""
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputError(f"{path}: output folder is not writable")
        return
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{parent}: exists and is not a folder (output.dir {path})")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: cannot create the output folder ({parent} is not "
                          "writable)")


class RunFolder:
    """A run's output folder; create one with :meth:`new` or :meth:`resume`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.created = False
        """Whether :meth:`new` created the folder (rather than reusing an empty one)."""

    # ------------------------------------------------------------------ state
    def status(self) -> dict:
        """``run.json`` as a dict (``{}`` when absent or unreadable)."""
        try:
            data = json.loads((self.path / STATUS).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @property
    def finished(self) -> bool:
        return (self.path / SUMMARY).is_file()

    def is_run_folder(self) -> bool:
        return any((self.path / m).exists() for m in RUN_MARKERS)

    def _live_owner(self) -> int | None:
        st = self.status()
        pid = st.get("pid")
        if st.get("status") == "running" and isinstance(pid, int) and pid != os.getpid() \
                and st.get("host") == socket.gethostname() and _pid_alive(pid):
            return pid
        return None

    def mark(self, status: str, **extra) -> None:
        """Write ``run.json`` with ``status`` (and this process's id while running)."""
        data = self.status()
        data.update(status=status, updated=time.strftime("%Y-%m-%dT%H:%M:%S"), **extra)
        if status == "running":
            data.update(pid=os.getpid(), host=socket.gethostname())
            data.setdefault("started", data["updated"])
        try:
            atomic_write_json(self.path / STATUS, data)
        except OSError as e:
            raise OutputError(f"{self.path / STATUS}: cannot write ({e.strerror})") from None

    def record_resume(self, step: int) -> None:
        """Add ``step`` (rounds or clients already done) to the ``resumes`` list of ``run.json``."""
        self.mark("running", resumes=[*self.status().get("resumes", []), step])

    def resumes(self) -> list[int]:
        """The steps this run was resumed from, in order."""
        return list(self.status().get("resumes", []))

    def _opened_by_launcher(self) -> bool:
        """Opened for this run by ``fedmllm flower local``, which is starting it."""
        return self.status().get("status") == "launching" and not self.finished \
            and not (self.path / "checkpoint").exists()

    def _taken(self) -> bool:
        """Whether the folder holds something a new run must not simply write into."""
        return self.path.is_dir() and any(self.path.iterdir()) and not self._opened_by_launcher()

    # ------------------------------------------------------------------ opening
    @classmethod
    def check_new(cls, cfg: Config, overwrite: bool = False) -> RunFolder:
        """The folder a new run of ``cfg`` gets (``cfg.output.dir`` or a fresh default),
        checked as :meth:`new` checks it, but nothing is created, removed or written: a
        :class:`~fedmllm.errors.OutputError` when it is a file, a foreign or live folder, a run
        without ``overwrite``, or cannot be created or written."""
        path = Path(cfg.output.dir) if cfg.output.dir else default_dir(cfg)
        folder = cls(path)
        if path.exists() and not path.is_dir():
            raise OutputError(f"{path}: exists and is not a folder (output.dir)")
        if folder._taken():
            if not folder.is_run_folder():
                raise OutputError(f"{path}: not empty and not a fedmllm run folder; choose "
                                  "another output.dir")
            owner = folder._live_owner()
            if owner is not None:
                raise OutputError(f"{path}: a run is in progress there (pid {owner})")
            if not overwrite:
                if folder.finished:
                    raise OutputError(f"{path}: holds a finished run; pass --overwrite to "
                                      "replace it, or choose another output.dir")
                raise OutputError(f"{path}: holds an unfinished run; continue it with "
                                  f"`fedmllm run --resume {path}` (or pass --overwrite)")
        _check_writable(path)
        return folder

    @classmethod
    def new(cls, cfg: Config, overwrite: bool = False) -> RunFolder:
        """The folder for a new run of ``cfg``, checked (:meth:`check_new`), created and marked
        ``running``. Sets ``cfg.output.dir`` to the folder. A folder this call created is
        removed again when its ``run.json`` cannot be written (:meth:`discard`)."""
        folder = cls.check_new(cfg, overwrite)
        path = folder.path
        if folder._taken():  # a run to replace (check_new refused it without overwrite)
            try:
                shutil.rmtree(path)
            except OSError as e:
                raise OutputError(f"{e.filename or path}: cannot remove ({e.strerror})") from None
        folder.created = not path.exists()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{e.filename or path}: cannot create the output folder "
                              f"({e.strerror})") from None
        cfg.output.dir = str(path)
        try:
            folder.mark("running")
        except OutputError:
            folder.discard()
            raise
        return folder

    def discard(self) -> None:
        """Remove the folder when this process created it (:meth:`new`) for a run that then
        could not start; a folder that was there before is left as it is."""
        if self.created:
            shutil.rmtree(self.path, ignore_errors=True)

    @classmethod
    def resume(cls, path: str | Path) -> RunFolder:
        """An existing unfinished run folder to continue, checked (nothing is written:
        :func:`~fedmllm.runtime.open_run_folder` marks it ``running``)."""
        path = Path(path)
        folder = cls(path)
        if not path.is_dir():
            raise OutputError(f"{path}: no such run folder")
        if not (path / "config.yaml").is_file():
            raise OutputError(f"{path}: not a fedmllm run folder (no config.yaml)")
        owner = folder._live_owner()
        if owner is not None:
            raise OutputError(f"{path}: a run is in progress there (pid {owner})")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputError(f"{path}: output folder is not writable")
        return folder
