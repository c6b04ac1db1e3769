"""A benchmark grid: the cells of a sweep, read from one TOML file and checked before any run.

A grid names *settings* (groups of keys that belong together, such as a modality scenario and
its parameter), *axes* (keys whose values are crossed, such as the algorithm), the *seeds*, and
the keys every cell shares::

    [bench]
    base = "../../examples/fedmllm_synth_quick.toml"  # optional config file, relative to the grid
    seeds = [0, 1, 2]                                  # config key ``seed`` of each cell
    metric = "accuracy"                                # headline metric of the report
    reference = "fedavg"                               # paired comparisons are against it
    metrics = ["auc_hard", "auroc"]          # optional: a table each beside the headline
    gate = ["fedavg"]                        # optional: must beat the constant answer
    share_uploads = true                     # optional: one-shot merges of one training
    notes = "study_notes.md"                 # optional: Markdown the report appends
    focus = "fedavg"                         # optional: a verdict table for this method ...
    against = ["local"]                      # ... against these, per setting

    [fixed]                                            # keys shared by every cell
    "model.preset" = "tiny"
    fl = { rounds = 8 }                                # nested tables work as well

    [axes]                                             # crossed: one cell per combination
    "fl.algorithm" = ["fedavg", "fedadam", "local"]

    [[settings]]                                       # one cell group per setting
    name = "aligned"
    "data.scenario" = "aligned"

    [[settings]]
    name = "missing-50"
    "data.scenario" = "missing"
    "data.missing_rate" = 0.5

    [[claims]]                                         # checked and stated by the report
    name = "F1: federated beats local-only"
    better = { method = "fedavg" }
    worse = { method = "local" }

Instead of (or crossed with) axes, ``[[methods]]`` names methods with keys of their own (an
algorithm with its own server learning rate)::

    [[methods]]
    name = "fedadam"
    "fl.algorithm" = "fedadam"
    "fl.strategy.eta" = 0.01

A cell is (setting, method, seed); its *method* is the ``[[methods]]`` name and/or its axis
values (``fedavg``, or ``algorithm=fedavg lr=0.01`` with several axes). Later keys win: base
file < ``fixed`` < setting < method < axes < seed. Every cell's configuration is built and
validated (:func:`fedmllm.engine.plan_run`) when the grid is read, so a misspelt key or value
fails the whole sweep in a second, naming the grid file and the cell, before anything runs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config, ConfigError, flatten, load_config, parse_override

__all__ = ["Cell", "Claim", "Grid", "load_grid"]

_BENCH_KEYS = {"base", "seeds", "metric", "reference", "description", "view", "metrics",
               "gate", "share_uploads", "notes", "focus", "against"}
_METRICS = ("accuracy", "macro_f1", "auroc", "auc_hard", "accuracy_calibrated")
_VIEWS = ("image_text", "image_only", "text_only")
_BENCH_SET = ("seed", "output.dir")  # keys a grid may not set: bench.seeds, --out


@dataclass
class Cell:
    """One run of the sweep."""

    id: str
    """Folder name: ``<setting>__<method>__s<seed>`` made file-safe."""
    setting: str
    method: str
    seed: int
    overrides: dict[str, Any]
    """The dotted keys this cell sets on top of the base file (fixed, setting, axes, seed)."""
    config: Config = field(repr=False, default=None)

    def command(self, base: str | None) -> str:
        """The ``fedmllm run`` line that runs this cell by hand."""
        parts = ["fedmllm run"] + ([f"--config {base}"] if base else [])
        parts += [f"{k}={_cli_value(v)}" for k, v in self.overrides.items()]
        return " ".join(parts)


@dataclass
class Claim:
    """A comparison the report checks: the ``better`` cells against the ``worse`` ones.

    Each side selects cells by ``method`` and/or ``setting`` (a name or a list); a side that
    leaves one out takes it from the other side, and the claim is checked in every setting
    (or method) both sides share. It holds in a setting when the 95 % confidence intervals over
    seeds do not overlap and the better side's mean is higher.
    """

    name: str
    better: dict[str, list[str]]
    worse: dict[str, list[str]]
    metric: str | None = None
    view: str | None = None


@dataclass
class Grid:
    path: Path
    cells: list[Cell]
    settings: list[str]
    methods: list[str]
    seeds: list[int]
    metric: str = "accuracy"
    view: str = "image_text"
    reference: str | None = None
    description: str = ""
    base: str | None = None
    claims: list[Claim] = field(default_factory=list)
    digest: str = ""
    """SHA-256 of the grid's expanded cells: a resumed sweep must be the same sweep."""
    metrics: list[str] = field(default_factory=list)
    """Further metrics reported beside the headline one (a table each)."""
    gate: list[str] = field(default_factory=list)
    """Methods that must all beat the constant answer for a setting to be ranked (empty: any
    method beating it will do)."""
    share_uploads: bool = False
    """One-shot cells share their clients' uploads (``fl.yoco.upload_cache`` = ``OUT/uploads``):
    cells that differ only in the merge train once."""
    notes: str | None = None
    """A Markdown file (relative to the grid) the report appends: the study's explanations."""
    focus: str | None = None
    """The method the study is about: the report's verdict table sets it against ``against``
    in every setting (paired differences, and its bytes against the reference's)."""
    against: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"grid": str(self.path), "description": self.description, "digest": self.digest,
                "metric": self.metric, "view": self.view, "reference": self.reference,
                "base": self.base, "settings": self.settings, "methods": self.methods,
                "seeds": self.seeds, "metrics": self.metrics, "gate": self.gate,
                "share_uploads": self.share_uploads, "notes": self.notes,
                "focus": self.focus, "against": self.against,
                "claims": [vars(c) for c in self.claims],
                "cells": [{"id": c.id, "setting": c.setting, "method": c.method,
                           "seed": c.seed, "overrides": c.overrides} for c in self.cells]}


