"""The package's shape: no import cycle anywhere, and each layer imports only what it may.

The import graph is read from the source with ``ast`` (every ``import`` and ``from ... import``,
also inside functions and under ``TYPE_CHECKING``), so a lazy import that closes a cycle counts.
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "fedmllm"


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in (SRC / PACKAGE).rglob("*.py")}


def import_graph() -> dict[str, set[str]]:
    """module -> the fedmllm modules it imports (a name that is a submodule counts as it)."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        package = mod if is_pkg else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in modules else origin
                           for a in node.names]
            for t in targets:
                while t and t not in modules and "." in t:
                    t = t.rpartition(".")[0]
                if t in modules and t != mod:
                    graph[mod].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of modules (first == last), or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_graph_sees_lazy_and_relative_imports():
    g = import_graph()
    # relative, inside a function: cli imports the runtime lazily
    assert "fedmllm.runtime" in g["fedmllm.cli"]
    assert "fedmllm.fl" in g["fedmllm.engine.factory"]


def test_no_import_cycle_anywhere():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _external(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(("layer", "forbidden"), [
    ("engine", {"flwr"}),
    ("runtime", {"flwr"}),
])
def test_layers_do_not_reach_for_what_they_must_not(layer, forbidden):
    for path in (SRC / PACKAGE / layer).rglob("*.py"):
        bad = _external(path) & forbidden
        assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"


def test_engine_knows_no_driver():
    """The engine is below the drivers: nothing in engine/ imports runtime/ or cli."""
    g = import_graph()
    for mod, deps in g.items():
        if mod.startswith("fedmllm.engine"):
            bad = {d for d in deps if d.startswith(("fedmllm.runtime", "fedmllm.cli"))}
            assert not bad, f"{mod} imports {sorted(bad)}"
