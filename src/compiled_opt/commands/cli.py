"""compiled-opt: tune the sampling hyperparameters of stochastic forecasters, per symbol.

Exit codes: 0 ok; 1 a job failed (the others still ran); 2 a usage or input error (nothing written).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import compiled_opt
from compiled_opt.core.errors import UsageError


def _positive(flag: str, minimum: int = 1):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} takes an integer, not {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{flag} must be at least {minimum}, not {value}")
        return value

    return parse


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, like every other compiled-opt error."""

    def error(self, message: str) -> None:
        print(f"error: {self.prog}: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="compiled-opt", description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2].strip())
    parser.add_argument("--version", action="version", version=f"compiled-opt {compiled_opt.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="search every symbol's sampling hyperparameters and store the winners")
    run.add_argument("config", type=Path, help="the TOML config (e.g. compiled_opt.toml)")
    run.add_argument("--symbols", nargs="+", help="only these symbols (overrides data.symbols)")
    run.add_argument("--model", nargs="+", dest="models", help="only these [models.<name>] tables")
    run.add_argument("--trials", type=_positive("--trials"), help="overrides search.trials")
    run.add_argument("--eval-runs", type=_positive("--eval-runs"), help="overrides evaluation.eval_runs")
    run.add_argument("--force", action="store_true", help="store the new config even without improvement")
    run.add_argument(
        "--allow-large",
        action="store_true",
        help="lift the limits on trials, runs, threads and memory (see README: limits)",
    )
    _output_flag(run, "write stored configs to DIR/hyperparams and run logs to DIR/runs (overrides [output])")
    run.add_argument("--executor", help="overrides executor.name (local, ray, ...)")
    run.add_argument(
        "--ray-address", help="overrides executor.options.address (a running Ray cluster; default: start a local Ray)"
    )
    run.add_argument(
        "--fast", action="store_true", help='runtime.mode = "fast": the fastest measured settings on one GPU'
    )
    run.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="RUN_ID",
        help="continue an interrupted run (default: the latest) from its last finished batch",
    )
    _output_flags(run)
    ev = sub.add_parser(
        "evaluate", help="score the stored configs and the models' defaults on any rows (a forward test)"
    )
    ev.add_argument("config", type=Path, help="the TOML config the configs were tuned with")
    rows = ev.add_mutually_exclusive_group()
    rows.add_argument("--last", type=_positive("--last", 2), help="the last N windows of each symbol")
    rows.add_argument("--rows", metavar="START:STOP", help="windows whose target is one of these 0-based data rows")
    rows.add_argument("--since", metavar="DATE", help="windows whose target is on or after DATE (e.g. 2025-06-30)")
    ev.add_argument(
        "--seed", type=_positive("--seed", 0), help="the base seed of the evaluation's runs (default: evaluation.seed)"
    )
    ev.add_argument("--symbols", nargs="+", help="only these symbols")
    ev.add_argument("--model", nargs="+", dest="models", help="only these models")
    ev.add_argument("--json", action="store_true", help="print the results as one JSON object")
    _output_flag(ev)
    fc = sub.add_parser("forecast", help="the next steps of every symbol with its tuned config (for trading code)")
    fc.add_argument("config", type=Path, help="the TOML config the configs were tuned with")
    fc.add_argument("--symbols", nargs="+", help="only these symbols")
    fc.add_argument("--model", help="this model's stored configs (default: best/'s choice among the config's models)")
    fc.add_argument("--out", type=Path, metavar="FILE", help="write the forecasts to FILE (.parquet, .csv or .json)")
    fc.add_argument("--json", action="store_true", help="print the forecasts as one JSON object")
    _output_flag(fc)
    show = sub.add_parser("show", help="a table of the stored configs; the best/ choice marked")
    show.add_argument("config", type=Path, help="the TOML config (its output.directory holds the stored configs)")
    show.add_argument("--model", nargs="+", dest="models", help="only these models")
    show.add_argument("--symbols", nargs="+", help="only these symbols")
    show.add_argument("--json", action="store_true", help="print the stored configs as one JSON object")
    _output_flag(show)
    report = sub.add_parser("report", help="write one self-contained HTML report of a run, with figures")
    report.add_argument("config", type=Path, help="the TOML config (its output.runs holds the run folders)")
    report.add_argument(
        "run_id", nargs="?", default="latest", metavar="RUN_ID|latest", help="the run to report (default: the latest)"
    )
    report.add_argument("--out", type=Path, help="the HTML file (default: report.html in the run's folder)")
    _output_flag(report)
    data = sub.add_parser("data", help="market data files")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    imp = data_sub.add_parser("import", help="convert CSV files (Yahoo, Binance or timestamp,open,...) to Parquet")
    imp.add_argument("files", nargs="+", type=Path)
    imp.add_argument("--out", type=Path, default=Path("data"), help="output directory (default: data)")
    sub.add_parser("plugins", help="list every backend, policy, aggregator and executor and where it came from")
    ckpt = sub.add_parser("checkpoint", help="model checkpoints for trying pipelines without the released weights")
    ckpt_sub = ckpt.add_subparsers(dest="checkpoint_command", required=True)
    rand = ckpt_sub.add_parser("random", help="write a random-initialised checkpoint of a backend's real architecture")
    rand.add_argument("backend", help="toto or kronos (any backend that offers random checkpoints)")
    rand.add_argument("directory", type=Path, help="where to write it")
    rand.add_argument(
        "--size",
        choices=("tiny", "small", "base"),
        default="tiny",
        help="tiny: seconds on a CPU; base: the released model's architecture (default: tiny)",
    )
    rand.add_argument("--seed", type=_positive("--seed", 0), default=0, help="the initialisation's seed (default: 0)")
    return parser


def _output_flag(
    parser: argparse.ArgumentParser, text: str = "the stored configs and run logs of a run made with --output DIR"
) -> None:
    parser.add_argument("--output", type=Path, metavar="DIR", help=text)


def _output_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-q",
        "--quiet",
        action="store_const",
        const="warning",
        dest="log_level",
        help="print only failures and the summary",
    )
    group.add_argument(
        "--debug",
        action="store_const",
        const="debug",
        dest="log_level",
        help="print every batch, and failure tracebacks on the console too",
    )
    group.add_argument("--log-level", choices=("debug", "info", "warning"), dest="log_level")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.set_defaults(log_level="info")