def _method_names(bench: dict, key: str, methods: list[str], path: Path) -> list[str]:
    """``bench.<key>``, a method name or a list of them, each checked against the grid's."""
    names = bench.get(key, [])
    names = [names] if isinstance(names, str) else list(names)
    for m in names:
        if m not in methods:
            raise ConfigError(f"{path}: bench.{key}: no method {m!r} (the grid has "
                              f"{'; '.join(methods)})")
    return names


def _cli_value(v: Any) -> str:
    text = v if isinstance(v, str) else json.dumps(v)
    return text if re.fullmatch(r"[\w.:/+-]+", text) else f"'{text}'"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_") or "x"


def _method_name(values: dict[str, Any]) -> str:
    if not values:
        return "default"
    if len(values) == 1:
        return str(next(iter(values.values())))
    return " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in values.items())


def _names(raw: Any, where: str) -> list[str]:
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
        return list(raw)
    raise ConfigError(f"{where}: expected a name or a list of names, got {raw!r}")


def _claim(raw: Any, i: int, path: Path) -> Claim:
    where = f"{path}: claims[{i}]"
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise ConfigError(f"{where}: needs a name and two sides, better = {{...}} and "
                          "worse = {...}")
    sides = {}
    for side in ("better", "worse"):
        sel = raw.get(side)
        if not isinstance(sel, dict) or not sel or set(sel) - {"method", "setting"}:
            raise ConfigError(f"{where}.{side}: expected a table with 'method' and/or "
                              f"'setting', got {sel!r}")
        sides[side] = {k: _names(v, f"{where}.{side}.{k}") for k, v in sel.items()}
    unknown = set(raw) - {"name", "better", "worse", "metric", "view"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {min(unknown)!r}")
    if raw.get("metric") not in (None, *_METRICS):
        raise ConfigError(f"{where}.metric: expected one of {_METRICS}")
    if raw.get("view") not in (None, *_VIEWS):
        raise ConfigError(f"{where}.view: expected one of {_VIEWS}")
    return Claim(raw["name"], sides["better"], sides["worse"], raw.get("metric"),
                 raw.get("view"))


def load_grid(path: str | Path, overrides: list[str] | tuple = ()) -> Grid:
    """Read, expand and validate a grid file (see the module docstring). ``overrides``
    (``key=value``, as on the ``fedmllm run`` command line) are added to ``fixed``: the way
    to point a shipped grid at your data and model (``data.data_dir=... model.name=...``)."""
    path = Path(path)
    raw = _read(path)
    bench = raw.get("bench", {})
    opts = _bench_options(bench, path)
    fixed, axes = _fixed_and_axes(raw, path, overrides)
    settings = _settings(raw, path, fixed, axes)
    names = [n for n, _ in settings]
    cells, methods = _expand(path, opts["base"], settings, _method_groups(raw, path, axes),
                             axes, fixed, opts["seeds"])
    claims = [_claim(c, i, path) for i, c in enumerate(raw.get("claims", []))]
    _check_claims(claims, methods, names, path)
    reference = bench.get("reference")
    if reference is not None and reference not in methods:
        raise ConfigError(f"{path}: bench.reference: no method {reference!r} (the grid has "
                          f"{'; '.join(methods)})")
    gate, against = _method_names(bench, "gate", methods, path), \
        _method_names(bench, "against", methods, path)
    focus = (_method_names(bench, "focus", methods, path) or [None])[0]
    if against and focus is None:
        raise ConfigError(f"{path}: bench.against: name the method it is against (bench.focus)")
    digest = hashlib.sha256(json.dumps(
        [[c.id, c.config.to_dict()] for c in cells], sort_keys=True, default=str
    ).encode()).hexdigest()
    base = opts["base"]
    return Grid(path, cells, names, methods, list(opts["seeds"]), opts["metric"], opts["view"],
                reference, str(bench.get("description", "")), str(base) if base else None,
                claims, digest, list(opts["metrics"]), gate, opts["share_uploads"],
                opts["notes"], focus, against)


def _read(path: Path) -> dict:
    """The grid file's tables, checked for unknown ones."""
    if not path.is_file():
        raise ConfigError(f"{path}: grid file not found")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: cannot parse: {e}") from None
    unknown = set(raw) - {"bench", "fixed", "axes", "methods", "settings", "claims"}
    if unknown:
        raise ConfigError(f"{path}: unknown table {min(unknown)!r} (expected bench, "
                          "fixed, axes, methods, settings, claims)")
    return raw


def _bench_options(bench: dict, path: Path) -> dict[str, Any]:
    """The ``[bench]`` keys that need no method names, checked: seeds, metric, metrics,
    share_uploads, notes and base (both resolved against the grid's folder) and view."""
    bad = set(bench) - _BENCH_KEYS
    if bad:
        raise ConfigError(f"{path}: bench.{min(bad)}: unknown key (expected "
                          f"{', '.join(sorted(_BENCH_KEYS))})")
    seeds = bench.get("seeds", [0])
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds)
            and len(set(seeds)) == len(seeds)):
        raise ConfigError(f"{path}: bench.seeds: expected a list of distinct integers, "
                          f"got {seeds!r}")
    metric = bench.get("metric", "accuracy")
    if metric not in _METRICS:
        raise ConfigError(f"{path}: bench.metric: expected one of {_METRICS}, got {metric!r}")
    extra = bench.get("metrics", [])
    if not (isinstance(extra, list) and all(m in _METRICS for m in extra)):
        raise ConfigError(f"{path}: bench.metrics: expected a list of {_METRICS}, got {extra!r}")
    share = bench.get("share_uploads", False)
    if not isinstance(share, bool):
        raise ConfigError(f"{path}: bench.share_uploads: expected true or false, got {share!r}")
    notes = bench.get("notes")
    if notes is not None:
        notes = str((path.parent / str(notes)).resolve())
        if not Path(notes).is_file():
            raise ConfigError(f"{path}: bench.notes: {notes} not found")
    view = bench.get("view", "image_text")
    if view not in _VIEWS:
        raise ConfigError(f"{path}: bench.view: expected one of {_VIEWS}, got {view!r}")
    base = bench.get("base")
    if base is not None:
        base = (path.parent / base).resolve()
        if not base.is_file():
            raise ConfigError(f"{path}: bench.base: {base} not found")
    return {"seeds": seeds, "metric": metric, "metrics": extra, "share_uploads": share,
            "notes": notes, "view": view, "base": base}


