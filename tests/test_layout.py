"""The package's shape: no import cycle anywhere, and each layer imports only what it may.

The import graph is read from the source with ``ast``: every ``import`` and ``from ... import``
anywhere in a module (inside functions and under ``TYPE_CHECKING`` too, so a lazy import that
closes a cycle counts), relative imports resolved, and a name imported from a package counted
as that submodule when it is one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
STDLIB = set(sys.stdlib_module_names)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted((SRC / "fedmllm").rglob("*.py"))}


def imports(name: str) -> Iterator[tuple[str, int, bool]]:
    """``(target, line, inside a function)`` for every import of module ``name``; a target in
    the project is a module of :data:`MODULES`, an outside one keeps its full dotted name."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nested: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            nested.update(id(n) for n in ast.walk(node) if n is not node)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, id(node) in nested
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                inside = target.split(".")[0] == "fedmllm"
                yield (sub if sub in MODULES or not inside else target), node.lineno, \
                    id(node) in nested


def project_imports(name: str) -> set[str]:
    """The project modules ``name`` imports (a dotted name is cut back to its module)."""
    out = set()
    for target, _, _ in imports(name):
        while target and target not in MODULES and "." in target:
            target = target.rpartition(".")[0]
        if target in MODULES and target != name:
            out.add(target)
    return out


GRAPH = {m: project_imports(m) for m in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of modules (first == last), or ``None``."""
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


def in_layer(module: str, layer: str) -> bool:
    return module == layer or module.startswith(layer + ".")


# ----------------------------------------------------------------------------- the graph itself

def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_graph_sees_relative_lazy_and_submodule_imports():
    assert "fedmllm.runtime" in GRAPH["fedmllm.cli"]  # relative, inside a function
    assert "fedmllm.fl" in GRAPH["fedmllm.engine.factory"]
    assert "fedmllm.fl.strategies.base" in GRAPH["fedmllm.fl.strategies.fedavg"]
    assert "fedmllm.fl.oneshot.keys" in GRAPH["fedmllm.fl.yoco.objective"]
    assert "fedmllm.data.prepared" in GRAPH["fedmllm.data.build"]
    assert "fedmllm.data.reading" in GRAPH["fedmllm.data.datasets.vqa_rad"]
    assert "fedmllm.data.synth" in GRAPH["fedmllm.model.tiny.corpus"]
    assert "fedmllm.files" in GRAPH["fedmllm.data.prepared"]
    assert len(GRAPH) >= 80


def test_no_import_cycle_anywhere():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# ----------------------------------------------------------------------------- layer rules

def test_data_layer_needs_no_torch_and_no_model_code():
    forbidden = ("torch", "transformers", "peft", "tokenizers", "fedmllm.model", "fedmllm.fl",
                 "fedmllm.engine", "fedmllm.runtime")
    bad = [f"{m} imports {t}" for m in MODULES if in_layer(m, "fedmllm.data")
           for t, _, _ in imports(m) if any(in_layer(t, f) for f in forbidden)]
    assert not bad, bad


def test_fl_imports_only_torch_numpy_and_the_standard_library():
    bad = []
    for m in MODULES:
        if not in_layer(m, "fedmllm.fl"):
            continue
        for target, line, nested in imports(m):
            where = f"{m}:{line} imports {target}"
            if in_layer(target, "fedmllm.fl"):
                continue
            if target.split(".")[0] == "fedmllm":
                bad.append(where + " (another fedmllm layer)")
            elif target == "peft.utils.merge_utils" and nested:
                continue  # pure-torch merge kernels, imported lazily inside a function
            elif target.split(".")[0] not in STDLIB | {"torch", "numpy", "__future__"}:
                bad.append(where)
    assert not bad, "\n".join(bad)


def test_fl_submodules_never_import_through_their_own_package():
    """A module of fl/ imports its siblings directly, never through its package's
    ``__init__`` (nor any package above it, ``fedmllm.fl`` included)."""
    bad = []
    for m in MODULES:
        if not in_layer(m, "fedmllm.fl"):
            continue
        parts = m.split(".")
        ancestors = {".".join(parts[:i]) for i in range(2, len(parts))}
        bad += [f"{m}:{line} imports {t}" for t, line, _ in imports(m) if t in ancestors]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(("layer", "below"), [
    ("fedmllm.engine", ("fedmllm.runtime", "fedmllm.cli")),
    ("fedmllm.model", ("fedmllm.fl", "fedmllm.engine", "fedmllm.runtime", "fedmllm.cli")),
    ("fedmllm.fl", ("fedmllm.engine", "fedmllm.runtime", "fedmllm.cli")),
])
def test_imports_point_one_way(layer, below):
    """The engine knows no driver; the model and the fl core know neither."""
    bad = [f"{m} imports {t}" for m in GRAPH if in_layer(m, layer)
           for t in GRAPH[m] if any(in_layer(t, b) for b in below)]
    assert not bad, bad


@pytest.mark.parametrize("layer", ["fedmllm.engine", "fedmllm.runtime"])
def test_only_the_flower_driver_imports_flower(layer):
    bad = [f"{m}:{line} imports {t}" for m in MODULES if in_layer(m, layer)
           and not in_layer(m, "fedmllm.runtime.flower")
           for t, line, _ in imports(m) if t.split(".")[0] == "flwr"]
    assert not bad, bad


@pytest.mark.processes
def test_the_simulation_and_the_cli_load_no_flower():
    code = ("import sys, fedmllm.cli, fedmllm.runtime, fedmllm.runtime.simulation, "
            "fedmllm.runtime.flower; sys.exit('flwr' in sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.processes
def test_importing_fl_loads_no_transformers_peft_or_flower():
    code = (
        "import sys, fedmllm.fl; "
        "bad = [m for m in ('transformers', 'flwr', 'peft') if m in sys.modules]; "
        "sys.exit(f'fedmllm.fl imported {bad}' if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
