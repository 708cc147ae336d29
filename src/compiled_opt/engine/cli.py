"""``compiled-opt``: run a search, import CSV data, list plugins. Exit codes: 0 ok, 1 failure, 2 usage/input."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from compiled_opt.engine.errors import UsageError
from compiled_opt.engine.plugins import KINDS, Plugins


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compiled-opt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="search every symbol's sampling hyperparameters and store the winners")
    run.add_argument("config", type=Path, help="the TOML config (e.g. compiled_opt.toml)")
    run.add_argument("--symbols", nargs="+", help="only these symbols (overrides data.symbols)")
    run.add_argument("--model", nargs="+", dest="models", help="only these [models.<name>] tables")
    run.add_argument("--trials", type=int, help="overrides search.trials")
    run.add_argument("--eval-runs", type=int, help="overrides evaluation.eval_runs")
    run.add_argument("--force", action="store_true", help="store the new config even without improvement")
    run.add_argument("--output", type=Path, help="overrides output.directory")
    data = sub.add_parser("data", help="market data files")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    imp = data_sub.add_parser("import", help="convert CSV files (Yahoo, Binance or timestamp,open,...) to Parquet")
    imp.add_argument("files", nargs="+", type=Path)
    imp.add_argument("--out", type=Path, default=Path("data"), help="output directory (default: data)")
    sub.add_parser("plugins", help="list every backend, acceptance policy and aggregator and where it came from")
    return parser


def _overrides(args: argparse.Namespace) -> dict:
    pairs = {"data.symbols": args.symbols, "search.trials": args.trials, "evaluation.eval_runs": args.eval_runs,
             "output.directory": args.output and str(args.output.resolve()), "models": args.models,
             "force": args.force}
    return {k: v for k, v in pairs.items() if v not in (None, False)}


def _run(args: argparse.Namespace) -> int:
    from compiled_opt.engine.config import load_config
    from compiled_opt.engine.runner import Run

    outcomes = Run(load_config(args.config, _overrides(args))).execute()
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def _import(args: argparse.Namespace) -> int:
    from compiled_opt.engine.importer import import_csv

    for path in args.files:
        print(f"{path} -> {import_csv(path, args.out)}")
    return 0


def _plugins(args: argparse.Namespace) -> int:
    plugins = Plugins.load()
    for kind in KINDS:
        registry = getattr(plugins, kind)
        print(f"{kind}:")
        for name in registry:
            print(f"  {name:<24} {registry.source(name)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = {"run": _run, "data": _import, "plugins": _plugins}[args.command]
    try:
        return handler(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def console() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console()
