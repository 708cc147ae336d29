"""Shared fixtures: real market data from ../shared converted to Parquet, and config files."""

from __future__ import annotations

from pathlib import Path

import pytest

from compiled_opt.commands.importer import import_csv
from compiled_opt.core.data import Series, read_series

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


def write_config(
    directory: Path, data_dir: Path, *, trials: int = 8, extra: str = "", models: str | None = None
) -> Path:
    """A small config in ``directory`` searching the bootstrap backend on ``data_dir``."""
    models = (
        models
        if models is not None
        else """
[models.bootstrap]
backend = "bootstrap"
fixed = { num_samples = 64 }
space.lookback = { int = [10, 80] }
space.vol_scale = { float = [0.5, 1.5] }
space.aggregate = { choice = ["mean", "median"] }
"""
    )
    path = directory / "compiled_opt.toml"
    pooled = "" if "[pooled]" in extra else "[pooled]\nenabled = false\n"  # small and quick, unlike the defaults
    path.write_text(f"""{pooled}
[data]
directory = "{data_dir}"
symbols = ["APP", "NU"]
val_window = 30
[search]
trials = {trials}
batch = 4
[output]
directory = "{directory / "hyperparams"}"
runs = "{directory / "runs"}"
{extra}
{models}
""")
    return path


FAULTY_PLUGIN = '''
"""Backends that fail on purpose, for failure-injection tests."""
from compiled_opt.api import hookimpl
from compiled_opt.plugins.backends.bootstrap import BootstrapBackend


class Faulty(BootstrapBackend):
    """bootstrap that raises in encode or in sample for the listed symbols."""

    def __init__(self, runtime, fail_encode=(), fail_sample=()):
        super().__init__(runtime)
        self.fail_encode, self.fail_sample = set(fail_encode), set(fail_sample)

    def encode(self, batch, params):
        if batch.symbol in self.fail_encode:
            raise RuntimeError(f"encode failed for {batch.symbol}")
        return batch.symbol, super().encode(batch, params)

    def sample(self, state, params, draws):
        symbol, inner = state
        if symbol in self.fail_sample:
            raise FloatingPointError(f"sample failed for {symbol}")
        return super().sample(inner, params, draws)


class OneStep(BootstrapBackend):
    max_horizon = 1


class Persistence(BootstrapBackend):
    """bootstrap whose `exact` mode forecasts the last close: no Monte Carlo noise."""

    defaults = {**BootstrapBackend.defaults, "exact": False}

    def encode(self, batch, params):
        return {**super().encode(batch, params), "batch_last": batch.last_close}

    def exact(self, state, params, aggregator):
        return state["batch_last"][:, None].repeat(1, state["horizon"]) if params["exact"] else None


@hookimpl
def compiled_opt_register_backends(register):
    register("faulty", Faulty)
    register("one_step", OneStep)
    register("persistence", Persistence)
'''


def install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> None:
    """``source`` as module ``name`` of a fake installed distribution with a ``compiled_opt`` entry point."""
    import importlib
    import sys

    (tmp_path / f"{name}.py").write_text(source)
    dist = tmp_path / f"{name}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[compiled_opt]\n{name} = {name}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    monkeypatch.delitem(sys.modules, name, raising=False)


@pytest.fixture
def faulty_plugin(tmp_path_factory, monkeypatch):
    install_plugin(tmp_path_factory.mktemp("plugin"), monkeypatch, "faulty_plugin", FAULTY_PLUGIN)
