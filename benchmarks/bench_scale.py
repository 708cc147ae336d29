"""Does the orchestration scale out? Workers that wait like GPU workers, and a 10,000-symbol run.

``python benchmarks/bench_scale.py --json`` prints, each part run in a fresh child process:

- ``throughput``: ``--symbols`` symbols x ``--trials`` trials of the ``latency`` backend (``--encode-ms``,
  ``--sample-ms``: what a GPU worker waits for), no pooled stage, on the ``local`` executor (one worker)
  and on ``ray`` with each of ``--workers`` workers (``cpus_per_worker`` = cores / workers, so that they
  fit). Per run, timed while the executor runs the jobs (``jobs_s``: after the checks and the workers'
  start-up, ``start_s``): ``trials_per_s``, ``efficiency`` (trials/s over the workers times the local
  run's), ``driver_cpu_ms_per_job`` (the driver process's CPU time per job result, Ray's side of it
  included), ``worker_cpu_ms_per_trial`` (local: the process's CPU per trial, the optimizer and the
  engine's bookkeeping that each worker spends besides its wait) and
  ``peak_rss_gb`` (the driver's) and ``workers_pss_gb`` (the Ray workers' together, shared pages
  counted once). With ``--symbols-per-worker`` each run has that many symbols per worker instead, so that
  runs at a latency long enough to leave the cores idle take the same time at every worker count.
  ``cpu_bound_trials_per_s`` is what this machine's cores can do at the local run's CPU
  per trial: no worker count gets past it here, while on a cluster each worker has cores of its own.
- ``big``: ``--big-symbols`` symbols through the whole driver (checks, job specs, group commits, the
  stored records, ``best/``, ``run.json``, the summary) with an executor that replays one recorded job's
  events for every job (a worker that costs nothing), at ``--big-trials`` trials per job: ``wall_s``,
  ``driver_cpu_s`` (of which ``checks_s`` before the first job), ``peak_rss_gb``; and the same with
  ``--memory-symbols`` symbols at 10 and at 100 trials per job, to show memory does not grow with trials.
- ``pooled``: the pooled stage (``--pooled-trials`` trials) on ``--pooled-symbols`` symbols of the latency
  backend: locally (one worker), on ``--pooled-workers`` Ray workers as one job (``pooled.shards = 1``) and
  in each of ``--pooled-shards`` shards: the stage's wall time (``pooled_stage_s``), its ``speedup`` over the local
  run and whether it found the same pooled config (``same_config``).
- ``pooled_memory``: the pooled stage of ``--memory-symbols`` zero-cost symbols (250 windows) on the local
  executor at 10 and at 40 trials: ``peak_rss_gb``, to show that it does not grow with the trials.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from market import copies

HERE = Path(__file__).resolve().parent


def config_text(
    root: Path,
    data: Path,
    trials: int,
    latency: tuple[float, float],
    executor: str = "",
    windows: int = 250,
    pooled: str = "enabled = false",
) -> str:
    encode_ms, sample_ms = latency
    return f"""
[data]
directory = "{data}"
val_window = {windows}
[search]
trials = {trials}
batch = 4
seed = 1
[pooled]
{pooled}
[runtime]
threads = 1
[output]
directory = "{root / "hyperparams"}"
runs = "{root / "runs"}"
{executor}
[models.gpu]
backend = "latency"
options = {{ encode_ms = {encode_ms}, sample_ms = {sample_ms} }}
"""


def ray_options(workers: int) -> str:
    cpus = min(1.0, (os.cpu_count() or 1) / workers)
    return f'[executor]\nname = "ray"\noptions = {{ workers = {workers}, cpus_per_worker = {cpus} }}\n'


def vm_kb(pid: int, field: str, name: str = "status") -> int:
    """A ``/proc/<pid>`` memory figure in kB (``VmHWM`` from status, ``Pss`` from smaps_rollup); 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# --- the children -------------------------------------------------------------------------------------------


