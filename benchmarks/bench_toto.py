"""Toto: the old per-window ``TotoForecaster.forecast`` loop against the toto backend's one forward.

``python benchmarks/bench_toto.py --json`` prints ``loop_s`` (``TotoForecaster.forecast`` per window
per run, num_samples 256, samples_per_batch 64: the old script's pattern), ``batched_s`` (the toto
backend through the Evaluator, cold: encode + sample for the same 30 windows and 3 runs),
``loop_over_batched``, ``trial_s_cached`` (a second candidate differing only in aggregate and
num_samples, its encode cached; ``runs3_over_runs1``: its cost with 3 runs over 1 run),
``trial_s_exact`` / ``trial_s_exact_winsorized`` (``sampling = "exact"``, trimmed_mean_10 and
winsorized_mean_10, each the first on its mixture: later ones are remembered) against
``trial_s_cached`` / ``trial_s_cached_winsorized`` (the same aggregates from 512 samples), with the
forward passes each side ran and each side's MAE (same distribution, other random numbers: they
should agree).

The model is a random-initialised Toto written by ``compiled-opt checkpoint random toto`` and loaded
through the backend's checkpoint loader: ``--size small`` (4 layers, width 256, for CPUs) or
``--size base`` (Toto-Open-Base-1.0's architecture, 151M parameters, e.g. ``--size base --device
cuda``). Windows come from a real symbol in ../shared.
``--dtype`` and ``--compile`` apply to the backend; the loop always runs eager float32, as the old
script did. The loop runs once; the backend's timings are the best of ``--repeat`` tries.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from compiled_opt.core.aggregate import builtin_aggregators
from compiled_opt.core.backend import FEATURES, Runtime, WindowBatch
from compiled_opt.core.data import splits, windows
from compiled_opt.core.evaluate import Evaluator
from compiled_opt.core.randomness import derive_seeds
from compiled_opt.plugins.backends.toto import TotoBackend, toto_class
from compiled_opt.plugins.backends.toto.checkpoint import SIZES, write_random

from market import load_symbol

toto_class()  # toto-ts's own modules below, imported as the backend imports them
from toto.data.util.dataset import MaskedTimeseries  # noqa: E402
from toto.inference.forecaster import TotoForecaster  # noqa: E402

NUM_SAMPLES, SAMPLES_PER_BATCH, CONTEXT = 256, 64, 512


def timed(fn, device: str) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def old_loop(backend: TotoBackend, batch: WindowBatch, seeds: tuple[int, ...], aggregate: str) -> torch.Tensor:
    """The old pattern: ``TotoForecaster.forecast`` for one window at a time, run after run (eager float32)."""
    forecaster = TotoForecaster(backend.model)
    aggregator = {a.name: a for a in builtin_aggregators()}[aggregate]
    runtime = backend.runtime
    close = batch.context[:, None, :, FEATURES.index("close")].float()
    points = torch.empty(len(seeds), len(batch), dtype=torch.float64)
    for r, seed in enumerate(seeds):
        torch.manual_seed(seed)
        for w in range(len(batch)):
            series = close[w : w + 1].to(runtime.device)
            inputs = MaskedTimeseries(
                series=series,
                padding_mask=torch.ones_like(series, dtype=torch.bool),
                id_mask=torch.zeros_like(series, dtype=torch.int),
                timestamp_seconds=batch.context_time[w : w + 1, None].to(runtime.device),
                time_interval_seconds=torch.full((1, 1), 86400, device=runtime.device),
            )
            forecast = forecaster.forecast(inputs, 1, num_samples=NUM_SAMPLES, samples_per_batch=SAMPLES_PER_BATCH)
            samples = forecast.samples
            points[r, w] = aggregator(samples[0, 0].to("cpu", torch.float64), dim=-1)[0]
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="the backend's dtype (the loop stays float32, as the old script ran)",
    )
    parser.add_argument("--compile", default="none", help="the backend's torch.compile mode (the loop stays eager)")
    parser.add_argument("--symbol", default="APP")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="CPU torch threads (1: least disturbed by other load)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    runtime = Runtime(device=args.device, compile=args.compile, dtype=getattr(torch, args.dtype))

    series = load_symbol(args.symbol)
    with tempfile.TemporaryDirectory() as tmp:
        backend = TotoBackend(runtime, **write_random(Path(tmp) / "toto", args.size))
    parameters = sum(p.numel() for p in backend.model.parameters())
    forwards = []
    backend.model.transformer.register_forward_hook(lambda *_: forwards.append(1))

    parts = splits(len(series), 30, 20, 1)
    seeds = tuple(derive_seeds(0, "search", args.runs))
    aggregators = {a.name: a for a in builtin_aggregators()}
    params = {**TotoBackend.defaults, "num_samples": NUM_SAMPLES, "context_length": CONTEXT, "aggregate": "median"}
    cached = {**params, "num_samples": 512, "aggregate": "trimmed_mean_10"}
    cached_winsorized = {**cached, "aggregate": "winsorized_mean_10"}
    exact = {**cached, "sampling": "exact"}
    exact_winsorized = {**cached_winsorized, "sampling": "exact"}
    batch = windows(series, parts.validation, CONTEXT, 1)

    with torch.inference_mode():
        old_loop(backend, windows(series, parts.test[:1], CONTEXT, 1), seeds[:1], "median")  # warm-up
        Evaluator(backend, aggregators, series, parts.validation, 1)(params, seeds)  # warm-up (and compile)
        forwards.clear()
        loop_s, loop_points = timed(lambda: old_loop(backend, batch, seeds, "median"), args.device)
        loop_forwards = len(forwards)

        times: dict[str, list[float]] = {}
        for _ in range(args.repeat):  # every try on a fresh Evaluator: encode, and each exact aggregate, anew
            ev = Evaluator(backend, aggregators, series, parts.validation, 1)
            forwards.clear()
            seconds, first = timed(lambda ev=ev: ev(params, seeds), args.device)
            tries = {"cold": seconds}
            for name, config, run_seeds in (
                ("cached", cached, seeds),
                ("cached_runs1", cached, seeds[:1]),
                ("cached_winsorized", cached_winsorized, seeds),
                ("exact", exact, seeds),
                ("exact_winsorized", exact_winsorized, seeds),
            ):
                tries[name] = timed(
                    lambda ev=ev, config=config, run_seeds=run_seeds: ev(config, run_seeds), args.device
                )[0]
            for name, seconds in tries.items():
                times.setdefault(name, []).append(seconds)
            batched_forwards = len(forwards)
        exact_mae = ev({**params, "sampling": "exact"}, seeds).mean
    best = {name: min(values) for name, values in times.items()}

    last = batch.last_close[None]
    loop_mae = float(((loop_points - batch.target[None, :, 0]).abs() / last).mean())
    batched_s = best["cold"]
    result = {
        "backend": "toto",
        "size": args.size,
        "parameters_m": round(parameters / 1e6, 3),
        "device": args.device,
        "dtype": args.dtype,
        "compile": args.compile,
        "loop_dtype": "float32",
        "symbol": args.symbol,
        "windows": len(batch),
        "runs": args.runs,
        "num_samples": NUM_SAMPLES,
        "samples_per_batch": SAMPLES_PER_BATCH,
        "context_length": CONTEXT,
        "loop_s": loop_s,
        "batched_s": batched_s,
        "loop_over_batched": loop_s / batched_s,
        "trial_s_cached": best["cached"],
        "runs3_over_runs1": best["cached"] / best["cached_runs1"],
        "trial_s_cached_winsorized": best["cached_winsorized"],
        "trial_s_exact": best["exact"],
        "trial_s_exact_winsorized": best["exact_winsorized"],
        "loop_forwards": loop_forwards,
        "batched_forwards": batched_forwards,
        "loop_mae": loop_mae,
        "batched_mae": first.mean,
        "exact_mae": exact_mae,
        "torch_threads": torch.get_num_threads(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value:.4g}" if isinstance(value, float) else f"{key:>20}: {value}")


if __name__ == "__main__":
    main()
