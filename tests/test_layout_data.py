"""The layout of the data and model layers, read from the source, and the built-in model's
invariants.

- No import cycle among the modules of ``fedmllm.data`` and ``fedmllm.model`` (and whatever
  ``fedmllm`` module they reach). Every ``import`` / ``from ... import`` counts, including those
  inside functions and under ``TYPE_CHECKING``; relative imports are resolved, and an imported
  name that is a submodule counts as that submodule.
- The data layer imports no torch, no transformers and nothing from ``fedmllm.model``.
- The pre-training corpus, the tokenizer's text and the cache folder of the built-in model are
  the same as before they moved from ``fedmllm.data.synth`` / ``fedmllm.model.tiny`` (a
  cached model stays valid): the hashes below were recorded from that code.
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
LAYERS = ("fedmllm.data", "fedmllm.model")
FORBIDDEN_IN_DATA = ("torch", "transformers", "peft", "tokenizers", "fedmllm.model")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "fedmllm").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """Every module ``name`` imports (dotted names; third-party ones included)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in MODULES else target)
    return out


def _in_layers(name: str) -> bool:
    return any(name == layer or name.startswith(layer + ".") for layer in LAYERS)


def _graph() -> dict[str, set[str]]:
    """The import graph of the data and model layers and every project module they reach."""
    graph: dict[str, set[str]] = {}
    todo = [m for m in MODULES if _in_layers(m)]
    while todo:
        m = todo.pop()
        if m in graph:
            continue
        graph[m] = {t for t in _imports(m) if t in MODULES}
        todo.extend(graph[m] - graph.keys())
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state:
                found = visit(t)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_graph_sees_the_layers():
    graph = _graph()
    # sanity: the parser resolves relative, nested and submodule imports
    assert "fedmllm.data.prepared" in graph["fedmllm.data.build"]
    assert "fedmllm.data.readers.common" in graph["fedmllm.data.readers.vqa_rad"]
    assert "fedmllm.data.synth" in graph["fedmllm.model.tiny.corpus"]
    assert "fedmllm.files" in graph["fedmllm.data.prepared"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle_in_data_and_model():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_data_layer_imports_no_model_code():
    bad = []
    for m in MODULES:
        if m == "fedmllm.data" or m.startswith("fedmllm.data."):
            for t in sorted(_imports(m)):
                if any(t == f or t.startswith(f + ".") for f in FORBIDDEN_IN_DATA):
                    bad.append(f"{m} imports {t}")
    assert not bad, bad


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_tokenizer_text_is_unchanged():
    from fedmllm.model.tiny import corpus_text

    assert _sha("\n".join(corpus_text(150, seed=0)).encode()) == (
        "a7afb80f8ef0e7c886f37083da56f921242df7e7c0464d95ccf69158719ccdb2")
    # the tokenizer of every built-in model is trained on this one
    assert _sha("\n".join(corpus_text(2000, seed=0)).encode()) == (
        "6d815f50568da002d314fd85bacd94a696cc52ec91b10ae569b3a02a7bef5609")


def test_pretrain_corpus_is_unchanged():
    from fedmllm.model.tiny import make_pretrain_corpus

    corpus = make_pretrain_corpus(300, seed=0)
    fields = [[s.id, s.question, s.answer, s.meta, s.text] for s in corpus]
    assert _sha(json.dumps(fields).encode()) == (
        "36f2fb8ee34204a9b7e0a6c551d2a551e54a98d5b31cba51eeae8a842fe503c7")
    pixels = b"".join(s.image.tobytes() if s.image is not None else b"-" for s in corpus)
    assert _sha(pixels) == "9a9976d67d7c2c3603b3bd5d833932e18237f01889f800bcdb5e79d4d024d135"


@pytest.mark.parametrize("preset,pretrain,seed,name", [
    ("tiny", True, 0, "tiny-pt-6aecece07ee5"),
    ("tiny", False, 0, "tiny-init-82a16849f27b"),
    ("tiny", True, 1, "tiny-pt-a47167a5d12d"),
    ("small", True, 0, "small-pt-c84483095d30"),
    ("small", False, 0, "small-init-df05fd460651"),
])
def test_cache_folder_of_the_recipe_is_unchanged(preset, pretrain, seed, name):
    from fedmllm.model.tiny import recipe_dir

    assert recipe_dir(preset, pretrain, seed).name == name
