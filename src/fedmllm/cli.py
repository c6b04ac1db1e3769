"""The ``fedmllm`` command: parses arguments and configuration, then calls the layers."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import __version__
from .config import Config, ConfigError, declared, load_config
from .data.errors import DataError
from .errors import CheckpointError, ModelError, OutputError


class RunStopped(Exception):
    """A run that started and then stopped on a user-facing error (its folder is unfinished)."""

    def __init__(self, message: str, folder, resume: str = "fedmllm run --resume") -> None:
        super().__init__(message)
        self.message, self.folder, self.resume = message, folder, resume


def _quiet_libraries() -> None:
    from .report.console import quiet_libraries

    quiet_libraries()


def _console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def cmd_run(args) -> int:
    from .runtime import load_resume_config, run_experiment, start_run

    overrides = list(args.overrides)
    if args.resume:
        if args.config or args.model or args.overwrite:
            raise ConfigError("--resume continues a run with its own config.yaml; it takes no "
                              "--config, --model or --overwrite")
        cfg = load_resume_config(args.resume, overrides)
    else:
        if args.model:
            overrides.append(f"model.name={args.model}")
        cfg = load_config(args.config, overrides)
    if args.resume:
        from .runtime.outputs import RunFolder

        if RunFolder(args.resume).finished:
            print(f"{args.resume}: this run has finished (summary.json); nothing to resume")
            return 0
    # The configuration, the model's source, the output folder and the data are all checked
    # before the folder is written; a run that cannot start leaves nothing behind.
    started = start_run(cfg, resume=bool(args.resume), overwrite=args.overwrite)
    plan, folder = started.plan, started.folder
    _quiet_libraries()
    console = _console()
    if not args.quiet:
        verb = "resuming" if args.resume else "starting"
        console.print(f"[bold]fedmllm run[/bold] — {verb} in {folder.path}")
        from .report.console import run_header

        for line in run_header(cfg, plan, folder.path):
            console.print(line, markup=False)
        for note in plan.notes:
            console.print(f"  resolved: {note}", markup=False)
    try:
        result = run_experiment(cfg, console=None if args.quiet else console,
                                resume=bool(args.resume), started=started)
    except KeyboardInterrupt:
        print(f"fedmllm: interrupted; continue with: fedmllm run --resume {folder.path}",
              file=sys.stderr)
        return 130
    except (ConfigError, ModelError, DataError, OutputError, CheckpointError) as e:
        raise RunStopped(str(e), folder.path) from None
    except OSError as e:
        if e.filename is None:
            raise
        raise RunStopped(f"{e.filename}: {e.strerror}", folder.path) from None
    _print_summary(console, result.final, result.out_dir, args.quiet)
    return 0


def _print_summary(console, summary: dict, out_dir, quiet: bool = False) -> None:
    if not quiet:
        from .report.console import summary_table

        summary_table(console, summary, out_dir)
        return
    final, totals = summary["final"], summary["totals"]
    acc = final.get("accuracy")
    line = f"final test accuracy {acc:.4f}" if isinstance(acc, float) else "finished"
    if "accuracy_std" in final:
        line += f" (mean over clients, std {final['accuracy_std']:.4f})"
    pm = final.get("per_modality", {})
    if pm:
        line += " | " + ", ".join(f"{k} {v.get('accuracy', float('nan')):.4f}"
                                  for k, v in pm.items() if v.get("accuracy") is not None)
    console.print(line, markup=False)
    console.print(f"uploaded {totals['bytes_uploaded'] / 1e6:.2f} MB, downloaded "
                  f"{totals['bytes_downloaded'] / 1e6:.2f} MB, training "
                  f"{totals['train_seconds']:.1f} s; outputs in {out_dir}", markup=False)


def cmd_flower_certs(args) -> int:
    from pathlib import Path

    from .runtime.flower.certs import generate_tls_files

    out = Path(args.out).resolve()  # flwr reads absolute paths
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise OutputError(f"{out}: not empty (pass --overwrite to replace its certificates)")
    files = generate_tls_files(out, tuple(args.host), days=args.days)
    print(f"wrote {files.ca_cert} (give it to every SuperNode and to flwr), {files.server_cert} "
          f"and {files.server_key} (the SuperLink's), valid {args.days} days for "
          f"{', '.join(args.host)}")
    return 0


def cmd_flower_node_key(args) -> int:
    from pathlib import Path

    from .runtime.flower.certs import generate_node_keys

    out = Path(args.out).resolve()  # flwr reads absolute paths
    if (out / args.name).exists() and not args.overwrite:
        raise OutputError(f"{out / args.name}: exists (pass --overwrite to replace it)")
    keys = generate_node_keys(out, args.name)
    print(f"wrote {keys.private_key} (stays on the SuperNode: --auth-supernode-private-key) and "
          f"{keys.public_key} (register it: flwr supernode register {keys.public_key} "
          "<connection>)")
    return 0


def cmd_flower_local(args) -> int:
    from .runtime import load_resume_config
    from .runtime.outputs import RunFolder

    overrides = list(args.overrides)
    if args.resume:
        if args.config or args.overwrite:
            raise ConfigError("--resume continues a run with its own config.yaml; it takes no "
                              "--config or --overwrite")
        cfg = load_resume_config(args.resume, overrides)
        if RunFolder(args.resume).finished:
            print(f"{args.resume}: this run has finished (summary.json); nothing to resume")
            return 0
    else:
        cfg = load_config(args.config, [f"fl.num_clients={args.supernodes}", *overrides])
    from .runtime.flower.launch import run_local

    console = _console()  # run_local checks every mistake before a process starts
    try:
        summary = run_local(cfg, args.supernodes, console, resume=args.resume,
                            overwrite=args.overwrite, insecure=args.insecure,
                            clientapp=args.clientapp, data_dir=args.data_dir,
                            timeout=args.timeout, gpus=args.gpus)
    except KeyboardInterrupt:
        print(f"fedmllm: interrupted; continue with: fedmllm flower local --supernodes "
              f"{args.supernodes} --resume {cfg.output.dir}", file=sys.stderr)
        return 130
    except (ModelError, DataError, OutputError, CheckpointError) as e:
        raise RunStopped(str(e), cfg.output.dir, f"fedmllm flower local --supernodes "
                                                 f"{args.supernodes} --resume") from None
    _print_summary(console, summary, cfg.output.dir, args.quiet)
    return 0


def cmd_flower_simulation_config(args) -> int:
    import subprocess

    from .runtime.flower.simulation import simulation_config_argv

    clients = args.clients if args.clients is not None else \
        load_config(args.config, args.overrides).fl.num_clients
    argv = simulation_config_argv(clients, gpus=args.gpus, cpus=args.cpus)
    print(" ".join(["flwr", *argv[1:]]), flush=True)
    return subprocess.run(argv, check=False).returncode


def cmd_flower_stop_local(args) -> int:
    from pathlib import Path

    from .runtime.flower.simulation import flwr_home, stop_local_superlink

    home = Path(args.flwr_home) if args.flwr_home else flwr_home()
    pids = stop_local_superlink(home)
    print(f"stopped the local SuperLink of {home} (PIDs {', '.join(map(str, pids))})" if pids
          else f"no local SuperLink of {home} is running")
    return 0


def cmd_config_show(args) -> int:
    from .engine.factory import plan_run

    cfg = load_config(args.config, args.overrides) if (args.config or args.overrides) else Config()
    plan = plan_run(cfg, over_flower=cfg.fl.secure_aggregation)  # SecAgg+ is for Flower runs
    if args.doc:
        import shutil

        from .config import doc_table, doc_text

        markdown = args.format == "markdown"
        print(doc_table(cfg) if markdown else doc_text(cfg, shutil.get_terminal_size().columns))
        return 0
    print(cfg.to_yaml().rstrip())
    for note in plan.notes:
        print(f"# resolved: {note}")
    return 0


def cmd_model_build(args) -> int:
    import json

    from .model.tiny import ensure_tiny, weights_hash

    _quiet_libraries()
    path = ensure_tiny(args.preset, not args.no_pretrain)
    stats = json.loads((path / "recipe.json").read_text())["stats"]
    if "weights_sha256" not in stats:  # an entry cached before the hash was recorded
        stats["weights_sha256"] = weights_hash(path)
    print(path)
    print(json.dumps(stats, indent=2))
    return 0


def cmd_prepare(args) -> int:
    from .data import prepare

    options = {name: getattr(args, name) for name in (*PREPARE_KEYS, *args.dataset_options)}
    manifest = prepare(args.out, args.dataset, args.data_dir, num_clients=args.clients,
                       seed=args.seed, overwrite=args.overwrite,
                       verify_images=not args.no_verify_images, skip_bad=args.skip_bad,
                       skip_hint="--skip-bad", **options)
    print(f"wrote {args.out}: {manifest['num_clients']} client files, test.json, manifest.json")
    return 0


def cmd_data_stats(args) -> int:
    from .data import data_stats

    stats = data_stats(args.folder, png=args.png, plot=not args.no_plot)
    print(stats.table)
    if stats.png:
        print(f"plot: {stats.png}")
    return 0


def cmd_eval(args) -> int:
    from .eval.cli import run_eval

    _quiet_libraries()
    return run_eval(args, _console())


def cmd_plot(args) -> int:
    from .report.plots import plot_runs

    print(f"wrote {plot_runs(args.runs, args.out, metric=args.metric, view=args.view)}")
    return 0


def cmd_bench(args) -> int:
    from .bench import BenchInterrupted, build_report, load_grid, run_bench

    console = None if args.quiet else _console()
    grid = load_grid(args.grid, args.overrides)
    if args.dry_run:
        tune = grid.tune.grid.cells if grid.tune is not None else []
        for cell in [*tune, *grid.cells]:
            print(f"{cell.id}: {cell.command(grid.base)}")
        print(f"{len(tune)} tune cells and {len(grid.cells)} report cells"
              f"{' (run with the tuned keys)' if tune else ''}, every configuration checked")
        return 0
    try:
        status = run_bench(grid, args.out, jobs=args.jobs, resume=args.resume,
                           threads=args.threads, console=console, isolate=args.isolate)
    except BenchInterrupted:
        if (Path(args.out) / "bench.json").is_file():  # not while still tuning
            build_report(args.out)
        again = " ".join([args.grid, *args.overrides])
        print(f"fedmllm: interrupted; finished cells are kept; continue with: fedmllm bench "
              f"{again} --out {args.out} --resume", file=sys.stderr)
        return 130
    paths = build_report(args.out)
    failed = [c for c, st in status.items() if st.get("status") != "done"]
    print(f"wrote {paths['results']}, {paths['markdown']} and {paths['html']}")
    if failed:
        print(f"fedmllm: {len(failed)} of {len(status)} cells failed (errors in "
              f"{Path(args.out) / 'bench.json'} and the report); rerun them with --resume",
              file=sys.stderr)
        return 1
    return 0


def cmd_report(args) -> int:
    from .bench import build_report

    folder = Path(args.folder)
    if not (folder / "bench.json").is_file():
        raise OutputError(f"{folder}: not a bench folder (no bench.json); expected the --out "
                          "folder of `fedmllm bench`")
    paths = build_report(folder, publish=args.publish)
    print(f"wrote {paths['results']}, {paths['markdown']} and {paths['html']}"
          + (f"; published {paths['published']}" if args.publish else ""))
    return 0


CLIENTAPP_MODES = ("warm", "subprocess")  # fedmllm.runtime.flower.launch, without importing it

#: ``fedmllm prepare``'s options that are ``data.*`` keys (``--missing-rate`` is
#: ``data.missing_rate``): their type, default, choices and help are the key's declaration.
#: The datasets' own options (``synth``'s ``--task``, ``medical``'s ``--vqa-rad-dir`` ...) are
#: their registry entries' (:func:`_dataset_options`).
PREPARE_KEYS = ("scenario", "missing_rate", "image_clients", "presence", "prompt_strategy",
                "partition", "alpha", "min_per_client")


def _key_option(parser: argparse.ArgumentParser, flag: str, key: str,
                given_only: bool = False) -> None:
    """The option ``flag`` with the type, default, choices and doc of the configuration key
    ``key``; ``given_only``: its default is ``None`` (it overrides a value found elsewhere only
    when given; the help still names the key's default)."""
    d = declared(key)
    text = d.doc.replace("``", "").replace("%", "%%") + f" (default {d.default})"
    parser.add_argument(flag, type=d.type if d.type in (int, float) else None,
                        default=None if given_only else d.default, choices=d.choices,
                        help=text)


def _dataset_options(parser: argparse.ArgumentParser, purpose: str) -> list[str]:
    """A flag for each option of the registered datasets offered for ``purpose`` (``build``:
    prepare, ``eval``), default ``None`` (the dataset's own default applies); their names."""
    from .data.registry import dataset_options

    names = []
    for o in dataset_options(purpose):
        if o.cli:
            default = "" if o.default is None else f" (default {o.default})"
            parser.add_argument(o.flag, type=o.type, choices=o.choices,
                                help=o.help.replace("%", "%%") + default)
            names.append(o.name)
    return names


def _overrides(parser: argparse.ArgumentParser, metavar: str = "KEY=VALUE",
               text: str = "dotted config overrides") -> None:
    parser.add_argument("overrides", nargs="*", metavar=metavar, help=text)


def _add_run(sub) -> None:
    r = sub.add_parser("run", help="run a federated experiment (default: the built-in demo)",
                       description="Run a federated experiment in the in-process simulator. "
                                   "Override any config key with key=value, e.g. fl.rounds=20. "
                                   "Outputs go to output.dir (default: a new folder "
                                   "runs/<algorithm>-<dataset>-<time>); a checkpoint is written "
                                   "every fl.checkpoint_every rounds.")
    r.add_argument("--config", help="TOML or YAML config file")
    r.add_argument("--model", help="a VLM's hub id or local folder (same as model.name=...)")
    r.add_argument("--resume", metavar="DIR",
                   help="continue the unfinished run in DIR from its last checkpoint, with "
                        "DIR's config.yaml (only output.progress / output.plot may be changed)")
    r.add_argument("--overwrite", action="store_true",
                   help="replace the run already in output.dir (finished or not)")
    _overrides(r)
    r.set_defaults(func=cmd_run)


def _group(sub, name: str, help: str, description: str):
    """The subparsers of command ``name``, which only groups its subcommands
    (``fedmllm NAME SUBCOMMAND``; the one given is ``args.NAME_command``)."""
    parser = sub.add_parser(name, help=help, description=description)
    return parser.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND", required=True)


def _add_config(sub) -> None:
    csub = _group(sub, "config", "inspect configuration", "Inspect the configuration tree.")
    cs = csub.add_parser("show", help="print the defaults (or a file + overrides) resolved",
                         description="Print the resolved configuration as YAML.")
    cs.add_argument("--config", help="TOML or YAML config file")
    cs.add_argument("--doc", action="store_true",
                    help="every key with its type, value and meaning, by section, wrapped to "
                         "the terminal")
    cs.add_argument("--format", choices=("text", "markdown"), default="text",
                    help="with --doc: text for the terminal, or the Markdown table of the docs")
    _overrides(cs)
    cs.set_defaults(func=cmd_config_show)


def _add_prepare(sub) -> None:
    pr = sub.add_parser("prepare", help="partition a dataset into client files (research format)",
                        description="Read a dataset in its published layout, partition it over "
                                    "clients, apply a modality scenario and write "
                                    "OUT/client_{k}.json, OUT/test.json and OUT/manifest.json.")
    pr.add_argument("--dataset", required=True, choices=declared("data.dataset").choices,
                    help="a registered dataset")
    pr.add_argument("--data-dir", help="dataset root in its published layout")
    pr.add_argument("--out", required=True, help="output folder (must not exist, or --overwrite)")
    for name in PREPARE_KEYS:
        _key_option(pr, "--" + name.replace("_", "-"), f"data.{name}")
    pr.set_defaults(dataset_options=_dataset_options(pr, "build"))
    _key_option(pr, "--clients", "fl.num_clients")
    _key_option(pr, "--seed", "seed")
    pr.add_argument("--no-verify-images", action="store_true",
                    help="do not decode the images (a bad one then fails later)")
    pr.add_argument("--skip-bad", action="store_true",
                    help="skip (and count) bad rows and images instead of failing")
    pr.add_argument("--overwrite", action="store_true")
    pr.set_defaults(func=cmd_prepare)


def _add_data(sub) -> None:
    dsub = _group(sub, "data", "inspect prepared data",
                  "Inspect a folder written by `fedmllm prepare`.")
    ds = dsub.add_parser("stats", help="per-client table and stacked-bar PNG",
                         description="Print samples, labels and modalities per client and save "
                                     "a stacked-bar plot.")
    ds.add_argument("folder")
    ds.add_argument("--png", help="plot path (default FOLDER/data_stats.png)")
    ds.add_argument("--no-plot", action="store_true")
    ds.set_defaults(func=cmd_data_stats)


def _add_eval(sub) -> None:
    from .data import dataset_names

    e = sub.add_parser("eval", help="evaluate a finished run, a saved adapter or the base model",
                       description="Evaluate a finished run as it evaluated itself (--run RUN: "
                                   "its base model, adapter, test set, views and batch size; an "
                                   "option given here overrides the run's value), a PEFT adapter "
                                   "folder (--adapter DIR --dataset D --out OUT), or the base "
                                   "model (--adapter none), overall and per modality; writes "
                                   "OUT/eval.json and OUT/predictions.jsonl.")
    e.add_argument("--run", metavar="RUN",
                   help="a finished run folder; OUT defaults to RUN/eval. A local-only run: "
                        "every client's adapter, with mean and std over clients")
    e.add_argument("--client", type=int, metavar="K",
                   help="with --run on a local-only run: client K's adapter only")
    e.add_argument("--adapter", help="PEFT adapter folder, or 'none' (required without --run)")
    e.add_argument("--model", help="base model hub id or folder (default: the adapter's own)")
    e.add_argument("--model-preset", choices=declared("model.preset").choices,
                   help="built-in base model")
    e.add_argument("--trust-remote-code", action="store_true", default=None,
                   help="run the Python code the base checkpoint ships (auto_map in its "
                        "config.json); with --run, the run's model.trust_remote_code")
    e.add_argument("--dataset", choices=dataset_names("eval"),
                   help="required without --run; with --run, another dataset's test split")
    e.add_argument("--data-dir", help="dataset root in its published layout")
    e.add_argument("--split", help="dataset split (default test)")
    _dataset_options(e, "eval")
    _key_option(e, "--seed", "seed", given_only=True)
    _key_option(e, "--prompt-strategy", "data.prompt_strategy", given_only=True)
    e.add_argument("--views", help="comma-separated modality views (default "
                                   f"{','.join(declared('eval.views').default)})")
    e.add_argument("--mode", choices=["score", "generate"],
                   help="multiple choice: 'score' reads option-token probabilities (default); "
                        "'generate' decodes greedily and parses the answer strictly (unreadable "
                        "answers are counted as invalid; no AUROC)")
    e.add_argument("--max-new-tokens", type=int, default=16,
                   help="generation length cap (VQA, and --mode generate)")
    _key_option(e, "--batch-size", "eval.batch_size", given_only=True)
    e.add_argument("--max-samples", type=int)
    _key_option(e, "--device", "train.device", given_only=True)
    e.add_argument("--out", help="output folder (required without --run)")
    e.set_defaults(func=cmd_eval)


def _add_plot(sub) -> None:
    pl = sub.add_parser("plot", help="overlay the learning curves of runs",
                        description="Plot the test metric of one modality view and the mean "
                                    "client train loss per round of one or more runs, one "
                                    "colour per run (labelled by folder and algorithm).")
    pl.add_argument("runs", nargs="+", metavar="RUN", help="run folders (with metrics.jsonl)")
    pl.add_argument("--out", required=True, help="plot file (.png, .svg or .pdf)")
    pl.add_argument("--metric", default="accuracy", choices=["accuracy", "auroc", "macro_f1"])
    views = declared("eval.views")
    pl.add_argument("--view", default=views.default[0], choices=views.choices)
    pl.set_defaults(func=cmd_plot)


def _add_flower(sub) -> None:
    flsub = _group(sub, "flower", "run over Flower (federations across processes/machines)",
                   "Run fedmllm as a Flower App.")
    fll = flsub.add_parser(
        "local", help="a run over a SuperLink and N SuperNodes started on this machine",
        description="Start one Flower SuperLink and N SuperNodes on loopback (TLS and SuperNode "
                    "authentication unless --insecure), run the experiment over them with "
                    "'flwr run', write the same outputs as 'fedmllm run', and stop every "
                    "process it started (recorded in <output.dir>/flower/processes.json). "
                    "SuperNode i holds client i: fl.num_clients is set to N.")
    fll.add_argument("--supernodes", type=int, required=True, metavar="N",
                     help="number of SuperNodes (= clients)")
    fll.add_argument("--insecure", action="store_true",
                     help="plain HTTP, no SuperNode authentication")
    fll.add_argument("--clientapp", choices=CLIENTAPP_MODES, default="warm",
                     help="warm (default): one ClientApp process per SuperNode for the whole "
                          "run, the model loaded once; subprocess: Flower's default, a new "
                          "process per message")
    fll.add_argument("--gpus", type=_device_list, metavar="0,1,...",
                     help="pin SuperNode i (and its ClientApps) to device i mod len(list) "
                          "through CUDA_VISIBLE_DEVICES")
    fll.add_argument("--data-dir", help="a folder written by 'fedmllm prepare': SuperNode i "
                                        "reads its client_i.json")
    fll.add_argument("--config", help="TOML or YAML config file")
    fll.add_argument("--resume", metavar="DIR", help="continue the unfinished run in DIR")
    fll.add_argument("--overwrite", action="store_true",
                     help="replace the run already in output.dir")
    fll.add_argument("--timeout", type=float, default=24 * 3600.0,
                     help="seconds before the run is stopped (default: a day)")
    _overrides(fll)
    fll.set_defaults(func=cmd_flower_local)
    _add_flower_keys(flsub)
    _add_flower_simulation(flsub)


def _device_list(text: str) -> list[str]:
    """``"0,1"`` -> ``["0", "1"]``: the devices of ``--gpus`` (CUDA indices or UUIDs)."""
    devices = [d.strip() for d in text.split(",")]
    if not all(devices):
        raise argparse.ArgumentTypeError(f"{text!r}: a comma-separated list such as 0,1")
    return devices


def _add_flower_keys(flsub) -> None:
    flc = flsub.add_parser(
        "certs", help="a CA and a SuperLink TLS certificate, made offline",
        description="Write ca.crt, ca.key, server.crt and server.key (EC P-256) to OUT: the "
                    "SuperLink serves server.crt; SuperNodes and 'flwr' trust ca.crt.")
    flc.add_argument("--out", required=True, help="output folder")
    flc.add_argument("--host", action="append", required=True,
                     help="an IP address or DNS name the certificate is valid for (repeat)")
    flc.add_argument("--days", type=int, default=365)
    flc.add_argument("--overwrite", action="store_true")
    flc.set_defaults(func=cmd_flower_certs)
    flk = flsub.add_parser(
        "node-key", help="a SuperNode authentication key pair, made offline",
        description="Write OUT/NAME (private, OpenSSH) and OUT/NAME.pub (to register with "
                    "'flwr supernode register').")
    flk.add_argument("--out", required=True, help="output folder")
    flk.add_argument("--name", required=True, help="file name, e.g. site-0")
    flk.add_argument("--overwrite", action="store_true")
    flk.set_defaults(func=cmd_flower_node_key)


def _add_flower_simulation(flsub) -> None:
    fls = flsub.add_parser(
        "simulation-config", help="size the simulated federation of 'flwr run .'",
        description="Run 'flwr federation simulation-config' on the default SuperLink "
                    "connection (flwr starts the local simulation SuperLink if needed): one "
                    "virtual SuperNode per client, fl.num_clients of the configuration unless "
                    "--clients is given, and each ClientApp's Ray resources. The SuperLink "
                    "keeps them in memory until it stops.")
    fls.add_argument("--clients", type=int, help="SuperNodes (default: fl.num_clients)")
    fls.add_argument("--gpus", type=float, help="fraction of a GPU per ClientApp (0.5: two "
                                                "per GPU; flwr's default 0)")
    fls.add_argument("--cpus", type=int, help="CPUs per ClientApp (flwr's default 2)")
    fls.add_argument("--config", help="TOML or YAML config file (for fl.num_clients)")
    _overrides(fls)
    fls.set_defaults(func=cmd_flower_simulation_config)
    flt = flsub.add_parser(
        "stop-local", help="stop the local SuperLink 'flwr run .' left running",
        description="Stop the managed simulation SuperLink of a Flower home and its children "
                    "(flwr starts it on the first 'flwr run' and leaves it running). Its "
                    "database (the runs) stays; the federation's size, kept in its memory, "
                    "goes back to Flower's default of 2: run 'simulation-config' again.")
    flt.add_argument("--flwr-home", help="the Flower home (default: $FLWR_HOME, else ~/.flwr)")
    flt.set_defaults(func=cmd_flower_stop_local)


def _add_bench(sub) -> None:
    b = sub.add_parser(
        "bench", help="run a grid of experiments over seeds and write a report",
        description="Run every cell of a grid file (settings x axes x seeds; see "
                    "benchmarks/grids/) as its own run under OUT/runs/, then write "
                    "OUT/results.csv, OUT/report.md and OUT/report.html (means and 95 %% "
                    "intervals over seeds, ranking, paired comparisons, the radar across "
                    "settings, per-view bars, communication). Ctrl-C keeps finished cells.")
    b.add_argument("grid", help="grid file (TOML)")
    _overrides(b, "key=value",
               "config keys for every cell (e.g. data.data_dir=... model.name=...)")
    b.add_argument("--out", required=True, help="sweep folder")
    b.add_argument("--jobs", type=int, default=1, help="cells run in parallel (default 1)")
    b.add_argument("--threads", type=int, default=None,
                   help="CPU threads per cell (default: cores / jobs)")
    b.add_argument("--resume", action="store_true",
                   help="continue the sweep in OUT: skip finished cells, resume unfinished ones")
    b.add_argument("--isolate", action="store_true",
                   help="run every cell as a fedmllm run process of its own (default: worker "
                        "processes that keep the loaded base model from cell to cell; the "
                        "results are the same bit for bit)")
    b.add_argument("--dry-run", action="store_true",
                   help="check every cell's configuration, list the cells and count the tune "
                        "and report cells; run nothing")
    b.set_defaults(func=cmd_bench)
    rp = sub.add_parser("report", help="rebuild a bench report from its cells",
                        description="Rebuild OUT/results.csv, report.md and report.html of a "
                                    "sweep from its cells' run folders, without running "
                                    "anything.")
    rp.add_argument("folder", help="the --out folder of fedmllm bench")
    rp.add_argument("--publish", metavar="FILE.md",
                    help="also write the report there (e.g. docs/results.md), figures beside "
                         "it in FILE_figures/")
    rp.set_defaults(func=cmd_report)


def _add_model(sub) -> None:
    msub = _group(sub, "model", "the built-in offline model",
                  "Build and inspect the built-in offline model.")
    mb = msub.add_parser("build", help="build (and pre-train) a preset into the cache",
                         description="Build a built-in preset into the cache and print its "
                                     "folder, build statistics and weights' sha256 (the "
                                     "same on any thread or core count).")
    preset = declared("model.preset")
    mb.add_argument("--preset", default=preset.default, choices=preset.choices,
                    help=f"the preset to build (default: {preset.default}, the one "
                         "`fedmllm run` uses by default)")
    mb.add_argument("--no-pretrain", action="store_true", help="random initialisation only")
    mb.set_defaults(func=cmd_model_build)


def build_parser() -> argparse.ArgumentParser:
    """The ``fedmllm`` parser: one small function per command adds its subparser."""
    p = argparse.ArgumentParser(
        prog="fedmllm",
        description="Federated LoRA fine-tuning of vision-language models on clients whose data "
                    "differ in modality.")
    p.add_argument("--version", action="version", version=f"fedmllm {__version__}")
    _add_common_options(p, top=True)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_run, _add_config, _add_prepare, _add_data, _add_eval, _add_plot,
                _add_flower, _add_bench, _add_model):
        add(sub)
    _add_common_options_everywhere(p)
    return p


