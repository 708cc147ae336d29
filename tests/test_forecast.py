"""``compiled-opt forecast``: tomorrow's forecasts with the tuned configs, through the same path as a run."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from conftest import write_config

from compiled_opt.commands.cli import main
from compiled_opt.commands.forecast import forecast
from compiled_opt.core.config import load_config
from compiled_opt.core.data import next_window, read_series, windows
from compiled_opt.core.randomness import Draws, derive_seeds
from compiled_opt.core.registry import Plugins
from compiled_opt.store.stores import ConfigStore
from compiled_opt.tuning.jobs import WorkerSetup
from compiled_opt.tuning.models import make_model_spec
from compiled_opt.tuning.worker import Worker


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, market_dir):
    """A config after a run: APP and NU have stored configs, ARM (in the data directory) has none."""
    root = tmp_path_factory.mktemp("forecast")
    config = write_config(root, market_dir, trials=4)
    assert main(["run", str(config), "-q"]) == 0
    return config


def test_the_forecast_is_what_the_evaluator_scores_for_the_window_after_the_data(tuned, market_dir, tmp_path):
    """Cut APP's last row: the forecast for the cut file is the full file's last window, scored as a run
    scores it (same draws: same symbol and row)."""
    table = pq.read_table(market_dir / "APP.parquet")
    (tmp_path / "data").mkdir()
    pq.write_table(table.slice(0, table.num_rows - 1), tmp_path / "data" / "APP.parquet")
    text = tuned.read_text().replace(str(market_dir), str(tmp_path / "data"))  # the same stored configs
    cut = tmp_path / "cut.toml"
    cut.write_text(text.replace('symbols = ["APP", "NU"]', 'symbols = ["APP"]'))
    config = load_config(cut)
    (row,) = forecast(config)
    plugins = Plugins.load()
    spec = make_model_spec(config.models["bootstrap"], plugins, config)
    params = spec.params(ConfigStore(config.output.directory).load("best", "APP"))
    worker = Worker(WorkerSetup({"bootstrap": spec}, config.runtime, str(cut), 1), plugins)
    backend = worker.backends["bootstrap"]
    full = read_series(market_dir / "APP.parquet")
    context = type(backend).context_length(params)
    batch = windows(full, range(len(full) - 1, len(full)), context, 1)
    seeds = tuple(derive_seeds(config.evaluation.seed, "forecast", config.evaluation.eval_runs))
    samples = backend.sample(backend.encode(batch, params), params, Draws(seeds, batch.window_ids))
    point = worker.aggregators[params["aggregate"]](samples, dim=2).mean(0)
    assert row.forecast == pytest.approx(float(point[0, 0]), rel=1e-12)
    assert row.last_close == float(full.values[-2, 3]) and row.source == "best" and row.config == params
    assert row.predicted_return == pytest.approx(row.forecast / row.last_close - 1)
    assert row.quantiles["0.1"] < row.quantiles["0.5"] < row.quantiles["0.9"] and row.mc_se > 0


def test_symbols_sharing_a_config_are_one_batch_and_give_what_they_give_alone(tuned):
    config = load_config(tuned)
    together = {r.symbol: r for r in forecast(config)}
    for symbol in ("APP", "NU"):
        (alone,) = forecast(load_config(tuned, {"data.symbols": [symbol]}))
        assert alone.forecast == pytest.approx(together[symbol].forecast, rel=1e-12)
        assert alone.quantiles == pytest.approx(together[symbol].quantiles, rel=1e-12)
    series = read_series(config.data.directory / "APP.parquet")
    batch = next_window(series, 5, 2)
    assert batch.target.isnan().all() and batch.target_rows.tolist() == [len(series)]
    assert torch.equal(batch.context[0], series.values[-5:])
    assert (batch.target_time[0, 1] - batch.target_time[0, 0]).item() == 86400  # daily bars: one day apart


def test_a_symbol_without_a_stored_config_uses_the_defaults_and_says_so(tuned, capsys):
    config = load_config(tuned, {"data.symbols": ["APP", "ARM"]})
    rows = {r.symbol: r for r in forecast(config)}
    assert rows["ARM"].source == "defaults" and rows["ARM"].status == "defaults" and rows["ARM"].run_id is None
    assert rows["ARM"].config == make_model_spec(config.models["bootstrap"], Plugins.load(), config).defaults
    assert rows["APP"].source == "best"
    assert main(["forecast", str(tuned), "--symbols", "APP", "ARM"]) == 0
    assert "ARM: no stored config for model bootstrap: the model's defaults" in capsys.readouterr().out


def test_model_flag_files_and_the_python_entry_point(tuned, tmp_path, capsys):
    from compiled_opt.api import forecast_frame

    assert main(["forecast", str(tuned), "--model", "bootstrap", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)["forecasts"]
    assert {f["source"] for f in printed} == {"stored"} and len(printed) == 2
    for suffix in (".parquet", ".csv", ".json"):
        out = tmp_path / f"f{suffix}"
        assert main(["forecast", str(tuned), "--out", str(out)]) == 0
        assert out.is_file()
    frame = forecast_frame(tuned)
    assert isinstance(frame, pd.DataFrame) and list(frame["symbol"]) == ["APP", "NU"]
    assert {"forecast", "predicted_return", "q0.1", "q0.5", "q0.9", "config", "last_time"} <= set(frame.columns)
    assert pd.read_parquet(tmp_path / "f.parquet")["forecast"].tolist() == pytest.approx(frame["forecast"].tolist())
    assert main(["forecast", str(tuned), "--out", str(tmp_path / "f.xlsx")]) == 2
    assert "--out: the file's name must end in .parquet, .csv, .json" in capsys.readouterr().err
    assert main(["forecast", str(tuned), "--model", "nope"]) == 2


def test_exact_aggregates_give_exact_quantiles(tmp_path, market_dir):
    pytest.importorskip("toto")
    from compiled_opt.commands.checkpoint import options_toml, write_random

    options = options_toml(write_random("toto", tmp_path / "toto", "tiny"))
    models = (
        f'[models.toto]\nbackend = "toto"\n{options}\nfixed = {{ sampling = "exact", context_length = 64,'
        ' aggregate = "median" }\n'
    )
    config = load_config(write_config(tmp_path, market_dir, trials=2, models=models))
    rows = forecast(config)
    for r in rows:
        assert r.mc_se == 0.0 and r.source == "defaults"
        assert r.forecast == pytest.approx(r.quantiles["0.5"], rel=1e-9)  # the exact median is the 0.5 quantile
    assert torch.isfinite(torch.tensor([r.quantiles["0.9"] for r in rows])).all()
