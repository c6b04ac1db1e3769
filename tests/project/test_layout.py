"""The package's shape: the import-linter contracts of ``pyproject.toml`` (``[tool.importlinter]``:
the layers, a data layer without torch, an fl core on its own, Flower only in its driver), and
the rules no contract type states, asked of the same import graph (grimp's, which import-linter
builds): no import cycle anywhere, the fl core's short list of outside packages, and fl modules
that import their siblings directly.

The graph holds every ``import`` and ``from ... import`` anywhere in a module (inside functions
and under ``TYPE_CHECKING`` too, so a lazy import that closes a cycle counts), relative imports
resolved, and a name imported from a package counted as that submodule when it is one.
"""

from __future__ import annotations

import functools
import logging
import subprocess
import sys

import grimp
import pytest
from helpers import ROOT

STDLIB = set(sys.stdlib_module_names)


@functools.cache
def graph() -> grimp.ImportGraph:
    """fedmllm's import graph, outside packages as single (squashed) modules."""
    return grimp.build_graph("fedmllm", include_external_packages=True, cache_dir=None)


def modules() -> list[str]:
    """The project's modules, sorted."""
    return sorted(m for m in graph().modules if in_layer(m, "fedmllm"))


class _Imports:
    """``GRAPH[m]``: the modules ``m`` imports directly; ``len(GRAPH)``: the project's modules."""

    def __getitem__(self, module: str) -> set[str]:
        return graph().find_modules_directly_imported_by(module)

    def __len__(self) -> int:
        return len(modules())


GRAPH = _Imports()


def in_layer(module: str, layer: str) -> bool:
    return module == layer or module.startswith(layer + ".")


def find_cycle(g: grimp.ImportGraph, names: list[str]) -> list[str] | None:
    """One import cycle through the modules ``names`` of ``g`` as a list of modules (first ==
    last), or ``None``: an import ``m -> n`` with a chain of imports back from ``n`` to ``m``."""
    for m in names:
        for n in sorted(g.find_modules_directly_imported_by(m)):
            chain = g.find_shortest_chain(importer=n, imported=m)
            if chain:
                return [m, *chain]
    return None


# ----------------------------------------------------------------------------- the graph itself

def test_cycle_finder_finds_a_planted_cycle():
    planted = grimp.ImportGraph()
    for importer, imported in (("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")):
        planted.add_import(importer=importer, imported=imported)
    assert find_cycle(planted, ["a", "b", "c", "d"]) == ["a", "b", "c", "a"]
    acyclic = grimp.ImportGraph()
    acyclic.add_import(importer="a", imported="b")
    assert find_cycle(acyclic, ["a", "b"]) is None


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
    cycle = find_cycle(graph(), modules())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# ----------------------------------------------------------------------------- layer rules

def test_the_import_contracts_hold(capsys, monkeypatch):
    """The layers (the engine knows no driver; the model and the fl core know neither), the
    data layer without torch or model code, the fl core without another fedmllm layer,
    transformers or Flower, and Flower only in ``runtime/flower``: ``lint-imports``."""
    from importlinter.cli import EXIT_STATUS_SUCCESS, lint_imports

    monkeypatch.setattr(sys, "path", list(sys.path))  # lint_imports puts the cwd in front
    # it also configures logging with disable_existing_loggers: every logger that exists now
    # (fedmllm's among them) would be silenced for the tests that run after this one
    loggers = [x for x in logging.root.manager.loggerDict.values()
               if isinstance(x, logging.Logger)]
    disabled = [x.disabled for x in loggers]
    try:
        status = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True,
                              no_logo=True)
    finally:
        for logger, was in zip(loggers, disabled, strict=True):
            logger.disabled = was
    report = capsys.readouterr().out
    assert status == EXIT_STATUS_SUCCESS, report
    for name in ("Layers", "The data layer", "The fl core", "Only the Flower driver"):
        assert name in report  # every contract ran


def test_fl_imports_only_torch_numpy_and_the_standard_library():
    """Beyond the contract: the fl core's outside packages are an allow-list (and Google's
    dp-accounting for the privacy accountant). peft's
    merge kernels (pure torch) are the one exception, imported lazily inside a function (that
    importing fl loads no peft is checked by a process below)."""
    g, bad = graph(), []
    for m in modules():
        if not in_layer(m, "fedmllm.fl"):
            continue
        for target in g.find_modules_directly_imported_by(m):
            # dp_accounting: the privacy accountant (fl/privacy/accountant.py), numpy/scipy only
            if in_layer(target, "fedmllm") or target in STDLIB | {"torch", "numpy",
                                                                  "dp_accounting"}:
                continue
            details = g.get_import_details(importer=m, imported=target)
            bad += [f"{m}:{d['line_number']} imports {target}" for d in details
                    if not (target == "peft" and _merge_utils(d["line_contents"]))]
    assert not bad, "\n".join(bad)


def _merge_utils(line: str) -> bool:
    """``line`` imports peft's merge kernels (``from peft.utils import merge_utils``)."""
    return "peft.utils.merge_utils" in line or ("peft.utils" in line and "merge_utils" in line)


def test_fl_submodules_never_import_through_their_own_package():
    """A module of fl/ imports its siblings directly, never through its package's
    ``__init__`` (nor any package above it, ``fedmllm.fl`` included)."""
    g, bad = graph(), []
    for m in modules():
        if not in_layer(m, "fedmllm.fl"):
            continue
        parts = m.split(".")
        ancestors = {".".join(parts[:i]) for i in range(2, len(parts))}
        bad += [f"{m}:{d['line_number']} imports {t}" for t in sorted(
            g.find_modules_directly_imported_by(m) & ancestors)
            for d in g.get_import_details(importer=m, imported=t)]
    assert not bad, "\n".join(bad)


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
