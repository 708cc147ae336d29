"""``compiled-opt data import``: market CSVs to checked, per-symbol Parquet files.

Column names are matched case-insensitively and in any order. The header decides the layout:

- Yahoo: ``Date,close,high,low,open,volume`` (dates are taken as midnight UTC)
- Binance: ``timestamp,open,high,low,close,volume,trade_count,vwap,symbol`` (``amount`` = vwap * volume)
- the old script's: ``timestamp,open,high,low,close,volume[,amount]``

Timestamps may be dates, ISO-8601 times (without an offset they are taken as UTC) or integer
epoch seconds. The symbol is the ``symbol`` column's single value, else the file name, upper-cased, and
must be a symbol name (``core.names``). A file needs at least ``MIN_ROWS`` data rows.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq

from compiled_opt.core.data import REQUIRED, series_from_table, symbol_path
from compiled_opt.core.errors import UsageError
from compiled_opt.core.names import check_symbol
from compiled_opt.store.stores import atomic_write_all

TIME = pa.timestamp("s", tz="UTC")
NUMBERS = REQUIRED[1:]
MIN_ROWS = 5  # the fewest any run can use: 2 validation and 2 test windows, and a row of history before them


def csv_line(row: int) -> str:
    """How errors name a data row of a CSV: its line in an editor (the header is line 1)."""
    return f"line {row + 2}"


def import_csvs(paths: list[Path], out_dir: Path) -> list[Path]:
    """Convert CSVs to ``<out_dir>/<SYMBOL>.parquet``, all or nothing: every file is read and checked
    before the first is written (each atomically). Returns the written paths."""
    tables: dict[str, tuple[Path, pa.Table]] = {}
    for path in paths:
        symbol, table = read_csv(path)
        if symbol in tables:
            raise UsageError(f"symbol {symbol} again: {tables[symbol][0]} holds it too", str(path))
        tables[symbol] = (Path(path), table)
    return _write(out_dir, {symbol: table for symbol, (_, table) in tables.items()})


def import_csv(path: Path, out_dir: Path, symbol: str | None = None) -> Path:
    """Convert one CSV to ``<out_dir>/<SYMBOL>.parquet``; checked before, written atomically. Returns its path."""
    symbol, table = read_csv(path, symbol)
    return _write(out_dir, {symbol: table})[0]


def read_csv(path: Path, symbol: str | None = None) -> tuple[str, pa.Table]:
    """One CSV as a checked data table and its symbol; errors name the file, the line and the column."""
    path = Path(path)
    names = _header(path)
    time_name = names.get("timestamp", names.get("date"))
    missing = [c for c in NUMBERS if c not in names]
    if time_name is None or missing:
        need = ["timestamp (or Date)"] * (time_name is None) + missing
        raise UsageError(
            f"missing column(s) {', '.join(need)}; expected a Yahoo (Date,open,high,low,close,volume), Binance"
            " (timestamp,...,vwap,symbol) or timestamp,open,high,low,close,volume[,amount] header",
            str(path),
        )
    types = {names[c]: pa.float64() for c in (*NUMBERS, "amount", "vwap") if c in names}
    types |= {names["symbol"]: pa.string()} if "symbol" in names else {}
    try:
        raw = pv.read_csv(
            path, convert_options=pv.ConvertOptions(column_types=types, include_columns=[time_name, *types])
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise _first_bad_line(path, list(types)) or UsageError(f"cannot read the CSV ({exc})", str(path)) from exc
    columns = {"timestamp": _utc_seconds(raw.column(time_name), path, time_name)}
    columns |= {c: raw.column(names[c]) for c in NUMBERS}
    if "amount" in names:
        columns["amount"] = raw.column(names["amount"])
    elif "vwap" in names:
        columns["amount"] = pc.multiply(raw.column(names["vwap"]), raw.column(names["volume"]))
    symbol = check_symbol((symbol or _symbol_column(raw, names, path) or path.stem).upper(), str(path))
    table = pa.table(columns)
    if table.num_rows < MIN_ROWS:
        raise UsageError(
            f"{table.num_rows} data rows; a run needs at least {MIN_ROWS} (2 validation and 2 test"
            " windows, and history before them)",
            str(path),
        )
    series_from_table(table, path, symbol, locate=csv_line)
    return symbol, table


def _header(path: Path) -> dict[str, str]:
    """Lower-cased column name -> the name as written."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the CSV ({exc})", str(path)) from exc
    return {name.strip().lower(): name for name in header}


def _first_bad_line(path: Path, numeric: list[str]) -> UsageError | None:
    """The first row Arrow cannot read, found again with the csv module to name its editor line: a row with
    another number of fields than the header, or a number column that is not a number (empty is missing)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            columns = [(name, header.index(name)) for name in numeric]
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    return UsageError(
                        f"{len(row)} fields, the header has {len(header)}: {','.join(row)!r}",
                        f"{path}: line {reader.line_num}",
                    )
                for name, at in columns:
                    try:
                        float(row[at].strip() or "nan")
                    except ValueError:
                        return UsageError(
                            f"not a number: {row[at].strip()!r}", f"{path}: line {reader.line_num}: {name}"
                        )
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return None


def _utc_seconds(column: pa.ChunkedArray, path: Path, name: str) -> pa.ChunkedArray:
    if pa.types.is_string(column.type):
        times = [_parse_time(value, csv_line(row), path, name) for row, value in enumerate(column.to_pylist())]
        return pa.chunked_array([pa.array(times, TIME)])
    if pa.types.is_date(column.type):
        column = pc.cast(column, pa.timestamp("s"))
    try:
        return pc.cast(column, TIME)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise UsageError(f"not dates, times or whole epoch seconds ({exc})", f"{path}: {name}") from exc


def _parse_time(value: str | None, line: str, path: Path, name: str) -> datetime | None:
    """One ISO-8601 time (naive = UTC), for columns Arrow could not type as a whole (e.g. mixed offsets)."""
    if value is None:
        return None
    try:
        time = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise UsageError(f"not a date or ISO-8601 time: {value!r}", f"{path}: {line}: {name}") from exc
    return time.replace(tzinfo=UTC) if time.tzinfo is None else time


def _symbol_column(raw: pa.Table, names: dict[str, str], path: Path) -> str | None:
    if "symbol" not in names:
        return None
    values = pc.unique(raw.column(names["symbol"]).drop_null()).to_pylist()
    if len(values) != 1:
        raise UsageError(f"the symbol column must hold exactly one symbol, found {values[:5]}", str(path))
    return str(values[0])


def _write(out_dir: Path, tables: dict[str, pa.Table]) -> list[Path]:
    """Every table as ``<out_dir>/<SYMBOL>.parquet``, all or nothing: a failure before the renames (e.g. a
    full disk) leaves every file as it was."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} is a file, not a folder", "--out")
    targets = {symbol: symbol_path(out_dir, symbol) for symbol in tables}
    try:
        atomic_write_all([(targets[s], lambda tmp, t=t: pq.write_table(t, tmp)) for s, t in tables.items()])
    except OSError as exc:
        raise UsageError(
            f"cannot write {exc.filename or out_dir} ({exc.strerror or exc}); nothing was imported", "--out"
        ) from None
    return list(targets.values())
