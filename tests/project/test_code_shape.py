"""The code's shape: functions that fit a screen, and the lint (line length 100) clean.

A function of ``src/fedmllm`` has at most :data:`MAX_LINES` lines, docstring included, unless
:data:`LONGER` names it with the reason it is longer.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

PACKAGE = ROOT / "src" / "fedmllm"
MAX_LINES = 60

# "module:qualified.name" -> why it is longer than MAX_LINES.
LONGER: dict[str, str] = {}


def long_functions(limit: int = MAX_LINES) -> dict[str, int]:
    """``"module:qualname" -> lines`` for every function of the package over ``limit`` lines."""
    found: dict[str, int] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

        def visit(node: ast.AST, prefix: str, module: str = module) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    name = f"{prefix}{child.name}"
                    if not isinstance(child, ast.ClassDef):
                        size = child.end_lineno - child.lineno + 1
                        if size > limit:
                            found[f"{module}:{name}"] = size
                    visit(child, name + ".", module)

        visit(tree, "")
    return found


def test_functions_fit_a_screen():
    over = {k: v for k, v in long_functions().items() if k not in LONGER}
    assert not over, f"functions over {MAX_LINES} lines (split them, or say why in LONGER): {over}"


def test_longer_list_names_real_long_functions():
    stale = sorted(set(LONGER) - set(long_functions()))
    assert not stale, f"LONGER names functions that are no longer long (remove them): {stale}"


def test_long_function_finder_sees_a_long_function(tmp_path, monkeypatch):
    pkg = tmp_path / "fedmllm"
    pkg.mkdir()
    body = "\n".join(f"        x{i} = {i}" for i in range(MAX_LINES))
    (pkg / "m.py").write_text(f"class C:\n    def f(self):\n{body}\n\ndef g():\n    pass\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    assert long_functions() == {"fedmllm.m:C.f": MAX_LINES + 1}


@pytest.mark.processes
@pytest.mark.skipif(shutil.which("ruff", path=str(Path(sys.executable).parent)) is None,
                    reason="ruff is not installed (the dev extra)")
def test_ruff_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    done = subprocess.run([ruff, "check", "--no-cache", "src", "tests", "benchmarks", "tools"],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
