"""Writing files so that a crash never leaves a half-written file looking complete.

Every output of the project goes through these helpers: the data goes to a temporary sibling
(``.<name>.tmp-<random>``, in the same folder, hence on the same file system), is flushed and
fsynced, and is then renamed over the target with :func:`os.replace`, which is atomic on POSIX
and Windows. A reader sees the old content or the new one, never a mix. Folders are written the
same way (:func:`atomic_dir`); replacing an existing folder moves it aside first, so there is a
short moment with neither, never one with a half-written folder.

Standard library only (the data layer uses it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (temporary sibling, fsync, rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if fsync:
        _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, fsync: bool = True,
                      indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (non-JSON values through ``str``)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=str) + "\n",
                             fsync=fsync)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, replace: bool = True) -> Iterator[Path]:
    """Build a folder in a temporary sibling and rename it to ``path`` when the block succeeds.

    ``with atomic_dir(out) as tmp: ...`` writes into ``tmp``; on an exception the temporary
    folder is removed and ``path`` is left as it was. An existing ``path`` is replaced
    (``replace=True``) or makes the rename fail with ``FileExistsError``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if path.exists():
            if not replace:
                raise FileExistsError(f"{path}: already exists")
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            old.rmdir()
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def looks_local(name: str) -> bool:
    """Whether a model name means a folder on this machine rather than a Hugging Face hub id
    (``name`` or ``org/name``), by one rule: it is written as a path (it starts with ``/``,
    ``.`` or ``~``, or holds a backslash or a second ``/``), or its first component is a folder
    here (with ``models/`` present, ``models/qwen2-vl-2b`` is a folder in it), or it exists
    here as a whole. Anything else is a hub id."""
    if name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1:
        return True
    return Path(name.split("/", 1)[0]).is_dir() or Path(name).exists()


def local_model_problem(name: str) -> str | None:
    """Why ``name``, a model name that :func:`looks_local`, is no model folder (``"no such
    model folder"``, ``"not a model folder (no config.json)"``); ``None`` for a model folder or
    a hub id. The caller names the key or the path."""
    if not looks_local(name):
        return None
    path = Path(name).expanduser()
    if not path.is_dir():
        return "no such model folder"
    if not (path / "config.json").is_file():
        return "not a model folder (no config.json)"
    return None
