"""Write the SYNTHETIC sample data in data/: daily bars from a seeded GARCH(1,1) model, not market prices.

Each symbol's log returns are ``sigma_t * z_t`` with ``z_t`` Student-t (fat tails, scaled to unit
variance) and ``sigma_t^2 = omega + alpha * r_{t-1}^2 + beta * sigma_{t-1}^2`` (volatility clustering).
Opens gap from the previous close, highs and lows reach beyond open and close, and volume rises with
volatility. Re-running it writes byte-identical files.

    python scripts/make_sample_data.py [--out data]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from compiled_opt.core.data import series_from_table, symbol_path

SEED = 20240601
BARS = 1000
FIRST_DAY = "2021-01-04"


@dataclass(frozen=True)
class Spec:
    """One synthetic symbol: GARCH(1,1) parameters, Student-t degrees of freedom, start price and volume."""

    symbol: str
    annual_vol: float
    alpha: float
    beta: float
    dof: float
    drift: float
    price: float
    volume: float


SPECS = (
    Spec("SYNTH_A", annual_vol=0.25, alpha=0.14, beta=0.84, dof=6.0, drift=0.0003, price=100.0, volume=2e6),
    Spec("SYNTH_B", annual_vol=0.45, alpha=0.15, beta=0.83, dof=5.0, drift=0.0002, price=35.0, volume=8e6),
    Spec("SYNTH_C", annual_vol=0.80, alpha=0.16, beta=0.82, dof=4.5, drift=0.0, price=1.5, volume=5e7),
)


def business_days(count: int) -> np.ndarray:
    """``count`` weekdays from ``FIRST_DAY`` as epoch seconds (midnight UTC)."""
    days = np.busday_offset(np.datetime64(FIRST_DAY), np.arange(count), roll="forward")
    return days.astype("datetime64[s]").astype(np.int64)


def garch_returns(spec: Spec, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Log returns and their conditional volatilities."""
    daily_var = spec.annual_vol**2 / 252
    omega = daily_var * (1 - spec.alpha - spec.beta)
    shocks = rng.standard_t(spec.dof, count) * np.sqrt((spec.dof - 2) / spec.dof)
    sigma = np.empty(count)
    returns = np.empty(count)
    var = daily_var
    for t in range(count):
        sigma[t] = np.sqrt(var)
        returns[t] = spec.drift + sigma[t] * shocks[t]
        var = omega + spec.alpha * (returns[t] - spec.drift) ** 2 + spec.beta * var
    return returns, sigma


def bars(spec: Spec, rng: np.random.Generator, count: int = BARS) -> pa.Table:
    """One symbol's OHLCV table (low <= open, close <= high; volume > 0)."""
    returns, sigma = garch_returns(spec, rng, count)
    close = spec.price * np.exp(np.cumsum(returns))
    gap = 0.2 * sigma * rng.standard_normal(count)
    open_ = np.concatenate([[spec.price], close[:-1]]) * np.exp(gap)
    high = np.maximum(open_, close) * np.exp(0.5 * sigma * np.abs(rng.standard_normal(count)))
    low = np.minimum(open_, close) * np.exp(-0.5 * sigma * np.abs(rng.standard_normal(count)))
    surprise = np.abs(returns - spec.drift) / sigma
    volume = spec.volume * np.exp(0.3 * rng.standard_normal(count) + 0.4 * surprise)
    return pa.table(
        {
            "timestamp": pa.array(business_days(count), pa.timestamp("s", tz="UTC")),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": np.round(volume),
        }
    )


def main(out_dir: Path) -> list[Path]:
    """Write every ``SPECS`` symbol to ``out_dir``; each symbol has its own seeded stream."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for spec, seed in zip(SPECS, np.random.SeedSequence(SEED).spawn(len(SPECS)), strict=True):
        table = bars(spec, np.random.default_rng(seed))
        path = symbol_path(out_dir, spec.symbol)
        series_from_table(table, path, spec.symbol)
        pq.write_table(table, path)
        written.append(path)
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data")
    for written_path in main(parser.parse_args().out):
        print(written_path)
