"""Market data: one Parquet file per symbol, checked once, cut into forecast windows."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from compiled_opt.core.backend import FEATURES, WindowBatch
from compiled_opt.core.errors import UsageError

REQUIRED = ("timestamp", "open", "high", "low", "close", "volume")
PRICES = ("open", "high", "low", "close")
BAR_TOLERANCE = 1e-6  # rounding in adjusted prices


@dataclass(frozen=True)
class Series:
    """One symbol's bars: ``time`` ``[T]`` int64 epoch seconds, ``values`` ``[T, 6]`` float64 (``FEATURES``)."""

    symbol: str
    path: Path
    time: torch.Tensor
    values: torch.Tensor

    def __len__(self) -> int:
        return self.time.shape[0]

    def __reduce__(self) -> tuple:
        """Pickled as NumPy arrays: 10x cheaper than torch's tensors both ways (job specs go to workers)."""
        return _series, (self.symbol, self.path, self.time.numpy(), self.values.numpy())


def _series(symbol: str, path: Path, time: np.ndarray, values: np.ndarray) -> Series:
    # Ray hands out read-only arrays, which torch would warn about: those are copied
    return Series(
        symbol,
        path,
        torch.from_numpy(np.require(time, requirements="W")),
        torch.from_numpy(np.require(values, requirements="W")),
    )


@dataclass(frozen=True)
class Splits:
    """Target rows of the validation windows (used to choose) and the test windows (only reported)."""

    validation: range
    test: range


def symbol_path(directory: Path, symbol: str) -> Path:
    return Path(directory) / f"{symbol}.parquet"


def list_symbols(directory: Path) -> list[str]:
    return sorted(p.stem for p in Path(directory).glob("*.parquet"))


def read_series(path: Path, symbol: str | None = None) -> Series:
    """Read and check one symbol's Parquet file; bad data is a ``UsageError`` naming file, row and reason."""
    path = Path(path)
    if not path.exists():
        raise UsageError("no such data file (convert CSVs with `compiled-opt data import`)", str(path))
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UsageError(f"not a readable Parquet file ({exc})", str(path)) from exc
    return series_from_table(table, path, symbol)


def data_row(row: int) -> str:
    """How errors name a row of a Parquet file: 0-based, as pandas and ``compiled-opt evaluate --rows`` count."""
    return f"data row {row}"


def series_from_table(
    table: pa.Table, path: Path, symbol: str | None = None, locate: Callable[[int], str] = data_row
) -> Series:
    """Check a data table read from ``path`` (named in errors, its rows named by ``locate``) and turn
    it into a ``Series``."""
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise UsageError(f"missing column(s) {', '.join(missing)}; a data file needs {', '.join(REQUIRED)}", str(path))
    time = _epoch_seconds(table.column("timestamp"), path, locate)
    cols = {c: _floats(table, c, path) for c in REQUIRED[1:]}
    cols["amount"] = (
        _floats(table, "amount", path) if "amount" in table.column_names else cols["close"] * cols["volume"]
    )
    values = np.stack([cols[c] for c in FEATURES], axis=1)
    _check(path, time, values, locate)
    return Series(symbol or path.stem, path, torch.from_numpy(np.array(time)), torch.from_numpy(values))


