"""Render a sweep's ``report.html`` to a PNG with headless Chromium, to check it by eye.

    python benchmarks/render_report.py runs/bench-quick/report.html report.png

runs ``chromium --headless --screenshot=OUT.png --window-size=1400,4000 file://REPORT`` (the
window's height is the page's height in the picture: ``--height`` to see more). Chromium is a
development tool here, not a dependency of fedmllm: on Debian, ``apt-get install -y chromium``
where ``/usr/bin/chromium`` is missing. Exit 2 with one line where the report or Chromium is
not there or Chromium draws nothing.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def render(report: Path, out: Path, width: int = 1400, height: int = 4000,
           chromium: str | None = None) -> Path:
    """``report`` (an HTML file) drawn by headless Chromium into the PNG ``out``."""
    if not report.is_file():
        raise SystemExit(f"render_report: {report}: no such file")
    exe = chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise SystemExit("render_report: no chromium on PATH (Debian: apt-get install -y "
                         "chromium; a development tool, not a fedmllm dependency)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as profile:  # no state left in the user's profile
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={profile}", f"--screenshot={out.resolve()}",
               f"--window-size={width},{height}", report.resolve().as_uri()]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise SystemExit(f"render_report: {exe}: {e}") from None
    if not out.is_file() or out.stat().st_size == 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"render_report: chromium wrote no {out} (exit {done.returncode}: "
                         f"{tail})")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path, help="a sweep's report.html")
    ap.add_argument("out", type=Path, help="the PNG to write")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=4000)
    ap.add_argument("--chromium", help="the Chromium executable (default: found on PATH)")
    args = ap.parse_args(argv)
    try:
        path = render(args.report, args.out, args.width, args.height, args.chromium)
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
