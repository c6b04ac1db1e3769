"""The configuration tree as a Flower run config, and back.

A Flower App declares its run-config keys with defaults in ``[tool.flwr.app.config]`` of its
``pyproject.toml``; ``flwr run . <federation> --run-config "fl.rounds=3"`` may only set keys
declared there. So that every scalar key of our configuration can be set that way, the table
mirrors the tree, flattened with dots, with Flower-compatible values: ``None`` is ``""``, a list
is its YAML flow text (``"[q_proj, v_proj]"``). Tables of free keys
(:data:`~fedmllm.config.TABLE_KEYS`: ``fl.strategy``, ``fl.yoco.params_a`` ...) are set through
the ``overrides`` key instead (``overrides="fl.strategy.eta=0.1 fl.strategy.variant=fedmllm"``),
and a whole file through ``config-file`` (an absolute path on the server). :func:`flower_defaults`
gives the table; ``python -m fedmllm.runtime.flower.appconfig`` prints it as TOML, and a test
keeps ``pyproject.toml`` equal to it.

On the server, :func:`config_from_run` builds the configuration: defaults, then ``config-file``,
then every flattened key whose value differs from its declared default, then ``overrides``.
"""

from __future__ import annotations

import shlex
import sys
from typing import Any

import yaml

from ...config import Config, flatten, load_config

#: Run-config keys of the app that are not configuration keys.
APP_KEYS = {"config-file": "", "overrides": "", "resume": False, "overwrite": False}


def _encode(value: Any) -> str | int | float | bool | None:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return yaml.safe_dump(list(value), default_flow_style=True).strip()
    if isinstance(value, (bool, int, float, str)):
        return value
    return None  # a table: set through `overrides`


def flower_defaults() -> dict[str, Any]:
    """The ``[tool.flwr.app.config]`` table: :data:`APP_KEYS` and the flattened defaults."""
    flat = {key: _encode(value) for key, value in flatten(Config().to_dict()).items()}
    return {**APP_KEYS, **{key: value for key, value in flat.items() if value is not None}}


def _override(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return f"{key}={'true' if value else 'false'}"
    if value == "":
        return f"{key}=null"
    return f"{key}={value}"


def config_from_run(run_config: dict[str, Any]) -> tuple[Config, bool, bool]:
    """``(configuration, resume, overwrite)`` from a Flower run config (see the module
    docstring); raises :class:`~fedmllm.config.ConfigError` naming the key."""
    defaults = flower_defaults()
    overrides = [_override(k, v) for k, v in run_config.items()
                 if k not in APP_KEYS and k in defaults and v != defaults[k]]
    extra = str(run_config.get("overrides", "") or "")
    overrides += shlex.split(extra)
    path = str(run_config.get("config-file", "") or "") or None
    cfg = load_config(path, overrides)
    return cfg, bool(run_config.get("resume", False)), bool(run_config.get("overwrite", False))


def as_toml(table: dict[str, Any]) -> str:
    """``table`` as the body of a TOML table (one ``"key" = value`` line each)."""
    lines = []
    for key, value in table.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = repr(value)
        else:
            text = '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
        lines.append(f'"{key}" = {text}')
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write("[tool.flwr.app.config]\n" + as_toml(flower_defaults()) + "\n")
