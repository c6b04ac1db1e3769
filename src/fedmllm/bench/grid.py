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
    gate_against = "zeroshot"                # optional: the gate asks for more than the
                                             # constant answer: beat this method too
    signal = "any"                           # optional: whose gate decides that a setting
                                             # has a signal (default: the reference)
    target = 0.9                             # optional: the accuracy a seed must reach
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

An optional ``[tune]`` table names, per method, keys and candidate values to choose on seeds
of their own before the report cells run (:mod:`fedmllm.bench.tune`)::

    [tune]
    seeds = [100, 101]                                 # disjoint from bench.seeds
    [tune.methods.fedadam]
    "fl.strategy.eta" = [0.003, 0.01, 0.03]

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

__all__ = ["Cell", "Claim", "Grid", "Tuning", "build_cell", "cells_digest", "check_ids",
           "load_grid", "tuned_label"]

_BENCH_KEYS = {"base", "seeds", "metric", "reference", "description", "view", "metrics",
               "gate_against", "signal", "target", "share_uploads", "notes", "focus", "against"}
_METRICS = ("accuracy", "macro_f1", "auroc", "auc_hard", "accuracy_calibrated")
_VIEWS = ("image_text", "image_only", "text_only")
_BENCH_SET = ("seed", "output.dir")  # keys a grid may not set: bench.seeds, --out
_TUNE_KEYS = ("seeds", "settings", "metric", "holdout", "methods")
_SCORES = ("accuracy", "macro_f1", "auroc")  # what a client's held-out evaluation reports

TARGET = 0.9
"""``bench.target``'s default: halfway between what one modality of the synthetic tasks allows
(binary: 0.8) and the joint image+text rule (1.0); a seed at or above it used both."""


@dataclass
class Cell:
    """One run of the sweep."""

    id: str
    """Folder name: ``<setting>__<method>__s<seed>`` made file-safe."""
    setting: str
    method: str
    seed: int
    overrides: dict[str, Any]
    """The dotted keys this cell sets on top of the base file (fixed, setting, axes, the
    tuned keys, seed)."""
    config: Config = field(repr=False, default=None)
    tuned: dict[str, Any] = field(default_factory=dict)
    """The keys of :attr:`overrides` that the grid's tuning chose (:mod:`.tune`)."""

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
    (or method) both sides share. It holds in a setting when the paired difference (better -
    worse, over the seeds both have) is above 0 after Holm's correction over the claim's
    comparisons (:mod:`fedmllm.bench.stats`: the t test, or the permutation test where the
    values are two-valued).
    """

    name: str
    better: dict[str, list[str]]
    worse: dict[str, list[str]]
    metric: str | None = None
    view: str | None = None


@dataclass
class Tuning:
    """A grid's ``[tune]`` table, checked, with its tune cells as a grid of their own."""

    seeds: list[int]
    settings: list[str]
    metric: str
    holdout: float
    candidates: dict[str, list[dict[str, Any]]]
    """Per tuned method, its candidates (key -> value) in file order."""
    grid: Grid
    """The tune cells (method ``"<method> <candidate>"``), run as a sweep in ``OUT/tune/``."""
    digest: str = ""
    """SHA-256 of the table and the tune cells' keys: a resumed tuning must be the same."""

    def to_json(self) -> dict:
        return {"seeds": self.seeds, "settings": self.settings, "metric": self.metric,
                "holdout": self.holdout, "candidates": self.candidates, "digest": self.digest}

    def cells(self, method: str, candidate: dict[str, Any]) -> list:
        name = _tuned_name(method, candidate)
        return [c for c in self.grid.cells if c.method == name]


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
    gate_against: str | None = None
    """A method every other method must also beat to pass the learnability gate (beside the
    constant answer); a setting has no signal where the reference fails the gate."""
    target: float = TARGET
    """The accuracy a seed must reach (the report's share of seeds and rounds to target)."""
    share_uploads: bool = False
    """One-shot cells share their clients' uploads (``fl.yoco.upload_cache`` = ``OUT/uploads``):
    cells that differ only in the merge train once."""
    notes: str | None = None
    """A Markdown file (relative to the grid) the report appends: the study's explanations."""
    focus: str | None = None
    """The method the study is about: the report's verdict table sets it against ``against``
    in every setting (paired differences, and its bytes against the reference's)."""
    against: list[str] = field(default_factory=list)
    signal: str | None = None
    """The method whose gate decides that a setting has a signal (``None``: the reference), or
    ``"any"``: any method passing it (a grid whose reference is meant to fail somewhere, as
    FedAvg under attack)."""
    tune: Tuning | None = None
    """The grid's ``[tune]`` table, checked, with its tune cells (:mod:`.tune` runs them)."""

    def to_json(self) -> dict:
        return {"grid": str(self.path), "description": self.description, "digest": self.digest,
                "metric": self.metric, "view": self.view, "reference": self.reference,
                "base": self.base, "settings": self.settings, "methods": self.methods,
                "seeds": self.seeds, "metrics": self.metrics,
                "gate_against": self.gate_against, "signal": self.signal,
                "target": self.target,
                "share_uploads": self.share_uploads, "notes": self.notes,
                "focus": self.focus, "against": self.against,
                "claims": [vars(c) for c in self.claims],
                **({"tune": self.tune.to_json()} if self.tune is not None else {}),
                "cells": [{"id": c.id, "setting": c.setting, "method": c.method,
                           "seed": c.seed, "overrides": c.overrides,
                           **({"tuned": c.tuned} if c.tuned else {})} for c in self.cells]}


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
    against = _method_names(bench, "against", methods, path)
    gate_against = (_method_names(bench, "gate_against", methods, path) or [None])[0]
    signal = bench.get("signal")
    if signal != "any":
        signal = (_method_names(bench, "signal", methods, path) or [None])[0]
    focus = (_method_names(bench, "focus", methods, path) or [None])[0]
    if against and focus is None:
        raise ConfigError(f"{path}: bench.against: name the method it is against (bench.focus)")
    base = opts["base"]
    grid = Grid(path, cells, names, methods, list(opts["seeds"]), opts["metric"], opts["view"],
                reference, str(bench.get("description", "")), str(base) if base else None,
                claims, cells_digest(cells), list(opts["metrics"]), gate_against,
                opts["target"], opts["share_uploads"], opts["notes"], focus, against, signal)
    if "tune" in raw:
        grid.tune = _tuning(raw["tune"], grid)
    return grid


