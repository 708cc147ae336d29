"""How fast the driver absorbs job results, and what Ray's workers buy on this machine.

``python benchmarks/bench_executor.py --json`` prints:

- ``absorb_jobs_per_s``: job results per second the driver handles (trial log parts, the stored record,
  ``best/``, ``run.json``) when the work itself costs nothing: one real job of a zero-cost backend is
  run, then an executor replays its events for ``--symbols`` symbols (copies of a real one) as fast as
  the driver takes them. ``absorb_ms_per_job`` is its inverse, split into trial-log, store and state time.
- ``local_s`` / ``ray_s`` / ``ray_speedup``: the whole run of ``--cpu-symbols`` symbols with a CPU-heavy
  bootstrap config (``--windows`` validation windows, ``--samples`` samples), local executor against
  ``ray`` with ``--workers`` workers, both timed end to end in this process (Ray's start-up included).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from compiled_opt.engine.config import load_config
from compiled_opt.engine.console import Console
from compiled_opt.engine.driver import Run
from compiled_opt.engine.executor import Executor, JobDone, LocalExecutor
from compiled_opt.engine.importer import import_csv
from compiled_opt.engine.jobs import TrialBatch
from market import MARKET


def config(data: Path, out: Path, trials: int, extra: str = "", windows: int = 30, samples: int = 64) -> Path:
    path = out / "bench.toml"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""
[data]
directory = "{data}"
val_window = {windows}
[search]
trials = {trials}
batch = 4
seed = 1
[output]
directory = "{out / 'hyperparams'}"
runs = "{out / 'runs'}"
{extra}
[models.bootstrap]
backend = "bootstrap"
fixed = {{ num_samples = {samples} }}
space = {{ lookback = {{ int = [10, 120] }}, aggregate = {{ choice = ["mean", "median", "trimmed_mean_10"] }} }}
""")
    return path


def symbols_dir(root: Path, count: int, source: str = "APP") -> Path:
    """``count`` symbols, each a copy of a real one under another name."""
    data = root / "data"
    data.mkdir(parents=True)
    table = pq.read_table(import_csv(MARKET / f"{source}.csv", root))
    for i in range(count):
        pq.write_table(table, data / f"S{i:05d}.parquet")
    return data


class Replay(Executor):
    """Replays one recorded job's events for every job, renamed: a worker that costs nothing."""

    recorded: list = []

    def start(self) -> None:
        pass

    def run(self, jobs, on_event) -> None:
        for job in jobs:
            for event in Replay.recorded:
                if isinstance(event, TrialBatch):
                    rows = [dataclasses.replace(r, job=job.job_id, symbol=job.symbol, run_id=job.run_id)
                            for r in event.rows]
                    on_event(dataclasses.replace(event, job_id=job.job_id, rows=rows))
                else:
                    on_event(dataclasses.replace(event, job_id=job.job_id,
                                                 result=dataclasses.replace(event.result, job_id=job.job_id)))


def absorb(root: Path, count: int, trials: int) -> dict:
    data = symbols_dir(root, count)
    quiet = Console(level="warning", stream=open(os.devnull, "w"))
    one = load_config(config(data, root / "one", trials), {"data.symbols": ["S00000"]})
    run = Run(one, console=quiet)
    events = []
    original = LocalExecutor.run

    def recording(self, jobs, on_event):
        original(self, jobs, lambda e: (events.append(e), on_event(e)))

    LocalExecutor.run = recording
    try:
        run.execute()
    finally:
        LocalExecutor.run = original
    Replay.recorded = events
    run = Run(load_config(config(data, root / "all", trials)), console=quiet)
    run.executor_cls = Replay
    timers = {"trial_log": 0.0, "store": 0.0, "state": 0.0}
    for name, target in (("trial_log", run.run_dir.trials), ("store", run.store), ("state", run.run_dir)):
        method = {"trial_log": "append", "store": "save", "state": "save_state"}[name]
        setattr(target, method, _timed(getattr(target, method), timers, name))
    start = time.perf_counter()
    run.execute()
    seconds = time.perf_counter() - start
    return {"absorb_symbols": count, "absorb_trials_per_job": trials, "absorb_jobs_per_s": count / seconds,
            "absorb_ms_per_job": 1000 * seconds / count,
            **{f"absorb_ms_per_job_{k}": 1000 * v / count for k, v in timers.items()}}


def _timed(fn, timers: dict, name: str):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            timers[name] += time.perf_counter() - start

    return wrapper


def scaling(root: Path, count: int, workers: int, windows: int, samples: int, trials: int) -> dict:
    data = symbols_dir(root, count, "NU")
    quiet = Console(level="warning", stream=open(os.devnull, "w"))
    times = {}
    for executor in ("local", "ray"):
        extra = f'[runtime]\nexecutor = "{executor}"\nworkers = {workers}\n'
        cfg = load_config(config(data, root / executor, trials, extra, windows, samples))
        start = time.perf_counter()
        outcomes = Run(cfg, console=quiet).execute()
        times[executor] = time.perf_counter() - start
        assert all(o.status != "failed" for o in outcomes)
    return {"cpu_symbols": count, "cpu_workers": workers, "cpu_windows": windows, "cpu_samples": samples,
            "cpu_trials": trials, "local_s": times["local"], "ray_s": times["ray"],
            "ray_speedup": times["local"] / times["ray"], "cores": os.cpu_count()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--cpu-symbols", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--windows", type=int, default=250)
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--cpu-trials", type=int, default=40)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = absorb(Path(tmp) / "absorb", args.symbols, args.trials)
        if not args.skip_ray:
            out |= scaling(Path(tmp) / "scaling", args.cpu_symbols, args.workers, args.windows, args.samples,
                           args.cpu_trials)
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