def _epoch_seconds(column: pa.ChunkedArray, path: Path, locate: Callable[[int], str]) -> np.ndarray:
    if column.null_count:
        row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise UsageError("missing timestamp", f"{path}: {locate(row)}: timestamp")
    kind = column.type
    if pa.types.is_integer(kind):
        return column.cast(pa.int64()).to_numpy(zero_copy_only=False)
    if not (pa.types.is_timestamp(kind) or pa.types.is_date(kind)):
        raise UsageError(f"timestamp must be a timestamp, date or integer column, not {kind}", f"{path}: timestamp")
    try:
        return pc.cast(column, pa.timestamp("s")).cast(pa.int64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid as exc:
        raise UsageError(f"timestamps must be whole seconds ({exc})", f"{path}: timestamp") from exc


def _floats(table: pa.Table, name: str, path: Path) -> np.ndarray:
    try:
        return table.column(name).cast(pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise UsageError(f"not a numeric column ({exc})", f"{path}: {name}") from exc


def _check(path: Path, time: np.ndarray, values: np.ndarray, locate: Callable[[int], str]) -> None:
    for j, name in enumerate(FEATURES):
        col = values[:, j]
        bad = ~np.isfinite(col)
        if bad.any():
            raise UsageError("value is NaN or infinite", f"{path}: {locate(int(np.flatnonzero(bad)[0]))}: {name}")
        bad = col <= 0 if name in PRICES else col < 0
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise UsageError(
                f"{'non-positive price' if name in PRICES else 'negative value'} {col[row]}",
                f"{path}: {locate(row)}: {name}",
            )
    _check_bars(path, values, locate)
    step = np.diff(time)
    if (step <= 0).any():
        row = int(np.flatnonzero(step <= 0)[0]) + 1
        what = "duplicate" if step[row - 1] == 0 else "unsorted"
        raise UsageError(
            f"{what} timestamp (rows must be strictly increasing in time)", f"{path}: {locate(row)}: timestamp"
        )


def _check_bars(path: Path, values: np.ndarray, locate: Callable[[int], str]) -> None:
    """Each bar's high is its highest price and its low its lowest (within ``BAR_TOLERANCE``, relative)."""
    at = {name: values[:, FEATURES.index(name)] for name in PRICES}
    slack = BAR_TOLERANCE * at["high"]
    for name, bad in (
        ("high", at["high"] < at["low"]),
        *((name, (at[name] > at["high"] + slack) | (at[name] < at["low"] - slack)) for name in ("open", "close")),
    ):
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            prices = ", ".join(f"{n} {at[n][row]:g}" for n in PRICES)
            what = "high below low" if name == "high" else f"{name} outside the bar's low..high"
            raise UsageError(f"{what} ({prices})", f"{path}: {locate(row)}: {name}")


def splits(length: int, val_window: int, test_window: int, horizon: int) -> Splits:
    """The last ``test_window`` windows are test, the ``val_window`` before them validation.

    A window starting at row i forecasts rows i .. i + horizon - 1; the validation windows end
    ``horizon - 1`` rows early, so that no validation target is a test row.
    """
    end = length - horizon + 1
    test = range(end - test_window, end)
    val_end = test.start - (horizon - 1)
    return Splits(range(val_end - val_window, val_end), test)


def fingerprint(path: Path) -> str:
    """A hash of a data file's bytes, to refuse resuming a run on changed data."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def check_history(
    series: Series, rows: range, context: int, hint: str = "shorten the context, or data.val_window"
) -> None:
    """A ``UsageError`` naming the file unless every window of ``rows`` has ``context`` rows before it;
    ``hint`` says what to change."""
    if rows.start - context < 0:
        need = context + len(series) - rows.start
        raise UsageError(
            f"too little history: {len(series)} rows, but the windows need {need} ({context} rows of"
            f" context before the first window's target, data row {rows.start}; {hint})",
            str(series.path),
        )


def windows(series: Series, rows: range, context: int, horizon: int) -> WindowBatch:
    """The windows whose targets start at ``rows``, each with the ``context`` rows before it."""
    check_history(series, rows, context)
    target_rows = torch.arange(rows.start, rows.stop)
    ctx = target_rows[:, None] + torch.arange(-context, 0)[None, :]
    tgt = target_rows[:, None] + torch.arange(horizon)[None, :]
    close = series.values[:, FEATURES.index("close")]
    return WindowBatch(
        symbol=series.symbol,
        context=series.values[ctx],
        context_time=series.time[ctx],
        target=close[tgt],
        target_time=series.time[tgt],
        target_rows=target_rows,
    )


def next_window(series: Series, context: int, horizon: int) -> WindowBatch:
    """The window after the data: the last ``context`` rows, forecasting the ``horizon`` rows to come.

    Its targets are unknown (NaN); their times are the last time plus multiples of the median spacing of
    the last rows (a daily series: the next days, weekends included, whatever the exchange's calendar)."""
    check_history(series, range(len(series), len(series) + 1), context, "shorten the context")
    step = int(series.time[-min(len(series), 21) :].diff().median())
    target_time = series.time[-1] + step * torch.arange(1, horizon + 1)
    return WindowBatch(
        symbol=series.symbol,
        context=series.values[-context:][None],
        context_time=series.time[-context:][None],
        target=torch.full((1, horizon), float("nan"), dtype=torch.float64),
        target_time=target_time[None],
        target_rows=torch.tensor([len(series)]),
    )
