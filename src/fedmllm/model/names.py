"""Portable names for base models, so a saved adapter names its base the same on every machine.

A built-in preset is loaded from a cache folder named by a hash of its recipe
(``~/.cache/fedmllm/tiny-pt-6aecece07ee5``): a path that means nothing on another machine. An
adapter therefore records a built-in base by its *preset name*:

- ``fedmllm-preset:tiny`` / ``fedmllm-preset:small``: the pre-trained preset
  (``model.preset=tiny``, the default ``model.pretrain=true``);
- ``fedmllm-preset:tiny-init`` / ``fedmllm-preset:small-init``: the randomly initialised one
  (``model.pretrain=false``).

The scheme cannot be mistaken for a Hugging Face hub id (a hub id has no ``:``) nor for a
folder. Any other base (a hub id, or a folder the user gave with ``model.name``) is recorded
as given. :func:`resolve_base` turns a preset name back into the cached folder (building the
preset offline when it is not cached, :func:`fedmllm.model.tiny.ensure_tiny`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import ModelError

PRESET_SCHEME = "fedmllm-preset:"
INIT_SUFFIX = "-init"

__all__ = ["PRESET_SCHEME", "parse_preset_name", "portable_name", "preset_name",
           "resolve_base"]


def preset_name(preset: str, pretrain: bool = True) -> str:
    """``fedmllm-preset:<preset>`` (pre-trained) or ``fedmllm-preset:<preset>-init``."""
    return f"{PRESET_SCHEME}{preset}{'' if pretrain else INIT_SUFFIX}"


def parse_preset_name(name: object) -> tuple[str, bool] | None:
    """``(preset, pretrain)`` of a preset name; ``None`` for anything else (a hub id, a folder).
    An unknown preset after the scheme is a :class:`~fedmllm.errors.ModelError`."""
    from .tiny.presets import PRESETS

    if not isinstance(name, str) or not name.startswith(PRESET_SCHEME):
        return None
    rest, pretrain = name[len(PRESET_SCHEME):], True
    if rest.endswith(INIT_SUFFIX):
        rest, pretrain = rest[:-len(INIT_SUFFIX)], False
    if rest not in PRESETS:
        choices = ", ".join(preset_name(p) for p in PRESETS)
        raise ModelError(f"{name}: unknown built-in preset '{rest}' (choices: {choices}, each "
                         f"also with '{INIT_SUFFIX}')")
    return rest, pretrain


def portable_name(source: str | os.PathLike) -> str:
    """The name to record for the base model loaded from ``source``: the preset name when
    ``source`` is a built-in preset's folder built by this version's recipe (seed 0, what
    ``model.preset`` loads), else ``source`` as given."""
    from .tiny.presets import PRESETS, recipe

    try:
        info = json.loads((Path(source).expanduser() / "recipe.json").read_text())
        rec = info["recipe"]
        preset, pretrain = rec["preset"], rec["pretrain"]
    except (OSError, ValueError, KeyError, TypeError):
        return str(source)
    if preset in PRESETS and isinstance(pretrain, bool) and rec == recipe(preset, pretrain, 0):
        return preset_name(preset, pretrain)
    return str(source)


def resolve_base(name: str, quiet: bool = False) -> str:
    """What :func:`~fedmllm.model.loading.load_vlm` loads for a recorded base: a preset name's
    cached folder (built if needed), anything else unchanged."""
    parsed = parse_preset_name(name)
    if parsed is None:
        return name
    from .tiny import ensure_tiny

    return str(ensure_tiny(parsed[0], parsed[1], quiet=quiet))
