"""``compiled-opt evaluate``: the forward test. Stored configs against the model's defaults and the
naive forecast, on any rows of the data (e.g. rows that arrived after the search), never choosing.

Every config and its model's defaults are scored on the same windows with the same seeds, drawn for
this purpose (``derive_seeds(evaluation.seed, "evaluate", eval_runs)``, or ``--seed``) and printed:
the run's own test line used the decision's seeds, so the same windows can give other figures.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass

import numpy as np
from rich.table import Table

from compiled_opt.core.config import Config
from compiled_opt.core.data import Series, check_history, splits
from compiled_opt.core.errors import UsageError
from compiled_opt.core.randomness import derive_seeds
from compiled_opt.core.registry import Plugins
from compiled_opt.run.console import Console, metrics_table, out_of_sample_line, warnings_of
from compiled_opt.run.plan import load_symbols
from compiled_opt.store.records import OutOfSample
from compiled_opt.store.stores import ConfigStore
from compiled_opt.tuning.jobs import WorkerSetup
from compiled_opt.tuning.models import check_stored, make_model_spec
from compiled_opt.tuning.worker import Worker


@dataclass(frozen=True)
class ForwardResult:
    """One stored config on the chosen rows; ``oos`` compares it with the model's defaults there.
    ``validation_windows``: how many of the windows were validation windows (used to choose the config)."""

    symbol: str
    model: str
    status: str
    config: dict
    rows: tuple[int, int]  # first and last target row (0-based data rows)
    dates: tuple[str, str]  # their dates (UTC)
    validation_windows: int
    oos: OutOfSample


@dataclass(frozen=True)
class Selection:
    """Which windows to score: ``last`` N, data ``rows`` ``START:STOP``, or targets ``since`` a date (else
    the test windows)."""

    last: int | None = None
    rows: str | None = None
    since: str | None = None

    @property
    def flag(self) -> str:
        return "--rows" if self.rows is not None else "--since" if self.since is not None else "--last"


def target_rows(series: Series, horizon: int, pick: Selection, test_window: int) -> range:
    """The windows' first target rows: the last ``last`` windows, a ``START:STOP`` slice of data rows
    (Python's semantics: 0-based, STOP excluded, negatives from the end), the rows from a date on, or
    the test windows."""
    length = len(series)
    end = length - horizon + 1  # the last window's targets end at the last row
    if pick.rows is not None:
        try:
            start, stop = (int(p) if p else None for p in pick.rows.split(":"))
        except ValueError:
            raise UsageError(
                f"expected START:STOP (0-based data rows, e.g. 1400:1500 or -100:), not {pick.rows!r}", "--rows"
            ) from None
        picked = range(end)[slice(start, stop)]
    elif pick.since is not None:
        try:
            since = dt.datetime.fromisoformat(pick.since).replace(tzinfo=dt.UTC).timestamp()
        except ValueError:
            raise UsageError(f"expected a date such as 2025-06-30, not {pick.since!r}", "--since") from None
        picked = range(int(np.searchsorted(series.time.numpy(), since)), end)
    else:
        picked = range(max(end - (pick.last or test_window), 0), end)
    if len(picked) < 2:
        raise UsageError(
            f"selects {len(picked)} window(s) of {series.symbol}'s {length} rows; a paired comparison needs at least 2",
            pick.flag,
        )
    return picked


def _date(seconds: int) -> str:
    return dt.datetime.fromtimestamp(int(seconds), dt.UTC).date().isoformat()


def forward_test(
    config: Config, plugins: Plugins | None = None, pick: Selection = Selection(), seed: int | None = None
) -> tuple[list[ForwardResult], tuple[int, ...]]:
    """Score every stored config and its model's defaults on the same windows and seeds; the results and
    the seeds."""
    plugins = plugins or Plugins.load()
    series = load_symbols(config)
    models = {name: make_model_spec(mc, plugins, config) for name, mc in config.models.items()}
    d, store = config.data, ConfigStore(config.output.directory)
    work: list[tuple[Series, str, dict, str, range]] = []
    for s in series:
        picked = target_rows(s, d.horizon, pick, d.test_window)
        for name, spec in models.items():
            record = store.load(name, s.symbol)
            if record is not None:
                check_stored(record, plugins, str(store.path(name, s.symbol)))
            params = spec.params(record)
            if params is None:
                continue
            cls = plugins.backends.get(spec.backend)
            context = max(cls.context_length(params), cls.context_length(spec.defaults))
            check_history(s, picked, context, f"choose later rows ({pick.flag})")
            work.append((s, name, params, record.status, picked))
    if not work:
        raise UsageError(
            f"no stored configs in {config.output.directory} for these symbols and models "
            "(run `compiled-opt run` first)",
            config.where("output.directory"),
        )
    worker = Worker(WorkerSetup(models, config.runtime, str(config.path), d.horizon), plugins)
    seeds = tuple(
        derive_seeds(config.evaluation.seed if seed is None else seed, "evaluate", config.evaluation.eval_runs)
    )
    out = []
    for s, name, params, status, picked in work:
        evaluate = worker.evaluator(
            name,
            [s],
            [picked],
            d.horizon,
            config.evaluation.metric,
            sample_cache=False,
            levels=config.forecast.quantiles,
            cost=config.evaluation.cost,
        ).evaluate
        oos = OutOfSample.of(
            evaluate(params, seeds, every_metric=True), evaluate(models[name].defaults, seeds, every_metric=True)
        )
        validation = splits(len(s), d.val_window, d.test_window, d.horizon).validation
        overlap = len(range(max(picked.start, validation.start), min(picked.stop, validation.stop)))
        out.append(
            ForwardResult(
                s.symbol,
                name,
                status,
                params,
                (picked.start, picked.stop - 1),
                (_date(s.time[picked.start]), _date(s.time[picked.stop - 1 + d.horizon - 1])),
                overlap,
                oos,
            )
        )
    return out, seeds


def print_forward(results: list[ForwardResult], seeds: tuple[int, ...], as_json: bool = False) -> None:
    """The forward test as a table (or JSON), the line across symbols, the seeds and the warnings."""
    changes = [r.oos.change for r in results]
    rows = [
        {
            "symbol": r.symbol,
            "model": r.model,
            "test_change": r.oos.change,
            "test_se": r.oos.relative_se,
            "skill": r.oos.skill,
        }
        for r in results
    ]
    warnings = warnings_of(rows, "these windows")
    warnings += [
        f"{r.symbol}/{r.model}: {r.validation_windows} of the {r.oos.windows} windows were validation"
        " windows, used to choose the config: their figures are optimistic"
        for r in results
        if r.validation_windows
    ]
    if as_json:
        print(
            json.dumps(
                {
                    "results": [dataclasses.asdict(r) for r in results],
                    "seeds": list(seeds),
                    "summary": out_of_sample_line(changes, "MAE"),
                    "warnings": warnings,
                }
            )
        )
        return
    table = Table(box=None, pad_edge=False)
    for name in ("Symbol", "Model", "Status", "Rows", "Dates", "MAE", "Defaults", "Naive", "vs defaults", "Skill"):
        table.add_column(name, justify="left" if name in ("Symbol", "Model", "Status", "Rows", "Dates") else "right")
    for r in results:
        o = r.oos
        table.add_row(
            r.symbol,
            r.model,
            r.status,
            f"{r.rows[0]}-{r.rows[1]}",
            f"{r.dates[0]}..{r.dates[1]}",
            f"{o.config_mae:.6g}",
            f"{o.defaults_mae:.6g}",
            f"{o.naive_mae:.6g}",
            f"{100 * o.change:+.2f}% ± {100 * o.relative_se:.2f}%",
            f"{o.skill:+.4f}",
        )
    console = Console()
    console.table(table)
    plugins = Plugins.load()
    across = metrics_table(
        [r.oos.metrics for r in results],
        {n: plugins.metrics.get(n) for n in plugins.metrics},
        "Every metric on these windows (stored configs against the models' defaults and the naive forecast)",
    )
    if across is not None:
        console.table(across)
    console.line(out_of_sample_line(changes, "MAE") or "")
    console.line(f"seeds: {list(seeds)} (the run's own test line used the decision's seeds: other draws)")
    for text in warnings:
        console.line(f"WARNING: {text}")
