"""The ``fedmllm`` command: parses arguments and configuration, then calls the layers."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from . import __version__
from .config import Config, ConfigError, load_config


def _quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def _console():
    from rich.console import Console

    return Console(highlight=False)


def cmd_run(args) -> int:
    from .runtime import run_experiment

    cfg = load_config(args.config, args.overrides)
    console = _console()
    console.print("[bold]fedmllm run[/bold] — resolved configuration:")
    console.print(cfg.to_yaml().rstrip(), markup=False)
    result = run_experiment(cfg, console=console)
    final = result.final["final"]
    totals = result.final["totals"]
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
                  f"{totals['bytes_downloaded'] / 1e6:.2f} MB, training {totals['train_seconds']:.1f} s;"
                  f" outputs in {result.out_dir}", markup=False)
    return 0


def cmd_config_show(args) -> int:
    cfg = load_config(args.config, args.overrides) if (args.config or args.overrides) else Config()
    print(cfg.to_yaml().rstrip())
    return 0


def cmd_model_build(args) -> int:
    import json

    from .model.tiny import ensure_tiny

    path = ensure_tiny(args.preset, not args.no_pretrain)
    info = json.loads((path / "recipe.json").read_text())
    print(path)
    print(json.dumps(info["stats"], indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fedmllm",
        description="Federated LoRA fine-tuning of vision-language models on clients whose data "
                    "differ in modality.")
    p.add_argument("--version", action="version", version=f"fedmllm {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug information")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="run a federated experiment (default: the built-in demo)",
                       description="Run a federated experiment in the in-process simulator. "
                                   "Override any config key with key=value, e.g. fl.rounds=20.")
    r.add_argument("--config", help="TOML or YAML config file")
    r.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("config", help="inspect configuration",
                       description="Inspect the configuration tree.")
    csub = c.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    cs = csub.add_parser("show", help="print the defaults (or a file + overrides) resolved",
                         description="Print the resolved configuration as YAML.")
    cs.add_argument("--config", help="TOML or YAML config file")
    cs.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    cs.set_defaults(func=cmd_config_show)

    m = sub.add_parser("model", help="the built-in offline model",
                       description="Build and inspect the built-in offline model.")
    msub = m.add_subparsers(dest="model_command", metavar="SUBCOMMAND", required=True)
    mb = msub.add_parser("build", help="build (and pre-train) a preset into the cache",
                         description="Build a built-in preset into the cache and print its "
                                     "folder and build statistics.")
    mb.add_argument("--preset", default="small", choices=["tiny", "small"])
    mb.add_argument("--no-pretrain", action="store_true", help="random initialisation only")
    mb.set_defaults(func=cmd_model_build)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    _quiet_libraries()
    from .data.errors import DataError
    from .model.loading import ModelError

    try:
        return args.func(args)
    except (ConfigError, ModelError, DataError) as e:
        print(f"fedmllm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedmllm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
