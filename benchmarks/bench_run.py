"""The whole ``compiled-opt run``, timed and split: where a run's wall time goes.

``python benchmarks/bench_run.py --json`` runs, for each backend asked (``--backend``, repeatable),
``compiled_opt.run.driver.Run`` on a generated config: ``--symbols`` real symbols from
../shared/data/market x ``--trials`` trials x ``--runs`` evaluation runs, the engine's defaults
otherwise (optimizer, acceptance, exhaustive scoring of a small discrete space). Default backends:
``bootstrap`` and ``zero`` on the CPU, plus ``toto`` and ``kronos`` with ``--device cuda``.

- ``bootstrap``: the weight-free backend;
- ``zero``: the ``latency`` backend with no latency (encode and sample return tensors already there), so the run's time
  is the engine's own: ``per_trial_ms`` is the engine overhead per trial;
- ``toto`` / ``kronos``: random-initialised checkpoints of ``--size`` (``compiled-opt checkpoint
  random``; ``base`` is the released architecture).

Each run happens in a fresh child process, so start-up (imports, checks, model load) is what a user
pays. Wall time is split by wall-clock wrappers around the code that does each part; a call inside
another wrapped call counts only for the outer one:

- ``startup``: from the child's first line (before importing compiled_opt) to the first ``encode``, split
  in ``startup_split_s``: ``imports`` (compiled_opt's modules, torch), ``plugins`` (loading the plugins),
  ``config`` (reading it), ``run_checks`` (data and stored configs read and checked; when a model is
  searched with Nevergrad, the optimizer's name checked against its registry, importing Nevergrad) and
  ``to_first_encode`` (the executor and worker start, models load, the first job begins);
- ``model``: the backend's ``encode``; ``sampling``: its ``sample`` and ``exact``; ``aggregation``:
  the aggregators applied to the samples, one by one or all of a cached draw's count at once
  (``aggregate_all``) (on a GPU the model and sampling wrappers synchronise the device first and
  last, so asynchronous work lands where it is launched; that costs a little);
- ``optimizer``: the search's ``ask`` and ``tell`` (Nevergrad, or the grid of an exhaustive search);
- ``store``: the driver's trial log, stored configs, run state and ``best/`` updates;
- ``engine``: the rest after start-up (evaluation and search bookkeeping, acceptance, console).

Per backend it also reports ``calls`` (of each category's wrapped functions, outermost or not),
``aggregation_share`` (aggregation over the wall time), ``encodes`` and
``encodes_per_trial`` (every ``encode`` of the run, acceptance and test windows included, over the
trials logged) and ``per_trial_split_ms`` (each category after start-up, per trial).

``--legacy`` also runs each backend on the engine's code path before issue 17 (``legacy_code_path``:
aggregation point by point, caches per evaluator, the gate and test windows through the sample cache,
Kronos' continuous clip), in the first ``--mode`` only, and reports ``speedup_vs_legacy``, that run's wall time
over this one's (and ``speedup_vs_legacy_after_startup`` without the start-up, which is the same code in
both and the noisiest part on a shared machine), and its ``legacy`` split and encodes.

``seed_loop_s`` estimates the seed script's per-window loop for the same work: one model call per
window per run per trial for every symbol, plus the test windows and a model load per symbol. It is
scaled from ``seed_loop_calls_timed`` calls timed in the same child (``seed_loop_scaled``: true);
``zero`` has no seed equivalent. ``--mode fast`` runs with ``runtime.mode = "fast"`` (``--fast``).
"""

from __future__ import annotations

import time

T0 = time.perf_counter()  # the child's first line: start-up is measured from here

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
MARKET = HERE.parents[1] / "shared" / "data" / "market"
CATEGORIES = ("model", "sampling", "aggregation", "optimizer", "store")
VALIDATION, TEST = 30, 20
BACKENDS = {"zero": "latency"}  # ``zero``: the latency backend at no latency
ZERO = "options = { encode_ms = 0, sample_ms = 0 }"


# --- the parent: data, checkpoints, configs, one child per backend ------------------------------------------


