"""Built-in metrics: the MAEs, CRPS, pinball loss, hit rate and a sign strategy's return (``core.metrics``)."""

from __future__ import annotations

from compiled_opt.api import Register, builtin_metrics, hookimpl


@hookimpl
def compiled_opt_register_metrics(register: Register) -> None:
    for metric in builtin_metrics():
        register(metric.name, metric)
