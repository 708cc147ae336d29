"""Shared fixtures: real market data from ../shared converted to Parquet, and config files."""

from __future__ import annotations

from pathlib import Path

import pytest

from compiled_opt.engine.data import Series, read_series
from compiled_opt.engine.importer import import_csv

MARKET = Path(__file__).resolve().parents[2] / "shared" / "data" / "market"
SYMBOLS = ("APP", "NU", "ARM")


@pytest.fixture(scope="session")
def market_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with a few real symbols as Parquet."""
    out = tmp_path_factory.mktemp("market")
    for symbol in SYMBOLS:
        import_csv(MARKET / f"{symbol}.csv", out)
    return out


@pytest.fixture(scope="session")
def app_series(market_dir: Path) -> Series:
    return read_series(market_dir / "APP.parquet")


def write_config(directory: Path, data_dir: Path, *, trials: int = 8, extra: str = "", models: str | None = None) -> Path:
    """A small config in ``directory`` searching the bootstrap backend on ``data_dir``."""
    models = models if models is not None else """
[models.bootstrap]
backend = "bootstrap"
fixed = { num_samples = 64 }
space = { lookback = { int = [10, 80] }, vol_scale = { float = [0.5, 1.5] }, aggregate = { choice = ["mean", "median"] } }
"""
    path = directory / "compiled_opt.toml"
    path.write_text(f"""
[data]
directory = "{data_dir}"
symbols = ["APP", "NU"]
[search]
trials = {trials}
batch = 4
[output]
directory = "{directory / 'hyperparams'}"
runs = "{directory / 'runs'}"
{extra}
{models}
""")
    return path
