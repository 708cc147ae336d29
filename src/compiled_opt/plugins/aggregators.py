"""Built-in aggregators: the names of the old Toto search space (definitions in ``core.aggregate``)."""

from __future__ import annotations

from compiled_opt.api import Register, builtin_aggregators, hookimpl


@hookimpl
def compiled_opt_register_aggregators(register: Register) -> None:
    for aggregator in builtin_aggregators():
        register(aggregator.name, aggregator)