def prepare(directory: Path, symbols: int) -> list[str]:
    """``symbols`` real symbols (alphabetically) converted to Parquet in ``directory / "data"``."""
    from compiled_opt.commands.importer import import_csvs

    chosen = sorted(MARKET.glob("*.csv"))[:symbols]
    if len(chosen) < symbols:
        raise SystemExit(f"--symbols {symbols}: ../shared/data/market has only {len(chosen)}")
    import_csvs(chosen, directory / "data")
    return [p.stem for p in chosen]


def config_text(
    directory: Path, symbols: list[str], backend: str, options: dict, args: argparse.Namespace, mode: str
) -> str:
    from compiled_opt.commands.checkpoint import options_toml

    device = "cpu" if args.device == "cpu" else "cuda"
    return f"""
[data]
directory = "{directory / "data"}"
symbols = {json.dumps(symbols)}
{f"val_window = {args.windows}" if args.windows else ""}
[evaluation]
eval_runs = {args.runs}
seed = 0
[search]
trials = {args.trials}
seed = 0
[output]
directory = "{directory / mode / backend / "hyperparams"}"
runs = "{directory / mode / backend / "runs"}"
[runtime]
device = "{device}"
mode = "{mode}"
threads = {args.threads}
[models.{backend}]
backend = "{BACKENDS.get(backend, backend)}"
{ZERO if backend == "zero" else options_toml(options) if options else ""}
"""


def run_child(config: Path, backend: str, args: argparse.Namespace, legacy: bool = False) -> dict:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        str(config),
        "--backend",
        backend,
        "--device",
        args.device,
        "--loop-calls",
        str(args.loop_calls),
        *(["--legacy"] if legacy else []),
    ]
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"bench_run child for {backend} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def parent(args: argparse.Namespace) -> dict:
    from compiled_opt.commands.checkpoint import write_random

    backends = args.backend or (["bootstrap", "zero"] + (["toto", "kronos"] if args.device != "cpu" else []))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        symbols = prepare(directory, args.symbols)
        for backend in backends:
            options = (
                {}
                if backend in ("bootstrap", "zero")
                else write_random(backend, directory / "checkpoints" / backend, args.size)
            )
            for mode in args.mode:
                config = directory / f"{backend}-{mode}.toml"
                config.write_text(config_text(directory, symbols, backend, options, args, mode))
                result = run_child(config, backend, args)
                result.update(
                    size=args.size if options else None, symbols=len(symbols), trials=args.trials, runs=args.runs
                )
                if args.legacy and mode == args.mode[0]:
                    shutil.rmtree(directory / mode / backend)  # the legacy run starts from an empty store too
                    old = run_child(config, backend, args, legacy=True)
                    result["legacy"] = {
                        k: old[k]
                        for k in (
                            "wall_s",
                            "split_s",
                            "aggregation_share",
                            "per_trial_ms",
                            "encodes",
                            "encodes_per_trial",
                            "trials_scored",
                        )
                    }
                    result["speedup_vs_legacy"] = old["wall_s"] / result["wall_s"]
                    after = [r["wall_s"] - r["split_s"]["startup"] for r in (old, result)]
                    result["speedup_vs_legacy_after_startup"] = after[0] / after[1]
                results[backend if mode == args.mode[0] else f"{backend}_{mode}"] = result
    return results


# --- the child: one timed run -------------------------------------------------------------------------------


class Clock:
    """Wall-clock totals per category, counting only the outermost wrapped call, from ``start`` on."""

    def __init__(self, sync):
        self.totals = dict.fromkeys(CATEGORIES, 0.0)
        self.calls = dict.fromkeys(CATEGORIES, 0)
        self.active = False
        self.first_encode: float | None = None
        self.sync = sync

    def wrap(self, owner: type, name: str, category: str, synced: bool = False) -> None:
        original = getattr(owner, name)
        clock = self

        def timed(*args, **kwargs):
            if category == "model" and clock.first_encode is None:
                clock.first_encode = time.perf_counter()
            clock.calls[category] += 1
            if clock.active or clock.first_encode is None:
                return original(*args, **kwargs)
            clock.active = True
            if synced:
                clock.sync()
            start = time.perf_counter()
            try:
                out = original(*args, **kwargs)
                if synced:
                    clock.sync()
                return out
            finally:
                clock.totals[category] += time.perf_counter() - start
                clock.active = False

        setattr(owner, name, timed)


