"""fedmllm's use of flwr's non-public modules stays in one adapter, and that adapter still fits.

``fedmllm.runtime.flower.flwr_internals`` is the only module in ``src/`` allowed to import
flwr modules outside the public API; its ``PRIVATE_IMPORTS`` lists what it imports, and the
tests below check that list against the module's source and against the installed flwr, so an
flwr upgrade that moves an internal fails here, naming the internal, rather than in a
federation's subprocess.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import time
import types

import pytest
from helpers import ROOT

from fedmllm.runtime.flower import flwr_internals

SRC = ROOT / "src"
ADAPTER = SRC / "fedmllm" / "runtime" / "flower" / "flwr_internals.py"

#: Flower's public API; every other ``flwr`` module (``flwr.clientapp.client_app`` too) is
#: private.
PUBLIC = frozenset({
    "flwr.app",
    "flwr.clientapp",
    "flwr.clientapp.mod",
    "flwr.serverapp",
    "flwr.serverapp.strategy",
    "flwr.simulation",
})


def _flwr_imports(tree: ast.AST) -> list[tuple[int, str, str | None]]:
    """(line, module, imported name or None for ``import m``) for every absolute flwr import."""
    out: list[tuple[int, str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, None) for a in node.names
                    if a.name == "flwr" or a.name.startswith("flwr.")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
            node.module == "flwr" or node.module.startswith("flwr.")
        ):
            out += [(node.lineno, node.module, a.name) for a in node.names]
    return out


def _private(module: str) -> bool:
    return module not in PUBLIC


def _adapter_private_imports() -> list[tuple[int, str, str | None]]:
    tree = ast.parse(ADAPTER.read_text(encoding="utf-8"), filename=str(ADAPTER))
    return [imp for imp in _flwr_imports(tree) if _private(imp[1])]


def test_public_set_is_not_a_prefix_rule():
    # ``flwr.clientapp.client_app`` sits under a public package but is itself private.
    assert _private("flwr.clientapp.client_app")
    assert _private("flwr.supernode")
    assert not _private("flwr.serverapp.strategy")


def test_private_flwr_imports_only_in_the_adapter():
    files = sorted(SRC.rglob("*.py"))
    assert ADAPTER in files
    offences = []
    for path in files:
        if path == ADAPTER:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, module, _ in _flwr_imports(tree):
            if _private(module):
                offences.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not offences, (
        "non-public flwr modules imported outside "
        f"{ADAPTER.relative_to(ROOT)} (move the use there):\n" + "\n".join(offences)
    )


def test_private_imports_list_matches_the_adapter_source():
    found = _adapter_private_imports()
    assert found, "the adapter imports no private flwr module: is the scan broken?"
    listed = set(flwr_internals.PRIVATE_IMPORTS)
    assert len(listed) == len(flwr_internals.PRIVATE_IMPORTS), "PRIVATE_IMPORTS has duplicates"
    assert {m for _, m, _ in found} == {m for m, _ in listed}
    # names too, for ``from m import a`` (a plain ``import m`` has no name to list)
    from_modules = {m for _, m, a in found if a is not None}
    assert {(m, a) for _, m, a in found if a is not None} == {
        (m, a) for m, a in listed if m in from_modules
    }


def _resolve(module: str, attribute: str):
    """What ``from module import attribute`` gives (an attribute, or else a submodule)."""
    mod = importlib.import_module(module)
    if hasattr(mod, attribute):
        return getattr(mod, attribute)
    return importlib.import_module(f"{module}.{attribute}")


@pytest.mark.parametrize(
    ("module", "attribute"),
    flwr_internals.PRIVATE_IMPORTS,
    ids=[f"{m}:{a}" for m, a in flwr_internals.PRIVATE_IMPORTS],
)
def test_private_import_exists_in_installed_flwr(module, attribute):
    try:
        _resolve(module, attribute)
    except ImportError as exc:
        pytest.fail(f"installed flwr has no {module}.{attribute}: {exc}")


def _sleep_constants(source: str) -> list[float]:
    """The literal arguments of every ``time.sleep(<number>)`` call in ``source``."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute) and node.func.attr == "sleep"
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "time"
                and len(node.args) == 1 and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, int | float)):
            out.append(node.args[0].value)
    return out


def test_sleep_scan_sees_literal_calls():
    assert _sleep_constants("import time\ntime.sleep(3)\ntime.sleep(x)\ntime.sleep(0.5)") == [
        3, 0.5
    ]


def test_supernode_still_polls_with_the_sleeps_the_patch_shortens():
    from flwr.supernode import start_client_internal as sci

    # the patch replaces this module attribute; without it the patch would do nothing
    mod_time = getattr(sci, "time", None)
    assert isinstance(mod_time, types.ModuleType) and mod_time.__name__ == "time", (
        "flwr.supernode.start_client_internal no longer has a module attribute `time`"
    )
    constants = _sleep_constants(inspect.getsource(sci))
    assert flwr_internals.IDLE_SLEEP in constants, (
        f"no time.sleep({flwr_internals.IDLE_SLEEP:g}) (idle poll) in "
        f"flwr.supernode.start_client_internal; its sleeps: {constants}"
    )
    assert flwr_internals.REPLY_SLEEP in constants, (
        f"no time.sleep({flwr_internals.REPLY_SLEEP:g}) (reply poll) in "
        f"flwr.supernode.start_client_internal; its sleeps: {constants}"
    )


def test_patched_time_shortens_only_the_two_polls(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    fast = flwr_internals._patched_time(0.25)
    for seconds in (3, flwr_internals.IDLE_SLEEP, flwr_internals.REPLY_SLEEP, 1.0):
        fast.sleep(seconds)
    assert slept == [0.25, 0.25, 0.025, 1.0]
    assert fast.monotonic is time.monotonic


def test_install_fast_polls_patches_the_supernode_module(monkeypatch):
    from flwr.supernode import start_client_internal as sci

    monkeypatch.setattr(sci, "time", sci.time)  # restored after the test
    flwr_internals.install_fast_polls(0.1)
    assert sci.time is not time
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    sci.time.sleep(3)
    assert slept == [0.1]
