"""Real market data for the benchmarks: a symbol of ../shared/data/market through the engine's importer."""

from __future__ import annotations

import tempfile
from pathlib import Path

from compiled_opt.commands.importer import import_csv
from compiled_opt.core.data import Series, read_series

MARKET = Path(__file__).resolve().parents[2] / "shared" / "data" / "market"


def load_symbol(symbol: str) -> Series:
    """``<symbol>.csv`` from ../shared, converted and checked as ``compiled-opt data import`` does."""
    with tempfile.TemporaryDirectory() as tmp:
        return read_series(import_csv(MARKET / f"{symbol}.csv", Path(tmp)))