def _add_common_options(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """``-v/--verbose`` and ``-q/--quiet``, on the top level and on every (sub)command, so
    they may stand anywhere on the command line."""
    default = False if top else argparse.SUPPRESS  # a subcommand keeps a top-level flag
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="log debug information")
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="print only errors and the final result")


def _add_common_options_everywhere(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:  # the subcommands' parsers
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _add_common_options(sub)
                _add_common_options_everywhere(sub)


def main(argv: list[str] | None = None) -> int:
    import os
    import signal

    if os.environ.get("FEDMLLM_BENCH_CELL") and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a bench cell stops on SIGINT
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may stand after an option too (``run --overwrite fl.rounds=3``)
    if extra and hasattr(args, "overrides") and all("=" in x and not x.startswith("-")
                                                    for x in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 0
    if args.verbose and args.quiet:
        parser.error("-v/--verbose and -q/--quiet exclude each other")
    level = logging.DEBUG if args.verbose else logging.ERROR if args.quiet else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except RunStopped as e:
        print(f"fedmllm: error: {e.message}", file=sys.stderr)
        print(f"fedmllm: the run in {e.folder} is unfinished; after fixing the cause, continue "
              f"it with: {e.resume} {e.folder}", file=sys.stderr)
        return 2
    except (ConfigError, ModelError, DataError, OutputError, CheckpointError) as e:
        print(f"fedmllm: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.filename is None:
            raise
        print(f"fedmllm: error: {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedmllm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