def legacy_code_path() -> None:
    """The engine before issue 17, for ``--legacy``: each point of a cached draw applies its aggregator to its
    own slice of the samples (sorting it) instead of looking it up in its count's table; every evaluator
    has caches of its own (no reuse between the pooled stage and a symbol's search); the pooled gate and the
    test windows go through the sample cache; Kronos searches a continuous clip."""
    from compiled_opt.core.evaluate import CACHE_BYTES, SAMPLE_CACHE_BYTES, BoundedCache, CachedDraw, Caches, Evaluator
    from compiled_opt.plugins.backends.kronos import KronosBackend
    from compiled_opt.tuning.worker import Worker

    CachedDraw.errors = lambda self, count, name, aggregator, batch: self.errors_of(count, aggregator, batch)
    shared = Evaluator.__init__

    def own_caches(self, *args, **kwargs):
        shared(self, *args, **kwargs)
        self.caches = Caches(BoundedCache(CACHE_BYTES), BoundedCache(SAMPLE_CACHE_BYTES))

    Evaluator.__init__ = own_caches
    memos = {}

    def one_per_job(self, job, which, sample_cache):  # the gate scored through the search's own memo
        key = (job.job_id, which)
        if key not in memos:
            memos[key] = self.evaluator(job.model, job.series, getattr(job, which), job.horizon, job.metric)
        return memos[key]

    Worker._evaluator = one_per_job
    KronosBackend.default_space = {**KronosBackend.default_space, "clip": {"float": [1.0, 3.0]}}


def seed_loop(name: str, spec, runtime, calls: int, symbols: list, trials: int, runs: int) -> dict:
    """The seed script's loop for the same work, scaled from ``calls`` timed model calls on one symbol."""
    from compiled_opt.core.data import splits
    from compiled_opt.core.registry import Plugins

    cls = Plugins.load().backends.get(name)
    start = time.perf_counter()
    backend = cls(runtime, **spec.options)
    load_s = time.perf_counter() - start
    rows = splits(len(symbols[0]), VALIDATION, TEST, 1).validation
    call = _seed_call(name, backend, symbols[0], dict(spec.defaults))
    call(rows[0])  # warm-up
    start = time.perf_counter()
    for i in range(calls):
        call(rows[i % len(rows)])
    if runtime.device != "cpu":
        import torch

        torch.cuda.synchronize()
    per_call = (time.perf_counter() - start) / calls
    calls_needed = len(symbols) * runs * (trials * VALIDATION + TEST)
    return {
        "seed_loop_s": per_call * calls_needed + load_s * len(symbols),
        "seed_loop_calls_timed": calls,
        "seed_loop_call_s": per_call,
        "seed_loop_model_load_s": load_s,
        "seed_loop_scaled": True,
    }


def _seed_call(name: str, backend, series, params):
    """One model call of the seed script: its own forecast call on the one window whose target is ``row``,
    with the model's default config (Toto: 256 samples in batches of 64)."""
    import torch

    from compiled_opt.core.data import windows

    def window(row: int):
        return windows(series, range(row, row + 1), backend.context_length(params), 1)

    sys.path.insert(0, str(HERE))
    if name == "toto":
        from bench_toto import old_loop

        return lambda row: old_loop(backend, window(row), (row,), params["aggregate"])
    if name == "kronos":
        from bench_kronos import predictor_frame

        from compiled_opt.plugins.backends.kronos import import_kronos

        predictor = import_kronos().KronosPredictor(
            backend.model,
            backend.tokenizer,
            device=backend.runtime.device,
            max_context=int(params["max_context"]),
            clip=params["clip"],
        )

        def predict(row: int) -> None:
            predictor.predict(
                *predictor_frame(window(row), 0),
                pred_len=1,
                T=params["temperature"],
                top_k=params["top_k"],
                top_p=params["top_p"],
                sample_count=params["sample_count"],
                verbose=False,
            )

        return predict
    from compiled_opt.core.aggregate import builtin_aggregators
    from compiled_opt.core.randomness import Draws

    aggregator = {a.name: a for a in builtin_aggregators()}[params["aggregate"]]

    def once(row: int) -> None:
        one = window(row)
        with torch.inference_mode():
            aggregator(backend.sample(backend.encode(one, params), params, Draws((row,), one.window_ids)), dim=2)

    return once


