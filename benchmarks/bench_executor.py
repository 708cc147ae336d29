"""How fast the driver absorbs job results, and what Ray's workers buy on this machine.

``python benchmarks/bench_executor.py --json`` prints:

- ``absorb_jobs_per_s``: job results per second the driver handles (trial log parts, the stored record,
  ``best/``, ``run.json``, the console) when the work itself costs nothing: one real job is run, then
  an executor replays its events for ``--symbols`` symbols (copies of a real one); the run's wall time,
  less the replaying itself, is the driver's. ``absorb_ms_per_job`` is its inverse; its trial-log,
  store, best and state parts are summed over the threads that write them concurrently (the input
  checks before the run are not counted).
- ``local_s`` / ``ray_s`` / ``ray_speedup``: the whole run of ``--cpu-symbols`` symbols with a CPU-heavy
  bootstrap config (``--windows`` validation windows, ``--samples`` samples), local executor against
  ``ray`` with ``--workers`` workers, both timed end to end in this process (Ray's start-up, reported
  as ``ray_start_s``, included; ``ray_speedup_after_start`` leaves it out). Ray's workers run one torch
  thread each while the local run uses torch's own threads on every core, so ``local_1thread_s``
  (the local run with one thread) shows how the jobs themselves scale across workers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

from compiled_opt.core.config import load_config
from compiled_opt.plugins.executors.local import LocalExecutor
from compiled_opt.run.console import Console
from compiled_opt.run.driver import Run
from compiled_opt.run.executor import Executor
from compiled_opt.store.records import JobId
from compiled_opt.tuning.jobs import TrialBatch

from market import copies


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
[pooled]
enabled = false  # one job per model, run before the others: this measures the jobs that run in parallel
[output]
directory = "{out / "hyperparams"}"
runs = "{out / "runs"}"
{extra}
[models.bootstrap]
backend = "bootstrap"
fixed = {{ num_samples = {samples} }}
[models.bootstrap.space]
lookback = {{ int = [10, 120] }}
vol_scale = {{ float = [0.5, 2.0] }}
aggregate = {{ choice = ["mean", "median", "trimmed_mean_10"] }}
""")
    return path


class Replay(Executor):
    """Replays one recorded job's events for every job, renamed: a worker that costs nothing. The time
    it takes to rename them (``overhead``) is not the driver's and is subtracted."""

    recorded: list = []
    overhead = 0.0

    def start(self, setup) -> None:
        pass

    def run(self, jobs, on_event) -> None:
        for job in jobs:
            start = time.perf_counter()
            events = [self.renamed(event, job) for event in Replay.recorded]
            Replay.overhead += time.perf_counter() - start
            for event in events:
                on_event(event)

    @staticmethod
    def renamed(event, job):
        if isinstance(event, TrialBatch):
            rows = [dataclasses.replace(r, symbol=job.symbol, run_id=job.run_id) for r in event.rows]
            return dataclasses.replace(event, job=job.job_id, rows=rows)
        return dataclasses.replace(event, job=job.job_id)


def absorb(root: Path, count: int, trials: int) -> dict:
    data = copies(root / "data", count)
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
    run.executor = Replay()
    timers = {"trial_log": 0.0, "store": 0.0, "best": 0.0, "state": 0.0}
    for name, target, method in (
        ("trial_log", run.run_dir.trials, "flush"),
        ("store", run.store, "save"),
        ("best", run.store, "update_best"),
        ("state", run.run_dir, "save_state"),
    ):
        setattr(target, method, _timed(getattr(target, method), timers, name))
    start = time.perf_counter()
    run.execute()
    seconds = time.perf_counter() - start - Replay.overhead  # the driver's share of the run
    return {
        "absorb_symbols": count,
        "absorb_trials_per_job": trials,
        "absorb_jobs_per_s": count / seconds,
        "absorb_ms_per_job": 1000 * seconds / count,
        **{f"absorb_ms_per_job_{k}": 1000 * v / count for k, v in timers.items()},
    }


def _timed(fn, timers: dict, name: str):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            timers[name] += time.perf_counter() - start

    return wrapper


def scaling(root: Path, count: int, workers: int, windows: int, samples: int, trials: int) -> dict:
    data = copies(root / "data", count, "NU")
    quiet = Console(level="warning", stream=open(os.devnull, "w"))
    times, started = {}, {}
    for name, executor, threads in (("local", "local", 0), ("local_1thread", "local", 1), ("ray", "ray", 0)):
        options = f"options = {{ workers = {workers} }}\n" if executor == "ray" else ""
        extra = f'[runtime]\nthreads = {threads}\n[executor]\nname = "{executor}"\n{options}'
        cfg = load_config(config(data, root / name, trials, extra, windows, samples))
        run = Run(cfg, console=quiet)
        start_executor = run.executor.start

        def timed_start(setup, start_executor=start_executor, name=name):
            begin = time.perf_counter()
            start_executor(setup)
            started[name] = time.perf_counter() - begin

        run.executor.start = timed_start
        start = time.perf_counter()
        outcomes = run.execute()
        times[name] = time.perf_counter() - start
        assert not any(isinstance(o, JobId) for o in outcomes)  # a failed job's result is its id
    return {
        "cpu_symbols": count,
        "cpu_workers": workers,
        "cpu_windows": windows,
        "cpu_samples": samples,
        "cpu_trials": trials,
        "local_s": times["local"],
        "ray_s": times["ray"],
        "ray_speedup": times["local"] / times["ray"],
        "ray_start_s": started["ray"],
        "local_start_s": started["local"],
        "ray_speedup_after_start": (times["local"] - started["local"]) / (times["ray"] - started["ray"]),
        "local_1thread_s": times["local_1thread"],
        "ray_speedup_over_1thread_after_start": (times["local_1thread"] - started["local_1thread"])
        / (times["ray"] - started["ray"]),
        "cores": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--cpu-symbols", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--windows", type=int, default=250)
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--cpu-trials", type=int, default=200)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = absorb(Path(tmp) / "absorb", args.symbols, args.trials)
        if not args.skip_ray:
            out |= scaling(
                Path(tmp) / "scaling", args.cpu_symbols, args.workers, args.windows, args.samples, args.cpu_trials
            )
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
