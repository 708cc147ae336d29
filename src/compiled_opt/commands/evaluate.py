"""``compiled-opt evaluate``: the forward test. Stored configs against the model's defaults and the
naive forecast, on any rows of the data (e.g. rows that arrived after the search), never choosing."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from rich.table import Table

from compiled_opt.core.config import Config
from compiled_opt.core.data import Series, check_history
from compiled_opt.core.errors import UsageError
from compiled_opt.core.randomness import derive_seeds
from compiled_opt.core.registry import Plugins
from compiled_opt.run.console import Console, out_of_sample_line
from compiled_opt.run.plan import load_symbols
from compiled_opt.store.records import OutOfSample
from compiled_opt.store.stores import ConfigStore
from compiled_opt.tuning.jobs import WorkerSetup
from compiled_opt.tuning.models import check_stored, make_model_spec
from compiled_opt.tuning.worker import Worker


@dataclass(frozen=True)
class ForwardResult:
    """One stored config on the chosen rows; ``oos`` compares it with the model's defaults there."""

    symbol: str
    model: str
    status: str
    config: dict
    rows: tuple[int, int]  # first and last target row (0-based data rows)
    oos: OutOfSample


def target_rows(length: int, horizon: int, last: int | None, rows: str | None, test_window: int) -> range:
    """The windows' first target rows: the last ``last`` windows, a ``START:STOP`` slice of data rows
    (Python's semantics: 0-based, STOP excluded, negatives from the end), or the test windows."""
    end = length - horizon + 1  # the last window's targets end at the last row
    if rows is not None:
        try:
            start, stop = (int(p) if p else None for p in rows.split(":"))
        except ValueError:
            raise UsageError(f"expected START:STOP (0-based data rows, e.g. 1400:1500 or -100:), not {rows!r}",
                             "--rows") from None
        picked = range(end)[slice(start, stop)]
        where = "--rows"
    else:
        picked = range(max(end - (last or test_window), 0), end)
        where = "--last"
    if len(picked) < 2:
        raise UsageError(f"selects {len(picked)} window(s) of {length} rows; a paired comparison needs at least 2",
                         where)
    return picked


def forward_test(config: Config, plugins: Plugins | None = None, last: int | None = None,
                 rows: str | None = None) -> list[ForwardResult]:
    """Score every stored config and its model's defaults on the same windows and seeds."""
    plugins = plugins or Plugins.load()
    series = load_symbols(config)
    models = {name: make_model_spec(mc, plugins, config) for name, mc in config.models.items()}
    store, horizon = ConfigStore(config.output.directory), config.data.horizon
    work: list[tuple[Series, str, dict, str, range]] = []
    for s in series:
        picked = target_rows(len(s), horizon, last, rows, config.data.test_window)
        for name, spec in models.items():
            record = store.load(name, s.symbol)
            if record is not None:
                check_stored(record, plugins, str(store.path(name, s.symbol)))
            params = spec.params(record)
            if params is None:
                continue
            cls = plugins.backends.get(spec.backend)
            check_history(s, picked, max(cls.context_length(params), cls.context_length(spec.defaults)))
            work.append((s, name, params, record.status, picked))
    if not work:
        raise UsageError(f"no stored configs in {config.output.directory} for these symbols and models "
                         "(run `compiled-opt run` first)", config.where("output.directory"))
    worker = Worker(WorkerSetup(models, config.runtime, str(config.path), horizon), plugins)
    seeds = tuple(derive_seeds(config.evaluation.seed, "evaluate", config.evaluation.eval_runs))
    out = []
    for s, name, params, status, picked in work:
        evaluate = worker.evaluator(name, [s], [picked], horizon, config.evaluation.metric)
        oos = OutOfSample.of(evaluate(params, seeds), evaluate(models[name].defaults, seeds))
        out.append(ForwardResult(s.symbol, name, status, params, (picked.start, picked.stop - 1), oos))
    return out


def print_forward(results: list[ForwardResult], as_json: bool = False) -> None:
    """The forward test as a table (or JSON), and the line across symbols."""
    changes = [r.oos.change for r in results]
    if as_json:
        print(json.dumps({"results": [dataclasses.asdict(r) for r in results],
                          "summary": out_of_sample_line(changes, "MAE")}))
        return
    table = Table(box=None, pad_edge=False)
    for name in ("Symbol", "Model", "Status", "Rows", "MAE", "Defaults", "Naive", "vs defaults", "Skill"):
        table.add_column(name, justify="left" if name in ("Symbol", "Model", "Status", "Rows") else "right")
    for r in results:
        o = r.oos
        table.add_row(r.symbol, r.model, r.status, f"{r.rows[0]}-{r.rows[1]}", f"{o.config_mae:.6g}",
                      f"{o.defaults_mae:.6g}", f"{o.naive_mae:.6g}",
                      f"{100 * o.change:+.2f}% ± {100 * o.se / o.defaults_mae:.2f}%", f"{o.skill:+.4f}")
    console = Console()
    console.table(table)
    console.line(out_of_sample_line(changes, "MAE") or "")