def timed_run(config: Path, executor=None) -> dict:
    """``Run(config).execute()`` in this process (on ``executor``, if given): wall, start-up, driver CPU,
    memory and the run."""
    from compiled_opt.core.config import load_config
    from compiled_opt.run.console import Console
    from compiled_opt.run.driver import Run

    cpu0, wall0 = time.process_time(), time.perf_counter()
    run = Run(load_config(config), console=Console(level="warning", stream=open(os.devnull, "w")))
    checks_s = time.perf_counter() - wall0
    run.executor = executor or run.executor
    figures: dict = {}
    start, close = run.executor.start, run.executor.close

    def timed_start(setup):
        begin = time.perf_counter()
        start(setup)
        figures["start_s"] = time.perf_counter() - begin

    def measured_close():
        pids = run.executor.pids() if hasattr(run.executor, "pids") else []
        figures["workers_pss_gb"] = sum(vm_kb(p, "Pss", "smaps_rollup") for p in pids) / 2**20
        figures["workers_rss_gb"] = sum(vm_kb(p, "VmHWM") for p in pids) / 2**20
        close()

    def measured_run(jobs, on_event):
        cpu, begin = time.process_time(), time.perf_counter()
        execute(jobs, on_event)
        figures.setdefault("stages_s", []).append(time.perf_counter() - begin)
        figures["jobs_s"] = figures.get("jobs_s", 0.0) + time.perf_counter() - begin
        figures["jobs_cpu_s"] = figures.get("jobs_cpu_s", 0.0) + time.process_time() - cpu

    execute = run.executor.run
    run.executor.start, run.executor.run, run.executor.close = timed_start, measured_run, measured_close
    begin = time.perf_counter()
    outcomes = run.execute()
    wall = time.perf_counter() - begin
    failed = sum(not hasattr(o, "status") for o in outcomes)
    return {
        **figures,
        "wall_s": wall,
        "checks_s": checks_s,
        "driver_cpu_s": time.process_time() - cpu0,
        "jobs": len(outcomes),
        "failed": failed,
        "run": run,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def child_throughput(root: Path, args: argparse.Namespace, workers: int) -> dict:
    symbols = args.symbols_per_worker * max(workers, 1) if args.symbols_per_worker else args.symbols
    data = copies(root.parent / f"data-{symbols}", symbols)
    executor = ray_options(workers) if workers else ""
    config = root / "scale.toml"
    root.mkdir(parents=True)
    config.write_text(config_text(root, data, args.trials, (args.encode_ms, args.sample_ms), executor))
    out = timed_run(config)
    out.pop("run")
    trials = symbols * args.trials
    out["symbols"], out["trials_per_s"] = symbols, trials / out["jobs_s"]
    if workers:
        out["driver_cpu_ms_per_job"] = 1000 * out["jobs_cpu_s"] / out["jobs"]
    else:
        out["worker_cpu_ms_per_trial"] = 1000 * out["jobs_cpu_s"] / trials
    return out


def child_big(root: Path, symbols: int, trials: int) -> dict:
    """``symbols`` symbols through the driver, each job's events replayed from one recorded job."""
    from bench_executor import Replay

    from compiled_opt.plugins.executors.local import LocalExecutor

    data = copies(root.parent / f"data-{symbols}-last-120", symbols, rows=120)
    root.mkdir(parents=True)
    one, config = root / "one.toml", root / "all.toml"
    text = config_text(root / "one", data, trials, (0, 0), windows=30)
    one.write_text(text.replace("[data]", '[data]\nsymbols = ["S00000"]'))
    config.write_text(config_text(root, data, trials, (0, 0), windows=30))
    events = []
    original = LocalExecutor.run

    def recording(self, jobs, on_event):
        original(self, jobs, lambda e: (events.append(e), on_event(e)))

    LocalExecutor.run = recording
    try:
        timed_run(one)
    finally:
        LocalExecutor.run = original
    Replay.recorded = events
    out = timed_run(config, Replay())
    run = out.pop("run")
    stored = len(list((root / "hyperparams" / "best").iterdir()))
    return {
        **out,
        "symbols": symbols,
        "trials_per_job": trials,
        "best_files": stored,
        "run_json_kb": run.run_dir.state_path.stat().st_size / 1024,
        "replay_s": Replay.overhead,
    }


def child_pooled(root: Path, args: argparse.Namespace, workers: int, shards: int) -> dict:
    """The pooled stage of ``--pooled-symbols`` symbols: its wall time, and the pooled config it found."""
    from compiled_opt.store.records import JobId

    data = copies(root.parent / f"data-{args.pooled_symbols}", args.pooled_symbols)
    root.mkdir(parents=True)
    config = root / "pooled.toml"
    config.write_text(
        config_text(
            root,
            data,
            args.pooled_trials,
            (args.encode_ms, args.sample_ms),
            ray_options(workers) if workers else "",
            pooled=f"shards = {shards}",
        )
    )
    out = timed_run(config)
    run = out.pop("run")
    return {
        "workers": workers or 1,
        "shards": shards if workers else 1,
        "pooled_stage_s": out["stages_s"][0],
        "pooled_config": run.outcomes[JobId("gpu")].config,
        "start_s": out["start_s"],
        "driver_cpu_s": out["driver_cpu_s"],
        "workers_pss_gb": out.get("workers_pss_gb"),
        "peak_rss_gb": out["peak_rss_gb"],
    }


def child(args: argparse.Namespace) -> dict:
    root = Path(args.root)
    if args.child == "pooled":
        return child_pooled(root, args, args.child_workers, args.child_shards)
    if args.child == "throughput":
        return child_throughput(root, args, args.child_workers)
    if args.child == "big":
        return child_big(root, args.child_symbols, args.child_trials)
    raise SystemExit(f"unknown child {args.child}")


# --- the parent ---------------------------------------------------------------------------------------------


def run_child(args: argparse.Namespace, root: Path, part: str, **extra) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", part, "--root", str(root)]
    names = ("symbols", "trials", "encode_ms", "sample_ms", "symbols_per_worker", "pooled_symbols", "pooled_trials")
    for key, value in {**{k: getattr(args, k) for k in names}, **extra}.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=HERE)
    if proc.returncode:
        return {
            "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}",
            "stderr_tail": proc.stderr[-2000:],
        }
    return json.loads(proc.stdout.strip().splitlines()[-1])


