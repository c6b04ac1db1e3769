"""The layer contract of ``fedmllm.fl``: no import cycle, torch/numpy/stdlib only.

The import graph is built from the source with ``ast``: every ``import`` and ``from ... import``
anywhere in a module (inside functions and under ``TYPE_CHECKING`` too), relative imports
resolved, and a name imported from a package counted as that submodule when it is one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import fedmllm.fl

FL_DIR = Path(fedmllm.fl.__file__).parent
PACKAGE = "fedmllm.fl"


def _module_name(path: Path) -> str:
    rel = path.relative_to(FL_DIR).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join([PACKAGE, *parts])


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(FL_DIR.rglob("*.py"))}


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _imports(name: str, path: Path, modules: dict[str, Path]):
    """``(target, lineno, inside_function)`` for every import in the module ``name``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if _is_package(path) else name.rpartition(".")[0]
    in_function: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            in_function.update(id(n) for n in ast.walk(node) if n is not node)
    for node in ast.walk(tree):
        nested = id(node) in in_function
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, nested
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                inside = target == PACKAGE or target.startswith(PACKAGE + ".")
                # outside fl/ the name is kept (``from peft.utils import merge_utils`` is
                # ``peft.utils.merge_utils``); inside, only when it is a submodule
                yield (sub if sub in modules or not inside else target), node.lineno, nested


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: {t for t, _, _ in _imports(name, path, modules) if t in modules}
        for name, path in modules.items()
    }


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _find_cycle(graph) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_relative_function_level_and_submodule_imports():
    graph = _graph()
    # a relative import of a sibling module and a name imported from a package's submodule
    assert "fedmllm.fl.strategies.base" in graph["fedmllm.fl.strategies.fedavg"]
    assert "fedmllm.fl.oneshot.keys" in graph["fedmllm.fl.yoco.objective"]
    assert len(graph) >= 30


def test_no_import_cycle_in_fl():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_submodules_never_import_through_their_own_package():
    """A module imports its siblings directly, never through its package's ``__init__`` (nor
    any package above it, ``fedmllm.fl`` included)."""
    modules = _modules()
    bad = []
    for name, path in modules.items():
        parts = name.split(".")
        ancestors = {".".join(parts[:i]) for i in range(2, len(parts))}
        for target, line, _ in _imports(name, path, modules):
            if target in ancestors:
                bad.append(f"{path.relative_to(FL_DIR)}:{line} imports {target}")
    assert not bad, "\n".join(bad)


STDLIB = set(sys.stdlib_module_names)


def test_fl_imports_only_torch_numpy_and_the_standard_library():
    modules = _modules()
    bad = []
    for name, path in modules.items():
        for target, line, nested in _imports(name, path, modules):
            root = target.split(".")[0]
            where = f"{path.relative_to(FL_DIR)}:{line} imports {target}"
            if target.startswith(PACKAGE + ".") or target == PACKAGE:
                continue
            if root == "fedmllm":
                bad.append(where + " (another fedmllm layer)")
            elif target == "peft.utils.merge_utils" and nested:
                continue  # pure-torch merge kernels, imported lazily inside a function
            elif root not in STDLIB | {"torch", "numpy", "__future__"}:
                bad.append(where)
    assert not bad, "\n".join(bad)


def test_importing_fl_loads_no_transformers_peft_or_flower():
    code = (
        "import sys, fedmllm.fl; "
        "bad = [m for m in ('transformers', 'flwr', 'peft') if m in sys.modules]; "
        "sys.exit(f'fedmllm.fl imported {bad}' if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
