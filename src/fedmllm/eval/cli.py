"""``fedmllm eval``: evaluate a saved adapter (or the base model), or a finished run with its own
configuration, and write its results (``OUT/eval.json``, ``OUT/predictions.jsonl``).

Two ways in:

``--adapter DIR --dataset D --out OUT``
    an adapter folder (or ``none``: the base model) on a dataset's split. The base model is
    ``--model`` / ``--model-preset``, else the one the adapter records (``fedmllm.json``, then
    ``adapter_config.json``; a built-in preset recorded as ``fedmllm-preset:<name>`` is built
    into the cache when it is not there).
``--run RUN``
    a finished run as it evaluated itself: its base model (``model.name`` or the built-in
    preset), its adapter (``RUN/adapter``), its test set rebuilt exactly
    (:func:`fedmllm.data.build_test_data` on ``RUN/config.yaml``: same data config, seed,
    ``test_size`` and prompt strategy), its ``eval.views``, ``eval.batch_size``,
    ``eval.max_samples``, ``model.dtype`` and ``train.device``. Any option given on the command
    line overrides the run's value (``--dataset`` naming another dataset, or ``--split``, reads
    that dataset as without ``--run``; ``--adapter none`` evaluates the base model on the run's
    test set). ``OUT`` defaults to ``RUN/eval``. A local-only run (``adapters/client_<k>/``,
    no ``adapter/``) has every client's adapter evaluated, and ``eval.json`` holds
    ``per_client`` with the mean, std, min and max accuracy over clients, as the run's
    ``summary.json`` does; ``--client K`` evaluates client K's adapter alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config, ConfigError, flatten, load_config
from ..data.errors import DataError
from ..data.types import Sample
from ..errors import ModelError, OutputError
from ..files import atomic_write_text, looks_local
from .evaluate import VIEWS, evaluate
from .parsing import LETTERS

#: The options that are configuration keys: one not given takes the run's value (``--run``)
#: or the key's default.
CONFIG_OPTIONS = {"seed": "seed", "prompt_strategy": "data.prompt_strategy",
                  "views": "eval.views", "batch_size": "eval.batch_size",
                  "max_samples": "eval.max_samples", "device": "train.device"}

#: The defaults of the options that are not configuration keys (a dataset's own options, such
#: as ``synth``'s ``task``, default in its registry entry).
DEFAULTS = {"split": "test", "mode": "score"}


def _arg(args, name: str):
    return getattr(args, name, None)


def _fill(args, cfg: Config) -> None:
    """Set every :data:`CONFIG_OPTIONS` option not given to its key's value in ``cfg``, and
    the others of :data:`DEFAULTS`."""
    values = flatten(cfg.to_dict())
    for name, key in CONFIG_OPTIONS.items():
        if _arg(args, name) is None:
            setattr(args, name, values[key])
    for name, value in DEFAULTS.items():
        if _arg(args, name) is None:
            setattr(args, name, value)


def _dataset_options(args) -> dict:
    """The datasets' own options given on the command line (``--task``, ``--test-size`` ...)."""
    from ..data.registry import dataset_options

    return {o.name: _arg(args, o.name) for o in dataset_options("eval")
            if _arg(args, o.name) is not None}


# ----------------------------------------------------------------------------- base model