def _output(args: argparse.Namespace) -> dict:
    """``--output DIR``: stored configs in DIR/hyperparams, run logs in DIR/runs."""
    from compiled_opt.core.config import output_overrides

    return output_overrides(args.output)


def _overrides(args: argparse.Namespace) -> dict:
    from compiled_opt.core.config import Override

    out = _output(args)
    flagged = {
        "data.symbols": ("--symbols", args.symbols),
        "search.trials": ("--trials", args.trials),
        "evaluation.eval_runs": ("--eval-runs", args.eval_runs),
        "executor.name": ("--executor", args.executor),
        "executor.options.address": ("--ray-address", args.ray_address),
        "runtime.mode": ("--fast", "fast" if args.fast else None),
    }
    for key, (flag, value) in flagged.items():
        if value is not None:
            out[key] = Override(value, flag)
    if args.models:
        out["models"] = Override(args.models, "--model")
    if args.force:
        out["force"] = True
    return out


def _run(args: argparse.Namespace) -> int:
    from compiled_opt.core.config import load_config
    from compiled_opt.run.console import Console
    from compiled_opt.run.driver import Run
    from compiled_opt.store.records import JobId

    console = Console(level=args.log_level, json_summary=args.json)
    config = load_config(args.config, _overrides(args))
    results = Run(
        config, console=console, resume=args.resume, debug=args.log_level == "debug", allow_large=args.allow_large
    ).execute()
    return 1 if any(isinstance(r, JobId) for r in results) else 0  # a failed job's result is its id


