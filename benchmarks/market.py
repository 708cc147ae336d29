"""Real market data for the benchmarks: a symbol of ../shared/data/market through the engine's importer."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from compiled_opt.commands.importer import import_csv
from compiled_opt.core.data import Series, read_series

MARKET = Path(__file__).resolve().parents[2] / "shared" / "data" / "market"


def load_symbol(symbol: str) -> Series:
    """``<symbol>.csv`` from ../shared, converted and checked as ``compiled-opt data import`` does."""
    with tempfile.TemporaryDirectory() as tmp:
        return read_series(import_csv(MARKET / f"{symbol}.csv", Path(tmp)))


def copies(folder: Path, count: int, source: str = "APP", rows: int | None = None) -> Path:
    """``folder`` holding ``count`` symbols (``S00000``, ...), each a copy of ``source`` (its last ``rows``
    rows, all without ``rows``) under another name; made once, and reused when it exists."""
    if not folder.exists():
        folder.mkdir(parents=True)
        with tempfile.TemporaryDirectory() as tmp:
            table = pq.read_table(import_csv(MARKET / f"{source}.csv", Path(tmp)))
        table = table.slice(max(table.num_rows - rows, 0)) if rows else table
        for i in range(count):
            pq.write_table(table, folder / f"S{i:05d}.parquet")
    return folder