def recorded_base(folder: Path) -> tuple[str, list[str]]:
    """The base model an adapter folder records, and notes for the user.

    Looked at in order: ``fedmllm.json`` ``base_model`` (the folder or hub id the run loaded),
    ``fedmllm.json`` ``base_model_name`` (its portable name) and ``adapter_config.json``
    ``base_model_name_or_path``. A preset name is resolved to its cached folder; a folder that
    no longer exists is skipped (and named in the error when nothing else is found).
    """
    from ..model.names import parse_preset_name, resolve_base

    candidates: list[tuple[str, str]] = []
    meta: dict = {}
    for name, keys in (("fedmllm.json", ("base_model", "base_model_name")),
                       ("adapter_config.json", ("base_model_name_or_path",))):
        path = folder / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except ValueError:  # not JSON (or not UTF-8)
            raise ModelError(f"{path}: not a JSON object") from None
        if not isinstance(data, dict):
            raise ModelError(f"{path}: not a JSON object")
        if name == "fedmllm.json":
            meta = data
        candidates += [(f"{name} {key}", data[key]) for key in keys
                       if isinstance(data.get(key), str) and data[key]]
    missing = []
    for where, base in candidates:
        if parse_preset_name(base):
            resolved = resolve_base(base)
            notes = []
            recipe = meta.get("base_recipe")
            if recipe and recipe != Path(resolved).name:
                notes.append(f"note: the adapter was trained on {base} as built by recipe "
                             f"{recipe}; this fedmllm builds {Path(resolved).name}, so results "
                             "may differ from the run's")
            return resolved, notes
        if looks_local(base):
            if Path(base).expanduser().is_dir():
                return base, []
            missing.append(f"{base} ({where})")
            continue
        return base, []  # a hub id
    if missing:
        raise ModelError(f"{folder}: the adapter's base model is not on this machine (looked "
                         f"for {'; '.join(missing)}); pass --model (its folder or hub id) or "
                         "--model-preset")
    if (folder / "config.yaml").is_file():
        raise ModelError(f"{folder}: a run folder, not an adapter folder (no fedmllm.json or "
                         f"adapter_config.json there): evaluate the run with --run {folder}, "
                         f"or its adapter with --adapter {folder / 'adapter'}")
    raise ModelError(f"no base model: {folder} has no fedmllm.json (base_model) or "
                     "adapter_config.json (base_model_name_or_path) naming one; pass --model "
                     "or --model-preset")


def _base_for(args) -> tuple[str, list[str]]:
    if args.model:
        return args.model, []
    if args.model_preset:
        from ..model.names import preset_name, resolve_base

        return resolve_base(preset_name(args.model_preset)), []
    if args.adapter and args.adapter != "none":
        return recorded_base(Path(args.adapter))
    raise ModelError("no base model: with --adapter none pass --model or --model-preset")


def _check_adapter_folder(adapter: str | Path) -> None:
    path = Path(adapter)
    if not path.is_dir():
        raise ModelError(f"{path}: no such adapter folder")
    if not (path / "adapter_config.json").is_file():
        hint = (f"; it is a run folder: use --run {path}" if (path / "config.yaml").is_file()
                else "")
        raise ModelError(f"{path}: not a PEFT adapter folder (no adapter_config.json){hint}")


# ----------------------------------------------------------------------------- test samples

def load_test_samples(args) -> list[Sample]:
    """The evaluation samples: ``args.split`` of the registered dataset ``args.dataset``, with
    its own options from ``args``; a real dataset's images are checked first (as ``prepare``
    does), so a missing or unreadable image is a one-line error before any model loads."""
    from ..data import get_dataset, read_split

    spec = get_dataset(args.dataset, "eval")
    if spec.reads_folder and not args.data_dir:
        raise DataError(f"--data-dir is required for --dataset {args.dataset}")
    options = {o.name: _arg(args, o.name) for o in spec.options}
    return read_split(args.dataset, args.data_dir, args.split, seed=args.seed, **options)


# ----------------------------------------------------------------------------- the job

@dataclass
class EvalJob:
    """What one ``fedmllm eval`` evaluates, decided before any model loads."""

    base: str
    adapters: dict[int | None, Path | None]
    """Client id (``None``: the one adapter) -> adapter folder (``None``: the base model)."""
    samples: list[Sample]
    views: list[str]
    prompt_strategy: str
    mode: str
    batch_size: int
    max_samples: int | None
    dtype: str
    device: str
    out: Path
    meta: dict
    notes: list[str] = field(default_factory=list)
    expected: dict | None = None
    """The run's own final metrics (``summary.json``) when this job repeats its evaluation."""
    trust_remote_code: bool = False
    """``--trust-remote-code``, or the run's ``model.trust_remote_code``."""