def _fixed_and_axes(raw: dict, path: Path, overrides) -> tuple[dict, dict]:
    """The ``fixed`` keys with the command line's ``overrides`` added (which may not touch an
    axis or setting key), and the axes, each a non-empty list."""
    fixed = flatten(raw.get("fixed", {}))
    axes = flatten(raw.get("axes", {}))
    for item in overrides:
        keys, value = parse_override(item)
        key = ".".join(keys)
        if key in axes or any(key in flatten(s)
                              for s in raw.get("settings", []) if isinstance(s, dict)):
            raise ConfigError(f"{item}: {key} is an axis or setting key of {path}; edit the "
                              "grid file to change it")
        fixed[key] = value
    for k, v in axes.items():
        if not isinstance(v, list) or not v:
            raise ConfigError(f"{path}: axes.{k}: expected a non-empty list of values")
    return fixed, axes


def _settings(raw: dict, path: Path, fixed: dict, axes: dict) -> list[tuple[str, dict]]:
    """``[[settings]]`` as (name, keys), the names distinct (one ``default`` without any);
    the keys the bench sets itself are refused here and in ``fixed`` and the axes."""
    settings_raw = raw.get("settings", [{"name": "default"}])
    if not isinstance(settings_raw, list) or not settings_raw:
        raise ConfigError(f"{path}: settings: expected [[settings]] tables")
    settings: list[tuple[str, dict]] = []
    for i, s in enumerate(settings_raw):
        if not isinstance(s, dict) or not isinstance(s.get("name"), str) or not s["name"]:
            raise ConfigError(f"{path}: settings[{i}]: needs a name")
        keys = flatten({k: v for k, v in s.items() if k != "name"})
        settings.append((s["name"], keys))
    names = [n for n, _ in settings]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: settings: duplicate name")
    for key in _BENCH_SET:
        if key in fixed or key in axes or any(key in k for _, k in settings):
            raise ConfigError(f"{path}: {key}: set by the bench itself "
                              f"({'bench.seeds' if key == 'seed' else '--out'})")
    return settings


