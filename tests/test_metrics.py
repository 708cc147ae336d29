"""The metrics, each against an independent computation: closed forms, direct sums, a loop."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as st

from compiled_opt.core.metrics import (
    Forecasts,
    builtin_metrics,
    crps,
    crps_levels,
    hit_loss,
    pinball_loss,
    strategy_loss,
)

METRICS = {m.name: m for m in builtin_metrics()}


def normal_crps(mu: np.ndarray, sigma: float, y: np.ndarray) -> np.ndarray:
    """The closed form for a normal distribution (Gneiting and Raftery, 2007)."""
    z = (y - mu) / sigma
    return sigma * (z * (2 * st.norm.cdf(z) - 1) + 2 * st.norm.pdf(z) - 1 / np.sqrt(np.pi))


def returns_as_prices(r: np.ndarray, last: np.ndarray) -> np.ndarray:
    return last.reshape([-1 if i == 1 else 1 for i in range(r.ndim)]) * (1 + r)


def test_crps_from_samples_and_from_quantiles_is_the_normal_closed_form():
    rng = np.random.default_rng(0)
    windows, last = 5, np.linspace(10, 50, 5)
    mu, sigma, y = rng.normal(0, 0.01, windows), 0.02, rng.normal(0, 0.02, windows)
    target = last[:, None] * (1 + y[:, None])
    draws = np.sort(mu[None, :, None] + sigma * rng.standard_normal((1, windows, 200_000)), axis=-1)[..., None]
    samples = returns_as_prices(draws, last)
    f = Forecasts(point=returns_as_prices(mu[None, :, None], last), target=target, last=last, samples=samples)
    expected = normal_crps(mu, sigma, y)
    assert crps(f)[0] == pytest.approx(expected, abs=5 * sigma / np.sqrt(200_000))  # 5 Monte Carlo SEs

    def quantile(levels):
        q = mu[None, None, :] + sigma * st.norm.ppf(np.asarray(levels))[None, :, None]  # [1, L, windows]
        return last[None, None, :, None] * (1 + q[..., None])

    exact = Forecasts(point=f.point, target=target, last=last, quantile=quantile)
    assert crps(exact)[0] == pytest.approx(expected, rel=2e-2)  # the midpoint rule over 99 levels
    assert len(crps_levels()) == 99
    point = Forecasts(point=f.point, target=target, last=last)  # a distribution of one value: the MAE
    assert crps(point) == pytest.approx(np.abs(mu - y)[None])


def test_the_empirical_crps_is_the_double_sum():
    rng = np.random.default_rng(1)
    x = np.sort(rng.normal(size=(2, 3, 7, 1)), axis=2)
    last, y = np.ones(3), rng.normal(size=3)
    f = Forecasts(point=x.mean(2), target=1 + y[:, None], last=last, samples=1 + x)
    direct = np.abs(x - y[None, :, None, None]).mean(2)[..., 0] - 0.5 * np.abs(
        x[:, :, :, None, 0] - x[:, :, None, :, 0]
    ).mean((2, 3))
    assert crps(f) == pytest.approx(direct)


def test_pinball_at_the_configured_quantiles_against_numpy():
    rng = np.random.default_rng(2)
    x = np.sort(rng.normal(0, 0.01, size=(3, 4, 101, 1)), axis=2)
    last, y = np.full(4, 20.0), rng.normal(0, 0.01, 4)
    f = Forecasts(
        point=20 * (1 + x.mean(2)),
        target=20 * (1 + y[:, None]),
        last=last,
        samples=20 * (1 + x),
        levels=(0.1, 0.5, 0.9),
    )
    q = np.quantile(x[..., 0], [0.1, 0.5, 0.9], axis=2)  # [3 levels, runs, windows]
    expected = np.mean(
        [np.maximum(p * (y - q[i]), (p - 1) * (y - q[i])) for i, p in enumerate((0.1, 0.5, 0.9))], axis=0
    )
    assert pinball_loss(f) == pytest.approx(expected)


def test_direction_and_the_sign_strategy_against_a_loop():
    last = np.array([10.0, 10.0, 10.0, 10.0, 10.0])
    forecast_return = np.array([[0.01, -0.02, 0.0, 0.03, 0.02]])
    outcome = np.array([0.02, 0.01, -0.01, 0.0, 0.015])
    f = Forecasts(
        point=(last * (1 + forecast_return))[..., None], target=(last * (1 + outcome))[:, None], last=last, cost=0.001
    )
    assert hit_loss(f)[0].tolist() == [0.0, 1.0, 0.5, 0.5, 0.0]
    pnl, before = [], 0.0
    for r_hat, r in zip(forecast_return[0], outcome, strict=True):
        position = float(np.sign(r_hat))
        pnl.append(position * r - 0.001 * abs(position - before))
        before = position
    assert -strategy_loss(f)[0] == pytest.approx(pnl)
    assert METRICS["hit_rate"].shown(float(hit_loss(f).mean())) == pytest.approx(0.6)
    assert METRICS["strategy_return"].higher_is_better and not METRICS["crps"].higher_is_better


def test_the_naive_forecast_scores_as_documented():
    """Return 0: its CRPS and MAE are |r|, it calls no direction (hit 1/2) and never trades (return 0)."""
    last, y = np.array([10.0, 20.0]), np.array([0.01, -0.03])
    f = Forecasts(point=last[None, :, None], target=(last * (1 + y))[:, None], last=last, cost=0.01)
    assert crps(f)[0] == pytest.approx(np.abs(y)) and METRICS["pct_return_mae"].loss(f)[0] == pytest.approx(np.abs(y))
    assert hit_loss(f)[0].tolist() == [0.5, 0.5] and strategy_loss(f)[0].tolist() == [0.0, 0.0]


def bootstrap_evaluator(series, max_samples=None, metric="pct_return_mae"):
    from compiled_opt.core.backend import Runtime
    from compiled_opt.core.data import splits
    from compiled_opt.core.evaluate import Evaluator
    from compiled_opt.core.registry import Plugins
    from compiled_opt.plugins.backends.bootstrap import BootstrapBackend

    plugins = Plugins.load()
    aggregators = {n: plugins.aggregators.get(n) for n in plugins.aggregators}
    rows = splits(len(series), 30, 20, 1).validation
    return Evaluator(
        BootstrapBackend(Runtime()),
        aggregators,
        series,
        rows,
        1,
        metric,
        max_samples=max_samples,
        levels=(0.2, 0.5, 0.8),
        cost=0.001,
    )


def test_an_evaluation_of_every_metric_is_the_metrics_on_its_own_samples(app_series):
    """The evaluator's losses equal the metrics applied to samples drawn by hand, through the sample cache or not."""
    from compiled_opt.core.data import windows
    from compiled_opt.core.randomness import Draws

    params = {"lookback": 40, "vol_scale": 1.1, "num_samples": 64, "aggregate": "trimmed_mean_10"}
    seeds = (3, 4, 5)
    direct = bootstrap_evaluator(app_series)(params, seeds, every_metric=True)
    cached = bootstrap_evaluator(app_series, max_samples=256)(params, seeds, every_metric=True)
    ev = bootstrap_evaluator(app_series)
    batch = windows(app_series, ev.rows, 41, 1)
    samples = ev.backend.sample(ev.backend.encode(batch, params), params, Draws(seeds, batch.window_ids))
    point = ev.aggregators["trimmed_mean_10"](samples, dim=2).numpy()
    f = Forecasts(
        point,
        batch.target.numpy(),
        batch.last_close.numpy(),
        samples=np.sort(samples.numpy(), axis=2),
        levels=(0.2, 0.5, 0.8),
        cost=0.001,
    )
    for name, metric in METRICS.items():
        assert direct.losses[name] == pytest.approx(metric.loss(f), rel=1e-12, abs=1e-15), name
        assert cached.losses[name] == pytest.approx(direct.losses[name], rel=1e-12, abs=1e-15), name
    assert direct.errors is direct.losses["pct_return_mae"] or np.array_equal(
        direct.errors, direct.losses["pct_return_mae"]
    )
    assert set(direct.naive_losses) == set(METRICS) and direct.naive_losses["hit_rate"] == pytest.approx(0.5)