def _views(spec) -> list[str]:
    views = [v.strip() for v in spec.split(",") if v.strip()] if isinstance(spec, str) \
        else list(spec)
    bad = [v for v in views if v not in VIEWS]
    if bad or not views:
        raise DataError(f"--views: unknown view '{bad[0] if bad else ''}' "
                        f"(choices: {', '.join(VIEWS)})")
    return views


def job_from_args(args) -> EvalJob:
    """``--adapter``/``--dataset``/``--out`` as given (no run folder)."""
    for name, what in (("adapter", "a PEFT adapter folder, or 'none' for the base model"),
                       ("dataset", "the dataset to evaluate on"),
                       ("out", "the output folder")):
        if not _arg(args, name):
            raise ConfigError(f"--{name} is required ({what}), or evaluate a finished run with "
                              "--run RUN")
    if _arg(args, "client") is not None:
        raise ConfigError("--client picks one client adapter of a local-only run: use it "
                          "with --run RUN")
    _fill(args, Config())
    base, notes = _base_for(args)
    adapter = None if args.adapter == "none" else Path(args.adapter)
    if adapter is not None:
        _check_adapter_folder(adapter)
    views = _views(args.views)
    samples = load_test_samples(args)
    meta = {"adapter": args.adapter, "base_model": base, "dataset": args.dataset,
            "split": args.split, "prompt_strategy": args.prompt_strategy}
    return EvalJob(base, {None: adapter}, samples, views, args.prompt_strategy, args.mode,
                   args.batch_size, args.max_samples, Config().model.dtype, args.device,
                   Path(args.out), meta, notes,
                   trust_remote_code=bool(_arg(args, "trust_remote_code")))


def check_run_folder(run: Path) -> None:
    """A finished run folder, or a one-line :class:`OutputError` saying what is wrong."""
    if not run.is_dir():
        raise OutputError(f"{run}: no such run folder")
    if not (run / "config.yaml").is_file():
        raise OutputError(f"{run}: not a fedmllm run folder (no config.yaml)")
    if not (run / "summary.json").is_file():
        try:
            status = json.loads((run / "run.json").read_text()).get("status", "unknown")
        except (OSError, ValueError, AttributeError):
            status = "unknown"
        raise OutputError(f"{run}: the run is unfinished (status {status}, no summary.json); "
                          f"continue it with `fedmllm run --resume {run}` (unless it is still "
                          "running), then evaluate it")


def run_adapters(run: Path, cfg, client: int | None) -> dict[int | None, Path]:
    """The adapters a finished run saved: ``adapter/``, or a local-only run's clients."""
    if (run / "adapter" / "adapter_config.json").is_file():
        if client is not None:
            raise ConfigError(f"--client: {run} has one global adapter (adapter/); --client "
                              "picks one of a local-only run's adapters/client_<k>/")
        return {None: run / "adapter"}
    found = {}
    for folder in sorted((run / "adapters").glob("client_*")):
        k = folder.name.removeprefix("client_")
        if k.isdigit() and (folder / "adapter_config.json").is_file():
            found[int(k)] = folder
    found = dict(sorted(found.items()))
    if found:
        if client is None:
            return dict(found)
        if client not in found:
            raise OutputError(f"{run}: no adapter for client {client} (adapters/client_<k>/ "
                              f"holds clients {', '.join(map(str, found))})")
        return {client: found[client]}
    what = f"fl.algorithm={cfg.fl.algorithm}"
    if cfg.fl.algorithm in ("yoco", "oneshot"):
        what += f", fl.yoco.method={cfg.fl.yoco.method}"
    raise OutputError(f"{run}: the run saved no adapter ({what}), so there is none to "
                      "evaluate; its results are in summary.json (--adapter none evaluates "
                      "the base model on its test set)")


