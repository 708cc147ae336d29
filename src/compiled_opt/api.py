"""The public API: everything a backend, policy, aggregator or executor plugin needs, and the forecasts.

    from compiled_opt.api import ModelBackend, hookimpl
    from compiled_opt.api import forecast_frame   # tomorrow's forecasts with the tuned configs, a DataFrame

The built-in plugins import from here only, like any third-party plugin. Names here are stable; the
packages beside it (``core``, ``tuning``, ``run``, ``store``, ``commands``) are the implementation.
Each name is imported when it is first used, so a plugin pays only for what it imports.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "compiled_opt.core.aggregate": (
        "Aggregator",
        "builtin_aggregators",
        "lower_trimmed",
        "mean",
        "quantile",
        "trimmed",
        "upper_trimmed",
        "winsorized",
    ),
    "compiled_opt.core.backend": ("FEATURES", "ContractError", "ModelBackend", "Runtime", "WindowBatch"),
    "compiled_opt.core.boundaries": ("SPENDING", "Boundaries", "boundaries", "stage_runs", "z_equivalent"),
    "compiled_opt.core.buckets": ("pad_rows", "pad_to", "window_bucket"),
    "compiled_opt.core.errors": ("OptionError", "UsageError"),
    "compiled_opt.core.evaluate": ("Evaluation",),
    "compiled_opt.core.hookspecs": ("Register", "hookimpl"),
    "compiled_opt.core.metrics": ("Forecasts", "Metric", "builtin_metrics"),
    "compiled_opt.core.randomness": ("Draws",),
    "compiled_opt.core.stats": ("mc_standard_error", "paired_differences", "window_standard_error"),
    "compiled_opt.commands.forecast": ("forecast_frame",),
    "compiled_opt.run.executor": ("Event", "Executor", "JobDone", "OnEvent", "run_job"),
    "compiled_opt.store.records": ("TrialRow",),
    "compiled_opt.tuning.acceptance": (
        "Decision",
        "Policy",
        "StagedPolicy",
        "Stages",
        "improvement_text",
        "relative_improvement",
    ),
    "compiled_opt.tuning.jobs": ("JobResult", "JobSpec", "TrialBatch", "WorkerSetup", "logged_trials"),
    "compiled_opt.tuning.shards": ("Shard", "ShardCall", "ShardEvaluators", "ShardedRunner", "split_shards"),
    "compiled_opt.tuning.worker": ("Worker",),
}
_MODULE = {name: module for module, names in _HOME.items() for name in names}

__all__ = sorted(_MODULE)


def __getattr__(name: str) -> Any:
    if name not in _MODULE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