def throughput(args: argparse.Namespace, tmp: Path) -> dict:
    runs = {"local": run_child(args, tmp / "local", "throughput", child_workers=0)}
    base = runs["local"].get("trials_per_s")
    for workers in args.workers:
        out = run_child(args, tmp / f"ray{workers}", "throughput", child_workers=workers)
        if base and "trials_per_s" in out:
            out["efficiency"] = out["trials_per_s"] / (workers * base)
        runs[f"ray_{workers}"] = out
    cpu = runs["local"].get("worker_cpu_ms_per_trial")
    return {
        "symbols": args.symbols_per_worker and f"{args.symbols_per_worker} per worker" or args.symbols,
        "trials": args.trials,
        "encode_ms": args.encode_ms,
        "sample_ms": args.sample_ms,
        "cores": os.cpu_count(),
        "cpu_bound_trials_per_s": (os.cpu_count() or 1) * 1000 / cpu if cpu else None,
        "runs": runs,
    }


def big(args: argparse.Namespace, tmp: Path) -> dict:
    out = {"run": run_child(args, tmp / "big", "big", child_symbols=args.big_symbols, child_trials=args.big_trials)}
    for trials in (10, 100):
        out[f"memory_{trials}_trials"] = run_child(
            args, tmp / f"mem{trials}", "big", child_symbols=args.memory_symbols, child_trials=trials
        )
    return out


def pooled(args: argparse.Namespace, tmp: Path) -> dict:
    runs = {"local": run_child(args, tmp / "pooled-local", "pooled", child_workers=0, child_shards=1)}
    for shards in (1, *args.pooled_shards):
        runs[f"ray_{args.pooled_workers}_shards_{shards}"] = run_child(
            args, tmp / f"pooled-{shards}", "pooled", child_workers=args.pooled_workers, child_shards=shards
        )
    base = runs["local"].get("pooled_stage_s")
    for out in runs.values():
        if base and "pooled_stage_s" in out:
            out["speedup"] = base / out["pooled_stage_s"]
            out["same_config"] = out["pooled_config"] == runs["local"]["pooled_config"]
    return {"symbols": args.pooled_symbols, "trials": args.pooled_trials, "runs": runs}


def pooled_memory(args: argparse.Namespace, tmp: Path) -> dict:
    """The local pooled stage of ``--memory-symbols`` zero-cost symbols at 10 and 40 trials: its peak memory."""
    runs = {
        f"trials_{trials}": run_child(
            args,
            tmp / f"pooled-memory-{trials}",
            "pooled",
            child_workers=0,
            child_shards=1,
            pooled_symbols=args.memory_symbols,
            pooled_trials=trials,
            encode_ms=0,
            sample_ms=0,
        )
        for trials in (10, 40)
    }
    return {"symbols": args.memory_symbols, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--encode-ms", type=float, default=20.0)
    parser.add_argument("--sample-ms", type=float, default=3.0)
    parser.add_argument("--workers", type=int, nargs="*", default=[4, 8, 16, 32])
    parser.add_argument(
        "--symbols-per-worker",
        type=int,
        default=0,
        help="instead of --symbols: this many symbols per worker (the local run: one worker)",
    )
    parser.add_argument("--big-symbols", type=int, default=10_000)
    parser.add_argument("--big-trials", type=int, default=100)
    parser.add_argument("--memory-symbols", type=int, default=1000)
    parser.add_argument("--pooled-symbols", type=int, default=200)
    parser.add_argument("--pooled-trials", type=int, default=20)
    parser.add_argument("--pooled-workers", type=int, default=16)
    parser.add_argument("--pooled-shards", type=int, nargs="*", default=[16, 64])
    parser.add_argument(
        "--parts",
        nargs="*",
        default=["throughput", "big", "pooled", "pooled_memory"],
        choices=("throughput", "big", "pooled", "pooled_memory"),
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--child-workers", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--child-symbols", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--child-trials", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--child-shards", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = {part: globals()[part](args, Path(tmp)) for part in args.parts}
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
