"""The TOML files and environment a local federation hands to Flower's commands.

Run and node configs are passed as TOML files (``--run-config f.toml``, ``--node-config
f.toml``: flwr 1.42 reads a single ``*.toml`` argument as a file), so no value needs shell or
``key="value"`` quoting. ``flwr`` reads its SuperLink connections from
``$FLWR_HOME/config.toml`` (``[superlink.<name>]``); every process gets a ``FLWR_HOME`` of its
own, so nothing is written to ``~/.flwr``.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli_w

from ...config import flatten

ConfigValue = str | int | float | bool

# Always set for the processes we start (offline machine; no uv sync at run time).
BASE_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "HF_HUB_OFFLINE": "1",
    "PYTHONUNBUFFERED": "1",
    # How often a stock flower-superexec (started by the SuperLink for the ServerApp and by
    # each SuperNode for its ClientApps) asks for a task: 1 s by default. flwr 1.42 reads and
    # checks this variable (0.01-60 s); loopback requests cost nothing, so ask often.
    "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1",
}


def flat_config(values: Mapping[str, Any], what: str) -> dict[str, ConfigValue]:
    """``values`` checked to be a flat mapping of str, int, float or bool."""
    out: dict[str, ConfigValue] = {}
    for key, value in values.items():
        if not isinstance(value, (str, int, float, bool)):
            raise TypeError(f"{what}: {key}={value!r} is not str, int, float or bool")
        out[str(key)] = value
    return out


def write_toml(path: Path, values: Mapping[str, Any]) -> Path:
    """``values`` as a TOML file at ``path`` (its folder made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(dict(values)), encoding="utf-8")
    return path


def write_connection(home: Path, name: str, address: str, ca_cert: Path | None) -> Path:
    """``home/config.toml`` naming one SuperLink connection ``name`` (the default one):
    TLS trusting ``ca_cert``, or ``insecure`` without it."""
    conn: dict[str, Any] = {"address": address}
    if ca_cert is None:
        conn["insecure"] = True
    else:
        conn["root-certificates"] = str(ca_cert)
    return write_toml(home / "config.toml", {"superlink": {"default": name, name: conn}})


def app_run_config_defaults(app_dir: Path) -> dict[str, Any]:
    """``[tool.flwr.app.config]`` of an app, flattened the way flwr flattens it."""
    with open(Path(app_dir) / "pyproject.toml", "rb") as fh:
        conf = tomllib.load(fh)
    flwr = conf.get("tool", {}).get("flwr", {})
    if "federations" in flwr:
        raise ValueError(
            f"{app_dir}/pyproject.toml has [tool.flwr.federations]: flwr 1.42 `flwr run` would "
            "migrate it to $FLWR_HOME/config.toml and comment it out in the file; remove it"
        )
    if "app" not in flwr:
        raise ValueError(f"{app_dir}/pyproject.toml has no [tool.flwr.app] section")
    return flatten(flwr["app"].get("config", {}))  # the table declares no table-valued key


def process_env(extra: Mapping[str, Any] | None) -> dict[str, str]:
    """The environment of the federation's processes: this one's, Flower's offline settings,
    ``extra``, this venv's ``bin`` first on ``PATH`` (the SuperLink and SuperNodes start
    ``flower-superexec``, ``flwr-serverapp`` and ``flwr-clientapp`` through it), and no
    inherited ``FLWR_HOME``."""
    env = dict(os.environ)
    env.update(BASE_ENV)
    if extra:
        env.update({str(k): str(v) for k, v in extra.items()})
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("FLWR_HOME", None)
    return env
