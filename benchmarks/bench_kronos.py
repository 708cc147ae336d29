"""The kronos backend against the old per-window loop, on the same random-initialised model.

``python benchmarks/bench_kronos.py --json`` prints

- ``loop_s``: the old pattern, one ``KronosPredictor.predict`` per window per run (sample_count
  ``--samples``). On CPU it is timed on ``--loop-windows`` x ``--loop-runs`` calls and scaled
  linearly to all windows and runs (``loop_windows_timed``, ``loop_runs_timed``, ``loop_scaled``);
- ``batched_s``: the engine's ``Evaluator`` with the kronos backend, cold (encode + sample) on the
  30 validation windows of a real symbol from ../shared, ``--runs`` runs; ``loop_over_batched``;
- ``trial_s_cached``: a second candidate changing only temperature and top_p (no encode);
  ``runs3_over_runs1``: its cost with ``--runs`` runs over 1 run.

Models are random-initialised checkpoints from ``compiled-opt checkpoint random kronos`` (the same
code): ``--size small`` is Kronos-small's width (d 512, 8 heads, ff 1024) with ``--layers`` layers
(2 by default: honest for 2 CPU cores); ``--size base`` is Kronos-base (d 832, 12 layers, 16 heads,
ff 2048), for ``--device cuda``; both with Kronos-Tokenizer-base's size (``--size tiny``: the test size).
Both sides warm up once (untimed) on other windows; ``warmup_s`` includes any compilation.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from compiled_opt.core.backend import FEATURES, Runtime
from compiled_opt.core.data import splits, windows
from compiled_opt.core.evaluate import Evaluator
from compiled_opt.core.randomness import derive_seeds
from compiled_opt.core.registry import Plugins
from compiled_opt.plugins.backends.kronos import KronosBackend, import_kronos
from compiled_opt.plugins.backends.kronos.checkpoint import MODELS, write_random

from market import load_symbol


def predictor_frame(batch, i: int) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """Window ``i`` as the old script handed it to ``KronosPredictor.predict`` (no amount column)."""
    df = pd.DataFrame(batch.context[i, :, :5].numpy(), columns=FEATURES[:5])
    stamps = pd.Series(pd.to_datetime(batch.context_time[i].numpy(), unit="s"))
    return df, stamps, pd.Series(pd.to_datetime(batch.target_time[i].numpy(), unit="s"))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(MODELS), default="small")
    parser.add_argument("--layers", type=int, help="transformer layers (default: 2 for small, 12 for base)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", default="none", choices=("none", "default", "reduce-overhead", "max-autotune"))
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--symbol", default="APP")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=160)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--loop-windows", type=int, help="windows the loop is timed on (default: 2 on cpu, 5 on cuda)")
    parser.add_argument("--loop-runs", type=int, default=1, help="runs the loop is timed on")
    parser.add_argument("--threads", type=int, default=1, help="CPU torch threads (1: least disturbed by other load)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    layers = args.layers or (2 if args.size == "small" else None)
    loop_windows = args.loop_windows or (5 if args.device.startswith("cuda") else 2)

    plugins = Plugins.load()
    aggregators = {n: plugins.aggregators.get(n) for n in plugins.aggregators}
    runtime = Runtime(device=args.device, compile=args.compile, dtype=getattr(torch, args.dtype))
    params = {
        **KronosBackend.defaults,
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 0,
        "sample_count": args.samples,
        "max_context": args.context,
        "clip": 2.0,
    }
    second = {**params, "temperature": 0.25, "top_p": 0.8}
    series = load_symbol(args.symbol)
    with tempfile.TemporaryDirectory() as tmp:
        backend = KronosBackend(runtime, **write_random(Path(tmp), args.size, layers=layers))
    split = splits(len(series), 30, 20, 1)
    seeds = tuple(derive_seeds(0, "search", args.runs))
    predictor = import_kronos().KronosPredictor(
        backend.model, backend.tokenizer, device=args.device, max_context=args.context, clip=params["clip"]
    )

    def predict(batch, i: int) -> None:
        df, x_time, y_time = predictor_frame(batch, i)
        predictor.predict(
            df,
            x_time,
            y_time,
            pred_len=1,
            T=params["temperature"],
            top_k=params["top_k"],
            top_p=params["top_p"],
            sample_count=args.samples,
            verbose=False,
        )

    start = time.perf_counter()
    predict(windows(series, split.test, args.context, 1), 0)
    Evaluator(backend, aggregators, series, split.test, 1)(params, seeds)
    sync(args.device)
    warmup_s = time.perf_counter() - start

    batch = windows(series, split.validation, args.context, 1)
    start = time.perf_counter()
    for _ in range(args.loop_runs):
        for i in range(loop_windows):
            predict(batch, i)
    sync(args.device)
    loop_s = (time.perf_counter() - start) * (len(batch) * args.runs) / (loop_windows * args.loop_runs)

    evaluator = Evaluator(backend, aggregators, series, split.validation, 1)
    start = time.perf_counter()
    evaluator(params, seeds)
    sync(args.device)
    batched_s = time.perf_counter() - start
    trial: dict[int, float] = {}
    for _ in range(3):  # best of 3, 1 and all runs taking turns
        for runs in (len(seeds), 1):
            start = time.perf_counter()
            evaluator(second, seeds[:runs])
            sync(args.device)
            trial[runs] = min(trial.get(runs, float("inf")), time.perf_counter() - start)
    trial_s_cached = trial[len(seeds)]

    result = {
        "backend": "kronos",
        "size": args.size,
        "layers": layers or MODELS[args.size]["n_layers"],
        "device": args.device,
        "compile": args.compile,
        "dtype": args.dtype,
        "symbol": args.symbol,
        "windows": len(batch),
        "runs": args.runs,
        "sample_count": args.samples,
        "max_context": args.context,
        "loop_s": loop_s,
        "loop_windows_timed": loop_windows,
        "loop_runs_timed": args.loop_runs,
        "loop_scaled": loop_windows * args.loop_runs < len(batch) * args.runs,
        "batched_s": batched_s,
        "loop_over_batched": loop_s / batched_s,
        "trial_s_cached": trial_s_cached,
        "runs3_over_runs1": trial_s_cached / trial[1],
        "warmup_s": warmup_s,
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