def test_the_objective_may_be_any_metric(app_series):
    params = {"lookback": 40, "vol_scale": 1.1, "num_samples": 64, "aggregate": "median"}
    for name in ("crps", "hit_rate", "strategy_return"):
        ev = bootstrap_evaluator(app_series, metric=name)(params, (1, 2))
        full = bootstrap_evaluator(app_series)(params, (1, 2), every_metric=True)
        assert ev.metric == name and ev.errors == pytest.approx(full.losses[name], rel=1e-12, abs=1e-15)
        assert ev.naive_errors == pytest.approx(full.naive_losses[name], abs=1e-15)


def test_a_run_on_crps_stores_crps_and_every_metric_on_test(tmp_path, market_dir, capsys):
    import json

    from conftest import write_config

    from compiled_opt.commands.cli import main

    config = write_config(tmp_path, market_dir, trials=4, extra='[evaluation]\nmetric = "crps"\n')
    assert main(["run", str(config)]) == 0
    out = capsys.readouterr().out
    assert "Test metrics across jobs" in out and "strategy_return" in out
    record = json.loads((tmp_path / "hyperparams" / "bootstrap" / "APP.json").read_text())
    assert record["validation"]["metric"] == "crps" and record["validation"]["score"] > 0
    assert set(record["out_of_sample"]["metrics"]) == set(METRICS)
    hit = record["out_of_sample"]["metrics"]["hit_rate"]
    assert 0 <= hit["config"] <= 1 and hit["naive"] == 0.5  # losses: 1 - hit rate; the naive calls no direction
    assert main(["show", str(config), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["configs"][0]["test_metrics"]
    assert shown["crps"] == record["out_of_sample"]["metrics"]["crps"]


def test_exact_crps_and_pinball_agree_with_many_samples(tmp_path, app_series):
    """Toto's exact quantiles give the CRPS and the pinball loss that 4096 samples estimate."""
    pytest.importorskip("toto")
    from compiled_opt.core.backend import Runtime
    from compiled_opt.core.data import splits
    from compiled_opt.core.evaluate import Evaluator
    from compiled_opt.core.registry import Plugins
    from compiled_opt.plugins.backends.toto import TotoBackend
    from compiled_opt.plugins.backends.toto.checkpoint import random_model, save_checkpoint

    plugins = Plugins.load()
    backend = TotoBackend(Runtime(), checkpoint=str(save_checkpoint(random_model("tiny", seed=0), tmp_path / "t")))
    aggregators = {n: plugins.aggregators.get(n) for n in plugins.aggregators}
    ev = Evaluator(backend, aggregators, app_series, splits(len(app_series), 30, 20, 1).validation, 1)
    base = {"num_samples": 4096, "aggregate": "median", "context_length": 64}
    exact = ev({**base, "sampling": "exact"}, (1,), every_metric=True)
    sampled = ev({**base, "sampling": "monte_carlo"}, (1, 2, 3), every_metric=True)
    assert exact.exact and not sampled.exact
    for name in ("crps", "pinball", "pct_return_mae"):
        assert exact.losses[name].mean() == pytest.approx(sampled.losses[name].mean(), rel=0.03), name


def test_the_paired_standard_error_matches_a_simulation():
    """Over many simulated test sets (windows with shared difficulty, 3 runs of Monte Carlo noise), the
    printed SE is the spread of the difference it describes, and 2 SEs cover the truth about 95% of the time."""
    from compiled_opt.store.records import MetricComparison

    rng = np.random.default_rng(7)
    truth, differences, ses = 0.002, [], []
    for _ in range(4000):
        hard = rng.gamma(2.0, 0.01, size=40)  # a window's difficulty, shared by both configs
        defaults = hard + truth + rng.normal(0, 0.004, size=(3, 40))
        config = hard + rng.normal(0, 0.004, size=(3, 40))
        c = MetricComparison.of(config, defaults, hard)
        differences.append(c.difference)
        ses.append(c.se)
    differences, ses = np.array(differences), np.array(ses)
    assert np.sqrt(np.mean(ses**2)) == pytest.approx(differences.std(), rel=0.05)
    assert np.mean(np.abs(differences - truth) < 1.96 * ses) == pytest.approx(0.95, abs=0.015)


def test_the_docs_metric_plugin_registers_and_scores():
    """docs/metrics.md's example plugin, as written: it registers one metric that is the return's MSE."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
    namespace: dict = {}
    exec(re.search(r"```python\n(.*?)```", text, re.S).group(1), namespace)
    registered = {}
    namespace["compiled_opt_register_metrics"](lambda name, metric: registered.setdefault(name, metric))
    last, y, r_hat = np.array([10.0, 20.0]), np.array([0.01, -0.03]), np.array([0.02, 0.0])
    f = Forecasts(point=(last * (1 + r_hat))[None, :, None], target=(last * (1 + y))[:, None], last=last)
    assert registered["pct_return_mse"].loss(f)[0] == pytest.approx((r_hat - y) ** 2)
