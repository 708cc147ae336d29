"""The latency backend: sleeps about what it is told, returns valid shapes, runs a whole run, and is labelled."""

from __future__ import annotations

import time

import pytest
from conftest import write_config

from compiled_opt.commands.cli import main
from compiled_opt.core.backend import Runtime
from compiled_opt.core.config import load_config
from compiled_opt.core.data import windows
from compiled_opt.core.errors import OptionError
from compiled_opt.core.randomness import Draws
from compiled_opt.core.registry import Plugins
from compiled_opt.plugins.backends.latency import LatencyBackend
from compiled_opt.run.console import Console
from compiled_opt.run.driver import Run

LATENCY = """
[models.slow]
backend = "latency"
options = { encode_ms = 5, sample_ms = 2 }
"""


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def test_sleeps_what_it_is_told_and_returns_valid_samples(app_series):
    backend = LatencyBackend(Runtime(), encode_ms=40, sample_ms=25)
    batch = windows(app_series, range(300, 330), 2, 1)
    state, encode_s = timed(backend.encode, batch, backend.defaults)
    draws = Draws((1, 2, 3), batch.window_ids)
    samples, sample_s = timed(backend.sample, state, {**backend.defaults, "level": 0.5}, draws)
    assert 0.04 <= encode_s < 0.5 and 0.025 <= sample_s < 0.5
    assert samples.shape == (3, 30, 64, 1) and samples.is_floating_point()
    assert samples[1, :, 7, 0].tolist() == pytest.approx((batch.last_close * 1.0005).tolist())


def test_options_are_checked():
    with pytest.raises(OptionError, match="between 0 and 60000"):
        LatencyBackend(Runtime(), sample_ms=-1)


def test_a_run_with_the_latency_backend_stores_every_symbol(tmp_path, market_dir):
    config = load_config(write_config(tmp_path, market_dir, trials=8, models=LATENCY))
    results = Run(config, console=Console(level="warning")).execute()
    assert [r.job.symbol for r in results] == ["APP", "NU"]
    assert {p.name for p in (tmp_path / "hyperparams" / "best").iterdir()} == {"APP.json", "NU.json"}


def test_it_is_labelled_for_benchmarks(capsys):
    assert Plugins.load().backends.get("latency").for_benchmarks
    assert not Plugins.load().backends.get("bootstrap").for_benchmarks
    assert main(["plugins"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("latency"))
    assert "for benchmarks" in line