def _run_base(cfg, adapter: Path | None) -> tuple[str, list[str]]:
    """The run's base model: the folder the run loaded when it is still there (the exact
    weights), else ``model.name`` or the built-in preset of the configuration."""
    from ..model.names import preset_name, resolve_base

    if adapter is not None:
        try:
            meta = json.loads((adapter / "fedmllm.json").read_text())
            loaded = meta.get("base_model") if isinstance(meta, dict) else None
        except (OSError, ValueError):
            loaded = None
        if isinstance(loaded, str) and loaded and Path(loaded).expanduser().is_dir():
            return loaded, []
    name = cfg.model.name
    if name:
        if looks_local(name) and not Path(name).expanduser().is_dir():
            raise ModelError(f"the run's base model {name} (model.name in config.yaml) is not "
                             "on this machine; pass --model (its folder or hub id)")
        return name, []
    base = resolve_base(preset_name(cfg.model.preset, cfg.model.pretrain))
    return base, []


def job_from_run(args) -> EvalJob:
    """``--run RUN``: the run's own evaluation, with the options given as overrides."""
    run = Path(args.run)
    check_run_folder(run)
    cfg = load_config(run / "config.yaml")
    client = _arg(args, "client")
    adapters = _run_job_adapters(args, run, cfg, client)
    first = next(iter(adapters.values()))
    if args.model or args.model_preset:
        base, notes = _base_for(args)
    else:
        base, notes = _run_base(cfg, first)
    notes += _pissa_note(first)
    samples, dataset, split, test_set = _run_test_set(args, cfg)
    expected = _run_expected(args, run, client) if test_set == "run" else None
    _fill(args, cfg)
    shown = {k: (str(v) if v is not None else "none") for k, v in adapters.items()}
    meta = {"run": str(run), "adapter": shown.get(None, shown),
            "base_model": base, "dataset": dataset, "split": split, "test_set": test_set,
            "prompt_strategy": args.prompt_strategy}
    if client is not None:
        meta.update(client=client, adapter=shown[client])
    return EvalJob(
        base, adapters, samples, _views(args.views), args.prompt_strategy, args.mode,
        args.batch_size, args.max_samples, cfg.model.dtype, args.device,
        Path(args.out) if args.out else run / "eval", meta, notes, expected,
        trust_remote_code=cfg.model.trust_remote_code if _arg(args, "trust_remote_code") is None
        else bool(args.trust_remote_code))


def _run_job_adapters(args, run: Path, cfg, client: int | None) -> dict:
    """``--adapter`` (``none``: the base model) or the run's own adapters, checked."""
    if args.adapter is not None:
        if client is not None:
            raise ConfigError("--client picks a client adapter of the run; it takes no "
                              "--adapter")
        adapters: dict = {None: None if args.adapter == "none" else Path(args.adapter)}
    else:
        adapters = run_adapters(run, cfg, client)
    for folder in adapters.values():
        if folder is not None:
            _check_adapter_folder(folder)
    return adapters


def _pissa_note(adapter: Path | None) -> list[str]:
    """A note when the adapter was converted from PiSSA (its numbers may differ slightly)."""
    try:
        pissa = adapter is not None and json.loads(
            (adapter / "fedmllm.json").read_text()).get("converted_from_pissa") is True
    except (OSError, ValueError, AttributeError):
        pissa = False
    if not pissa:
        return []
    return [("note: the adapter was converted from PiSSA to load on the original base model, "
             "so its numbers can differ from the run's by float rounding")]


