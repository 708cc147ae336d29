"""``compiled-opt show``: the stored configs, one row per (symbol, model), the ``best/`` choice marked.

A table on a terminal, plain text (no ANSI codes) in a pipe or log file, or one JSON object
(``--json``). Fields an older record does not have are shown as ``-`` (``null`` in JSON).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from compiled_opt.core.errors import UsageError, did_you_mean
from compiled_opt.core.metrics import Metric
from compiled_opt.core.registry import Plugins
from compiled_opt.run.console import metrics_table
from compiled_opt.store.records import MetricComparison, Status, StoredRecord
from compiled_opt.store.stores import BEST, ConfigStore
from compiled_opt.tuning.models import check_metrics

BEST_MARK = "*"


@dataclass(frozen=True)
class StoredRow:
    """What ``show`` prints for one stored record; ``test_vs_defaults`` is the relative change of test
    MAE against the model's defaults (negative: better) and ``test_vs_defaults_se`` its standard error;
    ``test_metrics`` every metric on the test windows (empty in records before compiled-opt 0.3)."""

    symbol: str
    model: str
    best: bool
    status: str
    validation_mae: float
    test_mae: float
    validation_skill: float | None
    test_skill: float | None
    test_vs_defaults: float | None
    test_vs_defaults_se: float | None
    config: dict[str, Any]
    created_at: str | None
    policy: str | None
    run_id: str | None
    schema_version: int
    test_metrics: dict[str, MetricComparison]

    @classmethod
    def of(cls, record: StoredRecord, best: StoredRecord | None) -> StoredRow:
        oos = record.out_of_sample
        return cls(
            symbol=record.symbol,
            model=record.model,
            best=best is not None and best.model == record.model,
            status=record.status,
            validation_mae=record.validation.value,
            test_mae=record.test.value,
            validation_skill=record.validation.skill,
            test_skill=record.test.skill,
            test_vs_defaults=oos.change if oos else None,
            test_vs_defaults_se=oos.relative_se if oos else None,
            config=record.config,
            created_at=record.metadata.created_at,
            policy=record.decision.policy if record.decision else None,
            run_id=record.metadata.run_id,
            schema_version=record.schema_version,
            test_metrics=oos.metrics if oos else {},
        )


def stored_rows(
    store: ConfigStore,
    configured: Sequence[str],
    plugins: Plugins,
    models: Sequence[str] | None = None,
    symbols: Sequence[str] | None = None,
) -> list[StoredRow]:
    """Every stored record of the ``configured`` models (the config's), by symbol then model, optionally
    only ``models`` (of those) and ``symbols``; each scored in registered metrics."""
    available = [m for m in store.models() if m in configured]
    for name in models or ():
        if name not in available:
            where = "is not in the config" if name not in configured else f"has no stored configs in {store.root}"
            raise UsageError(f"model {name!r} {where}; {did_you_mean(name, available)}", "--model")
    chosen = list(models) if models else available
    stored = {m: store.symbols(m) for m in chosen}
    known = sorted({s for names in stored.values() for s in names})
    for symbol in symbols or ():
        if symbol not in known:
            raise UsageError(
                f"no stored config for symbol {symbol!r} in {store.root}; {did_you_mean(symbol, known)}", "--symbols"
            )
    rows = []
    for symbol in sorted(set(symbols)) if symbols else known:
        best = store.load(BEST, symbol)
        for m in chosen:
            record = store.load(m, symbol) if symbol in stored[m] else None
            if record is not None:
                check_metrics(record, plugins, str(store.path(m, symbol)))
                rows.append(StoredRow.of(record, best))
    return rows


def print_json(rows: Sequence[StoredRow], store: ConfigStore, stream: TextIO) -> None:
    print(json.dumps({"directory": str(store.root), "configs": [dataclasses.asdict(r) for r in rows]}), file=stream)


def print_table(
    rows: Sequence[StoredRow], store: ConfigStore, stream: TextIO, metrics: Mapping[str, Metric] | None = None
) -> None:
    if not rows:
        print(f"no stored configs in {store.root} (`compiled-opt run CONFIG` stores them)", file=stream)
        return
    terminal = stream.isatty()
    sep = "\n" if terminal else " "  # a terminal stacks two values in a cell, leaving the config room
    table = Table(
        title=f"Stored configs in {store.root}",
        title_justify="left",
        pad_edge=False,
        show_edge=False,
        box=box.SIMPLE_HEAD if terminal else None,
        padding=(0, 1),
        collapse_padding=True,
    )
    for name in (
        "Symbol",
        "Model",
        "Best",
        "Status",
        "Val MAE",
        "Test MAE",
        "Test skill",
        "Test vs defaults",
        "Decided, policy",
        "Config",
    ):
        # every column keeps its width; the config, last, wraps into what is left of a narrow terminal
        table.add_column(
            name.replace(" ", sep, 1),
            justify="right" if "MAE" in name or name.startswith("Test") else "left",
            no_wrap=name != "Config",
            ratio=1 if name == "Config" else None,
            overflow="fold",
            style="bold green" if name == "Best" else None,
        )
    for r in rows:
        change = (
            "-"
            if r.test_vs_defaults is None
            else f"{100 * r.test_vs_defaults:+.2f}%"
            + (f"{sep}± {100 * r.test_vs_defaults_se:.2f}%" if r.test_vs_defaults_se is not None else "")
        )
        cells = (
            r.symbol,
            r.model,
            BEST_MARK if r.best else "",
            r.status,
            f"{r.validation_mae:.6g}",
            f"{r.test_mae:.6g}",
            "-" if r.test_skill is None else f"{r.test_skill:+.4f}",
            change,
            f"{format_time(r.created_at)}{sep}{r.policy or '-'}",
            " ".join(f"{k}={format_value(v)}" for k, v in r.config.items()),
        )
        table.add_row(*map(escape, cells))
    notes = [
        f"{BEST_MARK}: the best/ choice for the symbol (lowest validation MAE across models). Test vs defaults:"
        " negative is lower error than the model's defaults; skill = 1 - MAE / naive MAE."
    ]
    notes += [f"{status}: {Status(status).meaning}" for status in sorted({r.status for r in rows})]
    having = sum(bool(r.test_metrics) for r in rows)
    across = metrics_table(
        [r.test_metrics for r in rows],
        metrics or {},
        f"Test metrics across the {having} stored configs that recorded them",
    )
    tables = [table] + ([across] if across is not None else [])
    if terminal:
        out = Console(file=stream, highlight=False)
        for t in tables:
            out.print(t)
        for note in notes:
            out.print(note, markup=False)
        return
    # a pipe or log file: plain text, no row wrapped (one greppable line per config), no trailing blanks
    plain = Console(file=io.StringIO(), highlight=False, width=100_000, color_system=None)
    with plain.capture() as captured:
        for t in tables:
            plain.print(t)
    print("\n".join(line.rstrip() for line in captured.get().splitlines()), *notes, sep="\n", file=stream)


def format_value(value: Any) -> str:
    """A config value as shown to people: floats to 6 significant digits."""
    return format(value, ".6g") if isinstance(value, float) else str(value)


def format_time(iso: str | None) -> str:
    """An ISO timestamp to the minute, with its zone (``-`` when unknown)."""
    if not iso:
        return "-"
    try:
        return dt.datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M %Z").strip()
    except ValueError:
        return iso


def show(
    store: ConfigStore,
    configured: Sequence[str],
    models: Sequence[str] | None,
    symbols: Sequence[str] | None,
    as_json: bool,
    stream: TextIO | None = None,
    plugins: Plugins | None = None,
) -> int:
    """Print the stored configs of the config's models; name the other model folders beside them."""
    stream, plugins = stream or sys.stdout, plugins or Plugins.load()
    rows = stored_rows(store, configured, plugins, models, symbols)
    if as_json:
        print_json(rows, store, stream)
    else:
        print_table(rows, store, stream, {name: plugins.metrics.get(name) for name in plugins.metrics})
    others = [m for m in store.models() if m not in configured]
    if others and not as_json:
        print(f"not shown: stored configs of models not in this config ({', '.join(others)})", file=stream)
    return 0