def cells_digest(cells: list[Cell]) -> str:
    """SHA-256 of the cells' ids and full configurations."""
    return hashlib.sha256(json.dumps(
        [[c.id, c.config.to_dict()] for c in cells], sort_keys=True, default=str
    ).encode()).hexdigest()


def _read(path: Path) -> dict:
    """The grid file's tables, checked for unknown ones."""
    if not path.is_file():
        raise ConfigError(f"{path}: grid file not found")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: cannot parse: {e}") from None
    unknown = set(raw) - {"bench", "fixed", "axes", "methods", "settings", "claims", "tune"}
    if unknown:
        raise ConfigError(f"{path}: unknown table {min(unknown)!r} (expected bench, "
                          "fixed, axes, methods, settings, claims, tune)")
    return raw


def _bench_options(bench: dict, path: Path) -> dict[str, Any]:
    """The ``[bench]`` keys that need no method names, checked: seeds, metric, metrics,
    share_uploads, notes and base (both resolved against the grid's folder), view and target."""
    if "gate" in bench:
        raise ConfigError(f"{path}: bench.gate: no longer read: every method is gated against "
                          "the constant answer, and a setting has no signal only where the "
                          "reference (bench.reference) fails; bench.gate_against names a method "
                          "to beat as well")
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
    target = bench.get("target", TARGET)
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 1:
        raise ConfigError(f"{path}: bench.target: expected an accuracy in (0, 1], got {target!r}")
    return {"seeds": seeds, "metric": metric, "metrics": extra, "share_uploads": share,
            "notes": notes, "view": view, "base": base, "target": float(target)}


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
        cid = f"{_safe(name)}__{_safe(method)}__s{seed}"
        cells.append(build_cell(path, base, cid, name, method, seed,
                                {**fixed, **keys, **combo, "seed": seed}))
    check_ids(cells, path)
    return cells, methods


def build_cell(path: Path, base: Path | str | None, cid: str, setting: str, method: str,
               seed: int, overrides: dict[str, Any]) -> Cell:
    """One cell, its configuration built from ``base`` and ``overrides`` and validated
    (:func:`fedmllm.engine.plan_run`); an error names the grid file and the cell."""
    from ..engine.factory import plan_run

    try:
        cfg = load_config(base, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])
        plan_run(cfg)
    except ConfigError as e:
        raise ConfigError(f"{path}: cell {cid}: {e}") from None
    return Cell(cid, setting, method, seed, overrides, cfg)


def check_ids(cells: list[Cell], path: Path) -> None:
    """Every cell has a folder of its own."""
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: two cells get the same folder name; make the setting "
                          "names or axis values distinct")


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


# ----------------------------------------------------------------------------- [tune]

def tuned_label(candidate: dict[str, Any]) -> str:
    return " ".join(f"{k.rsplit('.', 1)[-1]}={json.dumps(v)}" for k, v in candidate.items())


def _tuned_name(method: str, candidate: dict[str, Any]) -> str:
    return f"{method} {tuned_label(candidate)}"


