"""Limits on what a run asks for, checked with the other inputs before any work: a mistyped number should
not start a run that never ends, or one that runs out of memory at its first trial.

Each limit names its key and can be lifted with ``--allow-large`` (``Plan(..., allow_large=True)``), for
the runs that mean it (a budget of a million trials; threads on a Ray cluster's larger nodes). The memory
estimate is one evaluation's samples, ``runs x windows x samples x horizon x BYTES_PER_SAMPLE``, against
the memory this machine's device has free; the model's own memory comes on top of it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from compiled_opt.core.backend import ModelBackend
from compiled_opt.core.config import Config, DataConfig, EvaluationConfig
from compiled_opt.core.errors import UsageError
from compiled_opt.tuning.models import ModelSpec

MAX_TRIALS = 100_000  # per job: 1000 times the default budget
MAX_RUNS = 1_000  # evaluation runs per config (the default is 3; the Monte Carlo error at 1000 is 5% of one run's)
# Peak bytes per drawn sample: the sample, its draw index, the aggregator's sorted copy and a temporary
# (bootstrap: 24 to 26 at 48 runs x 250 windows x 1024 samples, tests/test_limits.py).
BYTES_PER_SAMPLE = 32
HATCH = "--allow-large to run it anyway"
LABELS = ("runs", "windows", "samples", "steps")  # of ``_factors``


@dataclass(frozen=True)
class Factor:
    """One factor of the memory estimate, where it is set, and its default (to name the one out of line)."""

    value: int
    key: str
    default: int


def check_limits(
    config: Config, models: Mapping[str, ModelSpec], classes: Mapping[str, type[ModelBackend]], allow_large: bool
) -> None:
    """A ``UsageError`` naming the key and the limit for the first input above its limit."""
    if allow_large:
        return
    s, runtime = config.search, config.runtime
    _at_most(config, "search.trials", s.trials, MAX_TRIALS, "trials per job")
    _at_most(config, "evaluation.eval_runs", config.evaluation.eval_runs, MAX_RUNS, "runs per config")
    if s.racing:
        _at_most(config, "search.racing_max_runs", s.racing_max_runs, MAX_RUNS, "runs per config")
    _at_most(config, "runtime.threads", runtime.threads, cores(), "threads (the cores of this machine)")
    device, free = free_memory(runtime.device if runtime.mode != "fast" else "auto")
    for name, model in models.items():
        factors = _factors(config, name, model, classes[name])
        need = BYTES_PER_SAMPLE
        for f in factors:
            need *= f.value
        if need > free:
            worst = max(factors, key=lambda f: f.value / max(f.default, 1))
            shown = " x ".join(f"{f.value} {label}" for f, label in zip(factors, LABELS, strict=True))
            raise UsageError(
                f"one evaluation of model {name!r} needs about {_gib(need)} ({shown} x"
                f" {BYTES_PER_SAMPLE} bytes), more than the {_gib(free)} free on this machine's"
                f" {device} ({HATCH})",
                config.where(worst.key),
            )


def _at_most(config: Config, key: str, value: int, limit: int, what: str) -> None:
    if value > limit:
        raise UsageError(f"{value} is above the limit of {limit} {what} ({HATCH})", config.where(key))


def _factors(config: Config, name: str, model: ModelSpec, cls: type[ModelBackend]) -> list[Factor]:
    """Runs, windows, samples and horizon of ``model``'s largest evaluation."""
    s, d = config.search, config.data
    runs = Factor(config.evaluation.eval_runs, "evaluation.eval_runs", EvaluationConfig.eval_runs)
    if s.racing and s.racing_max_runs > runs.value:
        runs = Factor(s.racing_max_runs, "search.racing_max_runs", EvaluationConfig.eval_runs)
    windows = (
        Factor(d.val_window, "data.val_window", DataConfig.val_window)
        if d.val_window >= d.test_window
        else Factor(d.test_window, "data.test_window", DataConfig.test_window)
    )
    key = cls.samples_param
    count = (
        1
        if key is None
        else model.max_samples
        or int(max([model.base[key], *(model.space[key].extremes() if key in model.space else ())]))
    )
    samples = Factor(count, f"models.{name}", int(cls.defaults[key]) if key else 1)
    return [runs, windows, samples, Factor(d.horizon, "data.horizon", DataConfig.horizon)]


def cores() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def free_memory(device: str) -> tuple[str, int]:
    """The device a run on ``device`` (``auto``, ``cpu``, ``cuda``) uses here, and its free bytes."""
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return "cuda", torch.cuda.mem_get_info()[0]
    try:
        with open("/proc/meminfo") as fh:
            info = dict(line.split(":", 1) for line in fh)
        return "cpu", int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return "cpu", os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _gib(size: float) -> str:
    return f"{size / 2**30:.1f} GiB"