def _evaluate(args: argparse.Namespace) -> int:
    from compiled_opt.commands.evaluate import Selection, forward_test, print_forward
    from compiled_opt.core.config import Override, load_config

    overrides = _output(args)
    if args.symbols:
        overrides["data.symbols"] = Override(args.symbols, "--symbols")
    if args.models:
        overrides["models"] = Override(args.models, "--model")
    pick = Selection(last=args.last, rows=args.rows, since=args.since)
    results, seeds = forward_test(load_config(args.config, overrides), pick=pick, seed=args.seed)
    print_forward(results, seeds, as_json=args.json)
    return 0


def _forecast(args: argparse.Namespace) -> int:
    from compiled_opt.commands.forecast import forecast, print_forecasts, write
    from compiled_opt.core.config import Override, load_config

    overrides = _output(args) | ({"data.symbols": Override(args.symbols, "--symbols")} if args.symbols else {})
    rows = forecast(load_config(args.config, overrides), args.model)
    if args.out is not None:
        print(f"forecasts: {write(rows, args.out)}")
    else:
        print_forecasts(rows, as_json=args.json)
    return 0


def _show(args: argparse.Namespace) -> int:
    from compiled_opt.commands.show import show
    from compiled_opt.core.config import load_config
    from compiled_opt.store.stores import ConfigStore

    config = load_config(args.config, _output(args))
    return show(ConfigStore(config.output.directory), list(config.models), args.models, args.symbols, args.json)


def _report(args: argparse.Namespace) -> int:
    from compiled_opt.commands.report.html import write_report
    from compiled_opt.core.config import load_config

    print(f"report: {write_report(load_config(args.config, _output(args)), args.run_id, args.out)}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from compiled_opt.commands.importer import import_csvs

    for path, out in zip(args.files, import_csvs(args.files, args.out), strict=True):
        print(f"{path} -> {out}")
    return 0


def _plugins(args: argparse.Namespace) -> int:
    from compiled_opt.core.registry import KINDS, Plugins

    plugins = Plugins.load()
    for kind in KINDS:
        registry = getattr(plugins, kind)
        print(f"{kind}:")
        for name in registry:
            benchmarks = getattr(registry.get(name), "for_benchmarks", False)
            label = " (for benchmarks: forecasts nothing)" if benchmarks else ""
            print(f"  {name:<24} {registry.source(name)}{label}")
    return 0


def _checkpoint(args: argparse.Namespace) -> int:
    from compiled_opt.commands.checkpoint import options_toml, write_random

    options = write_random(args.backend, args.directory, args.size, args.seed)
    print(
        f"wrote a random-initialised {args.backend} checkpoint ({args.size}, seed {args.seed}) to {args.directory};"
        f" use it in [models.<name>] with: {options_toml(options)}"
    )
    return 0


HANDLERS = {
    "run": _run,
    "evaluate": _evaluate,
    "forecast": _forecast,
    "show": _show,
    "report": _report,
    "data": _import,
    "plugins": _plugins,
    "checkpoint": _checkpoint,
}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad flags, 0 on --help / --version
        return int(exc.code or 0)
    try:
        return HANDLERS[args.command](args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


# OpenMP threads that spin while they wait for work take the cores a shared machine's other processes need
# (and each other's): the default run took 4-9x longer with spinning threads on 2 loaded cores
# (benchmarks/bench_threads.py). Set before torch loads OpenMP; a user's own setting wins.
QUIET_OPENMP = {"OMP_WAIT_POLICY": "PASSIVE"}


def console() -> None:
    for key, value in QUIET_OPENMP.items():
        os.environ.setdefault(key, value)
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `compiled-opt plugins | head`: the reader left, nothing to report
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 0
    sys.exit(code)


if __name__ == "__main__":
    console()