def _run_test_set(args, cfg) -> tuple[list[Sample], str, str, str]:
    """``(samples, dataset, split, "run" or "dataset")``: another dataset or split (``--dataset``,
    ``--split``) read as without ``--run``, the run's values by default; else the run's own test
    set, rebuilt as the run built it (with the data options given here)."""
    from ..data import build_test_data
    from ..data.registry import dataset_options

    given = _dataset_options(args)
    seed = args.seed if args.seed is not None else cfg.seed
    if (args.dataset is not None and args.dataset != cfg.data.dataset) or args.split is not None:
        same = args.dataset in (None, cfg.data.dataset)
        run_values = {o.name: getattr(cfg.data, o.name) for o in dataset_options("eval")
                      if hasattr(cfg.data, o.name)}
        ns = argparse.Namespace(**{**run_values, **given}, dataset=args.dataset or cfg.data.dataset,
                                split=args.split or "test", seed=seed,
                                data_dir=args.data_dir or (cfg.data.data_dir if same else None))
        return load_test_samples(ns), ns.dataset, ns.split, "dataset"
    data_cfg = dataclasses.replace(cfg.data, **{k: v for k, v in given.items()
                                                if hasattr(cfg.data, k)})
    if args.data_dir is not None:
        data_cfg.data_dir = args.data_dir
    samples = build_test_data(data_cfg, cfg.fl.num_clients, seed).test
    return samples, cfg.data.dataset, "test", "run"


def _run_expected(args, run: Path, client: int | None) -> dict | None:
    """The run's own final metrics when this evaluation repeats the run's (nothing that
    changes the numbers given), else ``None``."""
    changes = ("adapter", "model", "model_preset", "max_samples", "batch_size",
               "prompt_strategy", "dataset", "split", "seed", "data_dir")
    if any(_arg(args, name) is not None for name in changes) or _dataset_options(args) \
            or args.mode not in (None, "score"):
        return None
    try:
        summary = json.loads((run / "summary.json").read_text())
        expected = summary.get("final") if isinstance(summary, dict) else None
    except (OSError, ValueError):
        return None
    if client is not None and isinstance(expected, dict):
        expected = (expected.get("per_client") or {}).get(str(client))
    return expected


# ----------------------------------------------------------------------------- results

def prediction_rows(result: dict, client: int | None = None) -> list[dict]:
    """One row per (sample, modality view): id, modality, prompt, prediction, correct, ...
    (and ``client`` for a client's own adapter)."""
    rows = []
    for view, (samples, pred) in result["_predictions"].items():
        for i, s in enumerate(samples):
            row = {"id": s.id, "modality": view, "prompt": pred["prompts"][i]}
            if client is not None:
                row = {"client": client, **row}
            if "probs" in pred:
                p = pred["probs"][i].tolist()
                k = max(range(len(p)), key=p.__getitem__)
                row.update(prediction=LETTERS[k], probabilities=[round(x, 6) for x in p],
                           label=s.label, correct=k == s.label)
            elif "parsed" in pred:
                # generated multiple choice: the strict parse (null = invalid) and, for
                # comparison, the research parser's reading of the same text
                k, r = pred["parsed"][i], pred["research"][i]
                row.update(text=pred["texts"][i], prediction=None if k is None else LETTERS[k],
                           prediction_research=LETTERS[r], label=s.label, correct=k == s.label)
            else:
                from .vqa import exact_match

                text = pred["texts"][i]
                row.update(prediction=text, answer=s.answer, answer_type=s.answer_type,
                           correct=bool(exact_match(text, s.answer)))
            rows.append(row)
    return rows


def _apply_run_threshold(expected: dict, result: dict) -> None:
    """A run with ``eval.threshold = calibrated`` recorded, per view, the threshold its clients'
    held-out samples chose: apply it to this evaluation's option probabilities, so that
    ``accuracy_calibrated`` is repeated (and compared) as well as the fixed figures. The first
    view's figures are also the top-level ones (as :func:`~.evaluate.evaluate` gives them)."""
    from .threshold import calibrated_metrics

    views = result.get("per_modality") or {}
    for view, (samples, pred) in (result.get("_predictions") or {}).items():
        theirs = (expected.get("per_modality") or {}).get(view) or {}
        if isinstance(theirs.get("threshold"), float) and "probs" in pred:
            views[view].update(calibrated_metrics(
                [s.label for s in samples], pred["probs"], theirs["threshold"]))
    first = next(iter(views.values()), {})
    result.update({k: first[k] for k in ("accuracy_calibrated", "threshold") if k in first})


