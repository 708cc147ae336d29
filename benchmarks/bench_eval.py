"""The engine's batched evaluation against the old per-window, per-run loop (same backend, same config).

``python benchmarks/bench_eval.py --json`` prints ``loop_s`` (one backend call per window per run),
``batched_s`` (the engine: every run and window in one call), ``loop_over_batched`` and
``runs3_over_runs1`` (engine cost of 3 runs over 1 run). Both sides run in this process, each timed
as the best of ``--repeat`` tries, on 30 validation windows of a real symbol from ../shared.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from compiled_opt.core.backend import Runtime
from compiled_opt.core.data import splits, windows
from compiled_opt.core.evaluate import Evaluator
from compiled_opt.core.randomness import Draws, derive_seeds
from compiled_opt.core.registry import Plugins

from market import load_symbol


def interleaved_best(repeat: int, **fns) -> dict[str, float]:
    """The best time of each function over ``repeat`` rounds, the functions taking turns in every
    round so that load from other processes hits them alike."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbol", default="APP")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: immune to other load on the cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    plugins = Plugins.load()
    aggregators = {n: plugins.aggregators.get(n) for n in plugins.aggregators}
    backend = plugins.backends.get("bootstrap")(Runtime())
    params = {**backend.defaults, "num_samples": 256, "aggregate": "trimmed_mean_10"}
    series = load_symbol(args.symbol)
    rows = splits(len(series), 30, 20, 1).validation
    seeds = tuple(derive_seeds(0, "search", args.runs))
    context = backend.context_length(params)

    def loop() -> None:
        aggregator = aggregators[params["aggregate"]]
        for seed in seeds:
            for row in rows:
                batch = windows(series, range(row, row + 1), context, 1)
                state = backend.encode(batch, params)
                aggregator(backend.sample(state, params, Draws((seed,), batch.target_rows)), dim=2)

    def engine(run_seeds: tuple[int, ...]) -> None:
        Evaluator(backend, aggregators, series, rows, 1)(params, run_seeds)

    with torch.inference_mode():
        t = interleaved_best(args.repeat, loop=loop, batched=lambda: engine(seeds), runs1=lambda: engine(seeds[:1]))
    loop_s, batched_s, runs1_s = t["loop"], t["batched"], t["runs1"]
    result = {
        "backend": "bootstrap",
        "symbol": args.symbol,
        "windows": len(rows),
        "runs": args.runs,
        "num_samples": params["num_samples"],
        "loop_s": loop_s,
        "batched_s": batched_s,
        "loop_over_batched": loop_s / batched_s,
        "runs1_s": runs1_s,
        "runs3_over_runs1": batched_s / runs1_s,
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
