"""Built-in aggregators: the names of the old Toto search space (definitions in ``engine.aggregate``)."""

from __future__ import annotations

from compiled_opt.core import aggregate as agg
from compiled_opt.core.hookspecs import Register, hookimpl

TRIMMED = (5, 10, 15, 20, 25)
LOWER_TRIMMED = (10, 15, 20, 25)
UPPER_TRIMMED = (10, 15, 20)
QUANTILES = ("0.10", "0.15", "0.20", "0.25", "0.30", "0.70", "0.75", "0.80", "0.85", "0.90")
WINSORIZED = (5, 10)


def builtin_aggregators() -> list[agg.Aggregator]:
    """Every built-in aggregator, in the order the old search space listed them."""
    return [
        *(agg.trimmed(p / 100, f"trimmed_mean_{p}") for p in TRIMMED),
        *(agg.lower_trimmed(p / 100, f"lower_trimmed_mean_{p}") for p in LOWER_TRIMMED),
        *(agg.upper_trimmed(p / 100, f"upper_trimmed_mean_{p}") for p in UPPER_TRIMMED),
        *(agg.quantile(float(q), f"quantile_{q}") for q in QUANTILES),
        agg.mean(),
        agg.quantile(0.5, "median"),
        *(agg.winsorized(p / 100, f"winsorized_mean_{p}") for p in WINSORIZED),
    ]


@hookimpl
def compiled_opt_register_aggregators(register: Register) -> None:
    for aggregator in builtin_aggregators():
        register(aggregator.name, aggregator)