def _apply_run_thresholds(job: EvalJob, results: dict[int | None, dict]) -> None:
    """:func:`_apply_run_threshold` for every adapter evaluated: the run's one threshold for its
    one adapter; for a local-only run, client K's own threshold (calibrated on K's held-out
    samples alone) for K's adapter."""
    for client, result in results.items():
        if client is None or job.meta.get("client") is not None:
            theirs = job.expected  # the one adapter's, or (--client K) already client K's
        else:
            theirs = (job.expected.get("per_client") or {}).get(str(client))
        if isinstance(theirs, dict):
            _apply_run_threshold(theirs, result)


def _comparison(expected: dict, got: dict) -> str:
    """One line: does this evaluation give the run's own final numbers?"""
    pairs = []
    if "per_client" in expected or "per_client" in got:
        pairs.append(("accuracy (mean over clients)", expected.get("accuracy"),
                      got.get("accuracy")))
        pairs.append(("accuracy_calibrated (mean over clients)",
                      expected.get("accuracy_calibrated"), got.get("accuracy_calibrated")))
    else:
        for view, m in (got.get("per_modality") or {}).items():
            theirs = (expected.get("per_modality") or {}).get(view) or {}
            for key in ("accuracy", "accuracy_calibrated", "macro_f1", "auroc", "overall",
                        "closed_accuracy", "open_exact"):
                if isinstance(m.get(key), float) and isinstance(theirs.get(key), float):
                    pairs.append((f"{view} {key}", theirs[key], m[key]))
    pairs = [p for p in pairs if p[1] is not None and p[2] is not None]
    if not pairs:
        return ""
    differ = [f"{name} {a:.4f} there, {b:.4f} here" for name, a, b in pairs if a != b]
    if not differ:
        return "same numbers as the run's summary.json"
    return ("differs from the run's summary.json (" + "; ".join(differ) + "): another device, "
            "dtype or library version?")


def run_eval(args, console) -> int:
    """``fedmllm eval``: decide the job (before any model loads), load the base model once,
    evaluate each adapter, write ``OUT/eval.json`` and ``OUT/predictions.jsonl``, print the
    tables."""
    from ..model.loading import load_vlm, resolve_device, resolve_dtype

    if args.max_new_tokens < 1:
        raise DataError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    job = job_from_run(args) if _arg(args, "run") else job_from_args(args)
    device = resolve_device(job.device)
    dtype = resolve_dtype(job.dtype, device)
    for note in job.notes:
        console.print(note, markup=False)
    if _arg(args, "run"):
        what = ("the base model" if job.adapters == {None: None} else
                f"{len(job.adapters)} client adapters" if None not in job.adapters else
                str(job.adapters[None]))
        console.print(f"evaluating {what} on {job.base}: {len(job.samples)} test samples "
                      f"({'the run' if job.meta['test_set'] == 'run' else job.meta['dataset']}"
                      f"'s test set), views {', '.join(job.views)}", markup=False)
    model, processor = load_vlm(job.base, device=device, dtype=dtype,
                                trust_remote_code=job.trust_remote_code)
    results = _evaluate_adapters(job, model, processor, device, dtype, args, console)
    if job.expected:
        _apply_run_thresholds(job, results)
    per = {c: {k: v for k, v in res.items() if not k.startswith("_")}
           for c, res in results.items()}
    metrics = _job_metrics(job, per)
    _write_results(job, results, metrics)
    _print_results(console, job, per, metrics)
    return 0