def _method_groups(raw: dict, path: Path, axes: dict) -> list[tuple[str | None, dict]]:
    """``[[methods]]``: named groups of keys that make one method (an algorithm with its own
    parameters), crossed with the axes; one unnamed empty group without any."""
    if "methods" not in raw:
        return [(None, {})]
    groups = []
    for i, m in enumerate(raw["methods"] if isinstance(raw["methods"], list) else [None]):
        if not isinstance(m, dict) or not isinstance(m.get("name"), str) or not m["name"]:
            raise ConfigError(f"{path}: methods[{i}]: needs a name")
        keys = flatten({k: v for k, v in m.items() if k != "name"})
        both = set(keys) & set(axes)
        if both:
            raise ConfigError(f"{path}: methods[{i}]: {min(both)} is also an axis")
        for key in _BENCH_SET:
            if key in keys:
                raise ConfigError(f"{path}: methods[{i}]: {key}: set by the bench itself")
        groups.append((m["name"], keys))
    return groups


def _expand(path: Path, base: Path | None, settings: list[tuple[str, dict]], groups: list,
            axes: dict, fixed: dict, seeds: list[int]) -> tuple[list[Cell], list[str]]:
    """Every (setting, method, seed) cell with its configuration built and validated
    (:func:`fedmllm.engine.plan_run`); the cells and the method names in order."""
    from ..engine.factory import plan_run

    combos = []
    for group, group_keys in groups:
        for vals in itertools.product(*axes.values()):
            axis = dict(zip(axes, vals, strict=True))
            label = _method_name(axis) if axis else None
            combos.append(({**group_keys, **axis},
                           " ".join(x for x in (group, label) if x) or "default"))
    cells: list[Cell] = []
    methods: list[str] = []
    for (name, keys), (combo, method), seed in itertools.product(settings, combos, seeds):
        if method not in methods:
            methods.append(method)
        overrides = {**fixed, **keys, **combo, "seed": seed}
        cid = f"{_safe(name)}__{_safe(method)}__s{seed}"
        try:
            cfg = load_config(base, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])
            plan_run(cfg)
        except ConfigError as e:
            raise ConfigError(f"{path}: cell {cid}: {e}") from None
        cells.append(Cell(cid, name, method, seed, overrides, cfg))
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: two cells get the same folder name; make the setting "
                          "names or axis values distinct")
    return cells, methods


def _check_claims(claims: list[Claim], methods: list[str], settings: list[str],
                  path: Path) -> None:
    """Every method and setting a claim names is one of the grid's."""
    for c in claims:
        for side in (c.better, c.worse):
            for m in side.get("method", []):
                if m not in methods:
                    raise ConfigError(f"{path}: claim {c.name!r}: no method {m!r} (the grid "
                                      f"has {'; '.join(methods)})")
            for s in side.get("setting", []):
                if s not in settings:
                    raise ConfigError(f"{path}: claim {c.name!r}: no setting {s!r} (the grid "
                                      f"has {', '.join(settings)})")
