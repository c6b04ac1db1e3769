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

import pytest
from helpers import ROOT

from fedmllm.runtime.flower import flwr_internals

SRC = ROOT / "src"
ADAPTER = SRC / "fedmllm" / "runtime" / "flower" / "flwr_internals.py"

#: Flower's public API; every other ``flwr`` module (``flwr.clientapp.client_app`` too) is
#: private. The legacy packages (``flwr.server``, ``flwr.server.strategy``,
#: ``flwr.server.workflow``, ``flwr.client.mod``, ``flwr.common``) are in Flower's API reference
#: too, and SecAgg+ is reachable only through them (``SecAggPlusWorkflow``, ``LegacyContext``,
#: ``secaggplus_mod``, ``FitIns``/``FitRes``).
PUBLIC = frozenset({
    "flwr.app",
    "flwr.clientapp",
    "flwr.clientapp.mod",
    "flwr.serverapp",
    "flwr.serverapp.strategy",
    "flwr.simulation",
    "flwr.server",
    "flwr.server.strategy",
    "flwr.server.workflow",
    "flwr.client.mod",
    "flwr.common",
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


#: What the adapter may import from flwr's private modules, written out here so that a change
#: to the list shows in this test's diff (the warm ClientApp worker, and SecAgg+'s record
#: names, compat converters and grid client proxy).
EXPECTED = {
    ("flwr.proto.runtime_pb2", "AcquireTaskRequest"),
    ("flwr.supercore.app_utils", "start_parent_process_monitor"),
    ("flwr.supercore.constant", "TaskType"),
    ("flwr.supercore.interceptors", "RuntimeVersionHttpInterceptor"),
    ("flwr.supercore.interceptors", "RuntimeTokenHttpInterceptor"),
    ("flwr.supercore.retry", "make_simple_http_retry_invoker"),
    ("flwr.supercore.runtime", "RuntimeHttpClient"),
    ("flwr.supercore.tls", "validate_and_resolve_root_certificates"),
    ("flwr.cli.install", "install_from_fab"),
    ("flwr.clientapp.client_app", "LoadClientAppError"),
    ("flwr.clientapp.utils", "get_load_client_app_fn"),
    ("flwr.common.constant", "ErrorCode"),
    ("flwr.common.constant", "SubStatus"),
    ("flwr.supercore.heartbeat", "HeartbeatSender"),
    ("flwr.supercore.heartbeat", "make_task_heartbeat_fn_http"),
    ("flwr.supernode.runtime.run_clientapp", "pull_task_input"),
    ("flwr.supernode.runtime.run_clientapp", "push_message"),
    ("flwr.supernode.runtime.run_clientapp", "push_task_output"),
    ("flwr.common.secure_aggregation.secaggplus_constants", "RECORD_KEY_CONFIGS"),
    ("flwr.server.workflow.constant", "MAIN_CONFIGS_RECORD"),
    ("flwr.server.workflow.constant", "MAIN_PARAMS_RECORD"),
    ("flwr.server.workflow.constant", "Key"),
    ("flwr.compat.common.recorddict_compat", "recorddict_to_fitins"),
    ("flwr.compat.common.recorddict_compat", "fitres_to_recorddict"),
    ("flwr.server.compat.grid_client_proxy", "GridClientProxy"),
}


def test_private_imports_are_the_listed_ones():
    assert set(flwr_internals.PRIVATE_IMPORTS) == EXPECTED


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


def _assigned_attributes(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, ``a.b``) for every assignment to an attribute of a name (``a.b = ...``)."""
    out = []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AugAssign | ast.AnnAssign) else [])
        out += [(node.lineno, f"{t.value.id}.{t.attr}") for t in targets
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)]
    return out


def test_nothing_in_src_patches_a_flwr_module():
    """No monkeypatching: no module of ``src/`` assigns to an attribute of a flwr module
    it imported (``import flwr.x as m; m.f = ...`` or ``from flwr import x; x.f = ...``)."""
    offences = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        flwr_names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                module = getattr(node, "module", None) or ""
                for alias in node.names:
                    full = f"{module}.{alias.name}" if module else alias.name
                    if full.startswith("flwr"):
                        flwr_names.add(alias.asname or alias.name.split(".")[0])
        offences += [f"{path.relative_to(ROOT)}:{line} sets {name}"
                     for line, name in _assigned_attributes(tree)
                     if name.split(".")[0] in flwr_names]
    assert not offences, offences


def test_patch_scan_sees_an_assignment():
    tree = ast.parse("from flwr.supernode import start_client_internal as s\ns.time = 1\n")
    assert _assigned_attributes(tree) == [(2, "s.time")]