def _evaluate_adapters(job: EvalJob, model, processor, device, dtype, args,
                       console) -> dict[int | None, dict]:
    """Each adapter of the job (loaded into the one base model in turn) on the test set."""
    import torch

    from ..report.console import RoundProgress

    cache: dict = {}
    results: dict[int | None, dict] = {}
    n = len(job.samples[:job.max_samples] if job.max_samples else job.samples)
    for i, (client, folder) in enumerate(job.adapters.items()):
        if folder is not None:
            from peft import PeftModel

            name = "default" if client is None else f"client_{client}"
            if i == 0:
                model = PeftModel.from_pretrained(model, folder, adapter_name=name)
            else:
                model.load_adapter(folder, adapter_name=name)
                model.set_adapter(name)
            model = model.to(device).eval()
        torch.manual_seed(0)
        with RoundProgress(console, n * len(job.views), not getattr(args, "quiet", False),
                           what="test samples scored") as progress:
            results[client] = evaluate(
                model, processor, job.samples, job.prompt_strategy, views=job.views,
                batch_size=job.batch_size, device=device, dtype=dtype,
                max_samples=job.max_samples, return_predictions=True, mode=job.mode,
                max_new_tokens=args.max_new_tokens, cache=cache, progress=progress.client_done)
    return results


def _job_metrics(job: EvalJob, per: dict[int | None, dict]) -> dict:
    """``eval.json``: the one adapter's metrics, client K's, or the mean over the clients;
    with what was evaluated under ``meta``."""
    if None in per:
        metrics = per[None]
    elif job.meta.get("client") is not None:  # --client K: that client's metrics alone
        metrics = per[job.meta["client"]]
    else:
        from .metrics import mean_over_clients

        metrics = mean_over_clients(per)
    n = len(job.samples[:job.max_samples] if job.max_samples else job.samples)
    metrics["meta"] = {**job.meta, "views": job.views, "n": n,
                       "mode": job.mode if job.samples and job.samples[0].options
                       else "generate",
                       **({"clients": sorted(per)} if "per_client" in metrics else {})}
    return metrics


def _write_results(job: EvalJob, results: dict[int | None, dict], metrics: dict) -> None:
    rows = [r for client, res in results.items() for r in prediction_rows(res, client)]
    try:
        job.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{e.filename or job.out}: cannot create the output folder "
                          f"({e.strerror})") from None
    atomic_write_text(job.out / "predictions.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_text(job.out / "eval.json", json.dumps(metrics, indent=2))


def _print_results(console, job: EvalJob, per: dict[int | None, dict], metrics: dict) -> None:
    for client, m in per.items():
        if client is not None:
            console.print(f"client {client}", markup=False)
        console.print(format_table(m), markup=False, soft_wrap=True)
    if "per_client" in metrics and isinstance(metrics.get("accuracy"), float):
        console.print(f"mean over {len(per)} clients: accuracy {metrics['accuracy']:.4f} "
                      f"(std {metrics['accuracy_std']:.4f}, min {metrics['accuracy_min']:.4f}, "
                      f"max {metrics['accuracy_max']:.4f})", markup=False)
    if job.expected:
        line = _comparison(job.expected, metrics)
        if line:
            console.print(line, markup=False)
    console.print(f"wrote {job.out / 'eval.json'} and {job.out / 'predictions.jsonl'}",
                  markup=False)


def format_table(metrics: dict) -> str:
    pm = metrics["per_modality"]
    first = next(iter(pm.values()))
    if "accuracy" in first:
        keys = ["accuracy", "macro_f1", "auroc", "auc_hard", "invalid_rate"]
        if "accuracy_research" in first:
            keys.append("accuracy_research")
    else:
        keys = ["overall", "closed_accuracy", "open_exact", "open_recall"]
    w = {k: max(16, len(k) + 2) for k in keys}
    lines = [f"{'view':<12}" + "".join(f"{k:>{w[k]}}" for k in keys)]
    for view, m in pm.items():
        cells = "".join(f"{m.get(k):>{w[k]}.4f}" if isinstance(m.get(k), float)
                        else f"{'-':>{w[k]}}" for k in keys)
        lines.append(f"{view:<12}{cells}")
    return "\n".join(lines)