def _tuning(raw: Any, grid: Grid) -> Tuning:
    """The ``[tune]`` table of ``grid``'s file, checked (one-line errors naming the file),
    and its tune cells built and validated as every cell is."""
    path = grid.path
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: tune: expected a table")
    bad = set(raw) - set(_TUNE_KEYS)
    if bad:
        raise ConfigError(f"{path}: tune.{min(bad)}: unknown key (expected "
                          f"{', '.join(_TUNE_KEYS)})")
    seeds = raw.get("seeds")
    if not (isinstance(seeds, list) and seeds and all(type(s) is int for s in seeds)
            and len(set(seeds)) == len(seeds)):
        raise ConfigError(f"{path}: tune.seeds: expected a list of distinct integers, "
                          f"got {seeds!r}")
    both = sorted(set(seeds) & set(grid.seeds))
    if both:
        raise ConfigError(f"{path}: tune.seeds: {', '.join(map(str, both))} also in "
                          "bench.seeds; the tune seeds and the report seeds must be disjoint")
    settings = raw.get("settings", grid.settings)
    if not (isinstance(settings, list) and settings and set(settings) <= set(grid.settings)):
        raise ConfigError(f"{path}: tune.settings: expected a list of the grid's settings "
                          f"({', '.join(grid.settings)}), got {settings!r}")
    metric = raw.get("metric", grid.metric)
    if metric not in _SCORES:
        raise ConfigError(f"{path}: tune.metric: expected one of {_SCORES} (what the clients' "
                          f"held-out evaluation reports), got {metric!r}")
    holdout = raw.get("holdout", 0.2)
    if not (isinstance(holdout, (int, float)) and 0 < holdout < 1):
        raise ConfigError(f"{path}: tune.holdout: expected a fraction in (0, 1), got "
                          f"{holdout!r}")
    candidates = _candidates(raw.get("methods"), grid)
    t = Tuning(list(seeds), list(settings), metric, float(holdout), candidates, grid=None)
    cells = _tune_cells(t, grid)
    t.grid = Grid(path, cells, t.settings, list(dict.fromkeys(c.method for c in cells)),
                  t.seeds, metric, grid.view, None, f"tuning of {path.name}", grid.base,
                  digest=cells_digest(cells))
    t.digest = hashlib.sha256(json.dumps(
        [t.to_json(), [[c.id, c.overrides] for c in cells]], sort_keys=True, default=str
    ).encode()).hexdigest()
    return t


def _candidates(raw: Any, grid: Grid) -> dict[str, list[dict[str, Any]]]:
    """``tune.methods``: per method of the grid, its keys' candidate values crossed in file
    order."""
    path = grid.path
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: tune.methods: expected a [tune.methods.<method>] table "
                          "for each method to tune")
    out = {}
    for method, table in raw.items():
        where = f"{path}: tune.methods.{method}"
        if method not in grid.methods:
            raise ConfigError(f"{where}: no method {method!r} (the grid has "
                              f"{'; '.join(grid.methods)})")
        if any(c.config.fl.algorithm == "zeroshot" for c in grid.cells if c.method == method):
            raise ConfigError(f"{where}: zero-shot trains nothing; there is nothing to tune")
        keys = flatten(table) if isinstance(table, dict) else {}
        if not keys:
            raise ConfigError(f"{where}: expected keys with lists of candidate values")
        for k, values in keys.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{where}: {k}: expected a non-empty list of candidate "
                                  f"values (quote a dotted key: \"{k}\" = [...])")
            if k in ("seed", "output.dir", "eval.client_holdout"):
                raise ConfigError(f"{where}: {k}: set by the tuning itself")
        out[method] = [dict(zip(keys, vals, strict=True))
                       for vals in itertools.product(*keys.values())]
    return out


def _tune_cells(t: Tuning, grid: Grid) -> list:
    """Every (tune setting, method, candidate, tune seed) cell: the method's keys in that
    setting, the candidate's, the validation split, the tune seed."""
    keys_of = {}
    for c in grid.cells:  # the method's keys in a setting, as its report cells have them
        keys_of.setdefault((c.setting, c.method),
                           {k: v for k, v in c.overrides.items() if k != "seed"})
    cells = []
    for method, cands in t.candidates.items():
        for cand, setting, seed in itertools.product(cands, t.settings, t.seeds):
            name = _tuned_name(method, cand)
            cid = f"{_safe(setting)}__{_safe(method)}__{_safe(tuned_label(cand))}__s{seed}"
            overrides = {**keys_of[(setting, method)], **cand, "eval.client_holdout": t.holdout,
                         "eval.max_samples": 1, "seed": seed}
            cells.append(build_cell(grid.path, grid.base, cid, setting, name, seed, overrides))
    check_ids(cells, grid.path)
    return cells
