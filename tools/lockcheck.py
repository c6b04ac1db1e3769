"""Check that this Python environment holds exactly the packages a lock file pins.

    python tools/lockcheck.py [--show] [--except NAME,...] requirements-lock.txt

Every ``name==version`` line of the lock must be installed at that version, and nothing else
may be installed except pip itself and the project (``fedmllm``, installed editable beside the
lock). Prints one line per difference and exits 1, or one line saying the two agree. With
``--show`` it only reports: how an unpinned environment (``make test-latest``) differs from
the lock, exit 0. ``--except torch,torchvision`` leaves those packages out of the comparison
(a GPU machine keeps its own CUDA build of torch). Standard library only: it runs right after
``pip install -r LOCK``.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

#: installed beside the lock, not by it
NOT_LOCKED = {"pip", "fedmllm"}


def canonical(name: str) -> str:
    """PEP 503 name normalisation: ``Tomli_W`` and ``tomli-w`` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    """``{name: version}`` from the ``name==version`` lines of a pip requirements file."""
    pins: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)(\s*;.*)?", line)
        if m is None:
            raise SystemExit(f"{path}:{n}: not a 'name==version' pin: {line!r}")
        pins[canonical(m.group(1))] = m.group(2)
    return pins


def installed() -> dict[str, str]:
    return {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}


def differences(lock: dict[str, str], have: dict[str, str]) -> list[str]:
    out = []
    for name in sorted(lock.keys() | have.keys()):
        want, got = lock.get(name), have.get(name)
        if want == got or (want is None and name in NOT_LOCKED):
            continue
        if got is None:
            out.append(f"{name}: locked at {want}, not installed")
        elif want is None:
            out.append(f"{name}: {got} installed, not in the lock")
        else:
            out.append(f"{name}: locked at {want}, {got} installed")
    return out


def main(argv: list[str]) -> int:
    show = "--show" in argv
    argv = [a for a in argv if a != "--show"]
    skip: set[str] = set()
    if "--except" in argv and argv.index("--except") + 1 < len(argv):
        i = argv.index("--except")
        skip = {canonical(n) for n in argv[i + 1].split(",") if n}
        argv = argv[:i] + argv[i + 2:]
    if len(argv) != 1:
        print("usage: python tools/lockcheck.py [--show] [--except NAME,...] LOCK",
              file=sys.stderr)
        return 2
    path = Path(argv[0])
    lock = {k: v for k, v in read_lock(path).items() if k not in skip}
    have = {k: v for k, v in installed().items() if k not in skip}
    diff = differences(lock, have)
    if show:
        print(f"this environment against {path}: " + ("the same" if not diff else
                                                      f"{len(diff)} difference(s)"))
        for line in diff:
            print(f"  {line}")
        return 0
    for line in diff:
        print(f"{path}: {line}", file=sys.stderr)
    if diff:
        print(f"{path}: this environment differs from the lock in {len(diff)} package(s)",
              file=sys.stderr)
        return 1
    print(f"{path}: the environment holds exactly the {len(read_lock(path))} locked packages")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