def child(args: argparse.Namespace) -> dict:
    import torch

    from compiled_opt.core import evaluate, registry
    from compiled_opt.core.aggregate import Aggregator
    from compiled_opt.core.config import load_config
    from compiled_opt.run.console import Console
    from compiled_opt.run.driver import Run
    from compiled_opt.run.fast import compiles
    from compiled_opt.store.records import JobId
    from compiled_opt.store.stores import read_trials
    from compiled_opt.tuning import search

    marks = {"imports": time.perf_counter()}
    name = args.backend[0]
    cuda = args.device != "cpu"
    clock = Clock(torch.cuda.synchronize if cuda else (lambda: None))
    cls = registry.Plugins.load().backends.get(BACKENDS.get(name, name))
    clock.wrap(cls, "encode", "model", synced=cuda)
    clock.wrap(cls, "sample", "sampling", synced=cuda)
    clock.wrap(cls, "exact", "sampling", synced=cuda)
    if args.legacy:
        legacy_code_path()
    clock.wrap(Aggregator, "__call__", "aggregation")
    clock.wrap(evaluate, "aggregate_all", "aggregation")
    for owner in (search._Optimizer, search._Grid):
        clock.wrap(owner, "ask", "optimizer")
        clock.wrap(owner, "tell", "optimizer")
    for method in ("_on_batch", "_on_done", "_commit"):
        clock.wrap(Run, method, "store")

    marks["plugins"] = time.perf_counter()
    config = load_config(args.child)
    marks["config"] = time.perf_counter()
    run = Run(config, console=Console(stream=sys.stderr, level="warning"))
    marks["run_checks"] = time.perf_counter()
    outcomes = run.execute()
    end = time.perf_counter()
    rows = read_trials(run.run_dir.path)
    searched = end - clock.first_encode
    split = {"startup": clock.first_encode - T0, **clock.totals}
    split["engine"] = searched - sum(clock.totals.values())
    stamps = [("start", T0), *marks.items(), ("to_first_encode", clock.first_encode)]
    spec = next(iter(run.plan.models.values()))
    result = {
        "backend": name,
        "device": args.device,
        "mode": config.runtime.mode,
        "torch_threads": torch.get_num_threads(),
        "failed_jobs": sum(isinstance(o, JobId) for o in outcomes),
        "trials_scored": len(rows),
        "trials_cached": sum(r.cached for r in rows),
        "wall_s": end - T0,
        "split_s": split,
        "per_trial_ms": 1e3 * searched / max(len(rows), 1),
        "compiles": compiles(),
        "startup_split_s": {k: t - stamps[i][1] for i, (k, t) in enumerate(stamps[1:])},
        "calls": dict(clock.calls),
        "aggregation_share": split["aggregation"] / (end - T0),
        "encodes": clock.calls["model"],
        "encodes_per_trial": clock.calls["model"] / max(len(rows), 1),
        "per_trial_split_ms": {k: 1e3 * v / max(len(rows), 1) for k, v in split.items() if k != "startup"},
    }
    if name != "zero" and not args.legacy:
        from compiled_opt.tuning.models import resolve_runtime

        runtime = resolve_runtime(config.runtime, "bench_run")
        result |= seed_loop(
            name, spec, runtime, args.loop_calls, run.plan.series, config.search.trials, config.evaluation.eval_runs
        )
        result["seed_loop_over_run"] = result["seed_loop_s"] / result["wall_s"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", action="append", choices=("bootstrap", "zero", "toto", "kronos"))
    parser.add_argument("--symbols", type=int, default=4)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--runs", type=int, default=3, help="evaluation runs per config")
    parser.add_argument("--windows", type=int, help="validation windows (data.val_window; default: the engine's)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--size", default="base", choices=("tiny", "small", "base"), help="toto / kronos checkpoints")
    parser.add_argument(
        "--mode",
        action="append",
        choices=("default", "fast"),
        help="runtime.mode; repeat to compare (default: default)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: least disturbed by other load)")
    parser.add_argument("--loop-calls", type=int, default=3, help="seed-loop model calls timed (then scaled)")
    parser.add_argument(
        "--legacy", action="store_true", help="also run the aggregation before issue 17 and report speedup_vs_legacy"
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    args.mode = args.mode or ["default"]
    result = parent(args)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
