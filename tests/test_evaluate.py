"""Batched evaluation: independent runs in one call, reproducible seeds, common random numbers, encode cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compiled_opt.core.backend import ContractError, Runtime
from compiled_opt.core.data import read_series, splits
from compiled_opt.core.evaluate import Evaluator
from compiled_opt.core.randomness import Draws, derive_seeds
from compiled_opt.core.registry import Plugins
from compiled_opt.plugins.backends.bootstrap import BootstrapBackend
from compiled_opt.store.records import Metrics


class CountingBootstrap(BootstrapBackend):
    def __init__(self, runtime: Runtime):
        super().__init__(runtime)
        self.encodes = 0

    def encode(self, batch, params):
        self.encodes += 1
        return super().encode(batch, params)


@pytest.fixture
def evaluator(app_series):
    plugins = Plugins.load()
    aggregators = {n: plugins.aggregators.get(n) for n in plugins.aggregators}
    rows = splits(len(app_series), 30, 20, 1).validation
    return Evaluator(CountingBootstrap(Runtime()), aggregators, app_series, rows, 1)


PARAMS = {"lookback": 40, "vol_scale": 1.0, "num_samples": 128, "aggregate": "mean"}


def test_batched_runs_equal_separate_single_run_calls(evaluator):
    seeds = tuple(derive_seeds(7, "search", 3))
    batched = evaluator(PARAMS, seeds)
    singles = [evaluator(PARAMS, (s,)) for s in seeds]
    assert batched.errors.shape == (3, 30)
    for r, single in enumerate(singles):
        np.testing.assert_array_equal(batched.errors[r], single.errors[0])
    assert batched.std == pytest.approx(np.std([s.mean for s in singles], ddof=1))


def test_same_seeds_reproduce_and_other_seeds_differ(evaluator):
    seeds = (1, 2, 3)
    a, b = evaluator(PARAMS, seeds), evaluator(PARAMS, seeds)
    np.testing.assert_array_equal(a.errors, b.errors)
    c = evaluator(PARAMS, (4, 5, 6))
    assert not np.array_equal(a.errors, c.errors)


def test_runs_are_independent(evaluator):
    """Across many runs, two runs' per-window errors are uncorrelated beyond what windows share."""
    ev = evaluator({**PARAMS, "num_samples": 16}, tuple(range(200)))
    centred = ev.errors - ev.errors.mean(axis=0)
    corr = np.corrcoef(centred)
    off_diag = corr[~np.eye(200, dtype=bool)]
    assert abs(off_diag.mean()) < 0.02
    # the spread of run means matches the spread predicted from per-window Monte Carlo noise
    predicted = np.sqrt(centred.var(axis=0, ddof=1).sum()) / ev.errors.shape[1]
    assert ev.std == pytest.approx(predicted, rel=0.15)


def test_common_random_numbers_share_draws_between_configs():
    draws_a = Draws((11, 12), torch.tensor([100, 101]))
    u_small = draws_a.uniform("bootstrap.pick", 64, 1)
    u_large = draws_a.uniform("bootstrap.pick", 256, 1)
    torch.testing.assert_close(u_small, u_large[:, :, :64])
    other_window_set = Draws((11, 12), torch.tensor([101]))
    torch.testing.assert_close(other_window_set.uniform("bootstrap.pick", 8, 1)[:, 0], u_large[:, 1, :8])


def test_paired_configs_are_positively_correlated(evaluator):
    seeds = tuple(range(40))
    a = evaluator({**PARAMS, "num_samples": 32}, seeds).per_run
    b = evaluator({**PARAMS, "num_samples": 32, "vol_scale": 1.05}, seeds).per_run
    c = evaluator({**PARAMS, "num_samples": 32, "vol_scale": 1.05}, tuple(range(40, 80))).per_run
    assert np.corrcoef(a, b)[0, 1] > 0.8
    assert abs(np.corrcoef(a, c)[0, 1]) < 0.5


def test_sampling_only_change_does_not_encode_again(evaluator):
    backend = evaluator.backend
    evaluator(PARAMS, (1, 2, 3))
    evaluator({**PARAMS, "vol_scale": 1.3, "num_samples": 64, "aggregate": "median"}, (1, 2, 3))
    assert backend.encodes == 1
    evaluator({**PARAMS, "lookback": 41}, (1, 2, 3))
    assert backend.encodes == 2


def test_statistics(evaluator):
    ev = evaluator(PARAMS, (1, 2, 3))
    singles = [evaluator(PARAMS, (s,)).mean for s in (1, 2, 3)]
    assert ev.mean == pytest.approx(np.mean(singles), rel=1e-12)  # the score is the mean of the runs' MAEs
    assert ev.sem == pytest.approx(ev.per_run.std(ddof=1) / np.sqrt(3))
    assert ev.window_sem == pytest.approx(ev.errors.mean(axis=0).std(ddof=1) / np.sqrt(30))
    record = Metrics.of(ev)
    assert record.num_predictions == 90 and len(record.per_run) == 3 and record.seeds == [1, 2, 3]
    assert record.price_mae > 0 and record.latency_s > 0
    assert record.skill == pytest.approx(1 - ev.mean / ev.naive_mae)


def test_errors_are_absolute_return_errors(evaluator, app_series):
    """Recompute window errors by hand for the mean aggregator: pred/last - 1 vs target/last - 1."""
    ev = evaluator(PARAMS, (5,))
    backend = evaluator.backend
    batch, state, *_ = evaluator._encoded(PARAMS)
    samples = backend.sample(state, PARAMS, Draws((5,), batch.window_ids))
    pred = samples.mean(dim=2)[0, :, 0]
    close = app_series.values[:, 3]
    rows = batch.target_rows
    expected = ((pred / close[rows - 1] - 1) - (close[rows] / close[rows - 1] - 1)).abs()
    np.testing.assert_allclose(ev.errors[0], expected.numpy(), rtol=1e-12)
    naive = (close[rows] / close[rows - 1] - 1).abs()  # the persistence forecast predicts a return of 0
    np.testing.assert_allclose(ev.naive_errors, naive.numpy(), rtol=1e-12)


def test_sample_cache_serves_smaller_counts_from_the_largest_draw(app_series):
    """Cached (draw 512 once, slice) and plain scoring agree; every count is drawn at 512 so the
    result does not depend on what was cached before."""
    plugins = Plugins.load()
    aggregators = {n: plugins.aggregators.get(n) for n in plugins.aggregators}
    rows = splits(len(app_series), 30, 20, 1).validation
    backend = CountingBootstrap(Runtime())
    cached = Evaluator(backend, aggregators, app_series, rows, 1, max_samples=512)
    plain = Evaluator(backend, aggregators, app_series, rows, 1)
    calls = []
    original = backend.sample
    backend.sample = lambda state, params, draws: calls.append(params["num_samples"]) or original(state, params, draws)
    for n, agg in ((64, "mean"), (256, "median"), (512, "trimmed_mean_10"), (64, "quantile_0.30")):
        params = {**PARAMS, "num_samples": n, "aggregate": agg}
        # the same keyed draws through shapes of another size: equal to rounding, not bit for bit
        np.testing.assert_allclose(cached(params, (1, 2, 3)).errors, plain(params, (1, 2, 3)).errors, rtol=1e-12)
    assert calls.count(512) == 2  # one draw for the cache (the 512 above), one for plain's own 512
    fresh = Evaluator(backend, aggregators, app_series, rows, 1, max_samples=512)
    params = {**PARAMS, "num_samples": 64, "aggregate": "quantile_0.30"}
    np.testing.assert_array_equal(fresh(params, (1, 2, 3)).errors, cached(params, (1, 2, 3)).errors)


class WrongShape(BootstrapBackend):
    def sample(self, state, params, draws):
        return super().sample(state, params, draws)[:, :, :, 0]


def test_a_backend_returning_the_wrong_shape_is_named(app_series):
    plugins = Plugins.load()
    aggregators = {n: plugins.aggregators.get(n) for n in plugins.aggregators}
    rows = splits(len(app_series), 30, 20, 1).validation
    ev = Evaluator(WrongShape(Runtime()), aggregators, app_series, rows, 1, name="wrong")
    with pytest.raises(
        ContractError,
        match=r"backend 'wrong': sample returned shape \[3, 30, 128\], expected "
        r"\[runs, windows, samples, horizon\] = \[3, 30, 128, 1\]",
    ):
        ev(PARAMS, (1, 2, 3))


def test_pooled_evaluation_is_the_symbols_side_by_side(market_dir):
    from compiled_opt.core.data import read_series
    from compiled_opt.core.evaluate import PooledEvaluator

    plugins = Plugins.load()
    aggregators = {n: plugins.aggregators.get(n) for n in plugins.aggregators}
    backend = BootstrapBackend(Runtime())
    parts = []
    for symbol in ("APP", "NU"):
        series = read_series(market_dir / f"{symbol}.parquet")
        parts.append(Evaluator(backend, aggregators, series, splits(len(series), 30, 20, 1).validation, 1))
    pooled = PooledEvaluator(parts)(PARAMS, (1, 2))
    singles = [p(PARAMS, (1, 2)) for p in parts]
    np.testing.assert_array_equal(pooled.errors, np.concatenate([s.errors for s in singles], axis=1))
    assert pooled.window_ids == singles[0].window_ids + singles[1].window_ids
    assert not set(singles[0].window_ids) & set(singles[1].window_ids)  # symbols never share draws
    assert pooled.naive_mae == pytest.approx(np.mean(np.concatenate([s.naive_errors for s in singles])))


def test_runs_get_distinct_seeds_and_distinct_errors(evaluator):
    seeds = tuple(derive_seeds(0, "search", 5))
    assert len(set(seeds)) == 5
    ev = evaluator(PARAMS, seeds)
    assert len({tuple(row) for row in ev.errors}) == 5


def test_seed_and_stream_never_alias():
    """compiled-opt 0.1 added seed and stream before mixing: (s, A) drew what (s + crc(A) - crc(B), B) drew."""
    from compiled_opt.core.randomness import stream_id

    rows = torch.tensor([100, 101])
    s = 12345
    shifted = s + stream_id("a.stream") - stream_id("b.stream")
    a = Draws((s,), rows).uniform("a.stream", 8)
    b = Draws((shifted,), rows).uniform("b.stream", 8)
    assert not torch.isclose(a, b).any()
    assert derive_seeds(1, "decision", 3, "APP", "m") != derive_seeds(1, "decision", 3, "NU", "m")
    assert derive_seeds(1, "decision", 3, 7) != derive_seeds(1, "decision", 3, 8)


def test_judge_pairs_only_evaluations_of_the_same_windows_and_seeds(evaluator, market_dir):
    from compiled_opt.core.stats import paired_differences
    from compiled_opt.plugins.policies.threshold import AnyImprovement
    from compiled_opt.tuning.acceptance import judge

    verdict = judge(AnyImprovement(), evaluator, {**PARAMS, "vol_scale": 1.2}, PARAMS, (1, 2, 3), (4, 5, 6))
    assert verdict.challenger.window_ids == verdict.incumbent.window_ids
    assert verdict.challenger.seeds == verdict.incumbent.seeds == (1, 2, 3)  # no confirmation: the search's seeds
    other = evaluator(PARAMS, (7, 8, 9))
    with pytest.raises(ValueError, match="different seeds"):
        paired_differences(verdict.challenger, other)
    series = read_series(market_dir / "NU.parquet")
    rows = splits(len(series), 30, 20, 1).validation
    nu = Evaluator(BootstrapBackend(Runtime()), evaluator.aggregators, series, rows, 1)
    with pytest.raises(ValueError, match="different windows"):
        paired_differences(verdict.challenger, nu(PARAMS, (1, 2, 3)))


def test_keyed_integers_are_uniform_on_their_range():
    from scipy import stats

    draws = Draws(tuple(range(4)), torch.arange(50))
    for high in (2, 7, 61, 250):
        ints = draws.integers(high, "test.ints", 400, 1)
        assert ints.dtype == torch.int64 and int(ints.min()) == 0 and int(ints.max()) == high - 1
        counts = torch.bincount(ints.flatten(), minlength=high).numpy()
        assert stats.chisquare(counts).pvalue > 1e-4
    with pytest.raises(ValueError, match="high must be in"):
        draws.integers(0, "test.ints", 4)


def all_aggregators():
    plugins = Plugins.load()
    return {n: plugins.aggregators.get(n) for n in plugins.aggregators}


@pytest.mark.parametrize("counts", [(1, 7, 64), (100, 333, 1024)])
def test_sample_cache_tables_equal_each_aggregator_on_its_own_draw(app_series, counts):
    """Every built-in aggregator at several counts, through the cache's tables (one sort and one weight-matrix
    product per count of a 1024-sample draw), equals that aggregator applied to a draw of that count. The
    errors are differences of returns (prices over the last close, about 1), so the product's other order of
    summation shows as ~1e-15 absolute: 1e-12 relative, with 1e-13 absolute for errors near 0."""
    rows = splits(len(app_series), 30, 20, 1).validation
    backend = BootstrapBackend(Runtime())
    cached = Evaluator(backend, all_aggregators(), app_series, rows, 1, max_samples=1024)
    plain = Evaluator(backend, all_aggregators(), app_series, rows, 1)
    for n in counts:
        for name in cached.aggregators:
            params = {**PARAMS, "num_samples": n, "aggregate": name}
            got, want = cached(params, (1, 2, 3)), plain(params, (1, 2, 3))
            for field in ("errors", "price_errors", "return_errors"):
                np.testing.assert_allclose(
                    getattr(got, field),
                    getattr(want, field),
                    rtol=1e-12,
                    atol=1e-13 if field != "price_errors" else 1e-10,
                    err_msg=name,
                )


def test_points_differing_only_in_the_aggregator_are_one_lookup(app_series, monkeypatch):
    """One draw serves every count and aggregator; each count is sorted once; no aggregator runs on its own."""
    from compiled_opt.core import aggregate

    sorts = []
    original_sort = aggregate.sort_last
    monkeypatch.setattr(aggregate, "sort_last", lambda x: sorts.append(x.shape[-1]) or original_sort(x))
    monkeypatch.setattr(aggregate.Aggregator, "__call__", lambda *a, **k: pytest.fail("aggregated one by one"))
    backend = CountingBootstrap(Runtime())
    draws = []
    original_sample = backend.sample
    backend.sample = lambda state, params, d: draws.append(params["num_samples"]) or original_sample(state, params, d)
    rows = splits(len(app_series), 30, 20, 1).validation
    cached = Evaluator(backend, all_aggregators(), app_series, rows, 1, max_samples=256)
    for n in (64, 256, 64):
        for name in cached.aggregators:
            cached({**PARAMS, "num_samples": n, "aggregate": name}, (1, 2, 3))
    assert draws == [256] and sorts == [64, 256]


def test_an_aggregator_that_is_no_l_statistic_is_applied_to_the_samples(app_series):
    """A plugin's plain callable, or an Aggregator subclass with its own __call__, still gets its own value."""
    from compiled_opt.core.aggregate import Aggregator

    class Largest(Aggregator):
        def __call__(self, samples, dim=-2):
            return samples.amax(dim)

    aggregators = {**all_aggregators(), "max": Largest("max"), "min": lambda samples, dim: samples.amin(dim)}
    rows = splits(len(app_series), 30, 20, 1).validation
    backend = BootstrapBackend(Runtime())
    cached = Evaluator(backend, aggregators, app_series, rows, 1, max_samples=256)
    batch, state, *_ = cached._encoded(PARAMS)
    samples = backend.sample(state, {**PARAMS, "num_samples": 64}, Draws((1, 2), batch.window_ids))
    for name, reduce in (("max", torch.amax), ("min", torch.amin)):
        got = cached({**PARAMS, "num_samples": 64, "aggregate": name}, (1, 2))
        np.testing.assert_allclose(
            got.price_errors, (reduce(samples, 2) - batch.target).abs().mean(-1).numpy(), rtol=1e-12
        )
    assert cached({**PARAMS, "num_samples": 64, "aggregate": "mean"}, (1, 2)).mean != got.mean


def test_bounded_cache_keeps_the_most_recently_used_within_its_bytes():
    from compiled_opt.core.evaluate import BoundedCache

    cache = BoundedCache(max_bytes=3 * 800)
    made = []
    for key in ("a", "b", "c", "a", "d"):  # 100 float64 each: three fit
        cache.get(key, lambda k=key: made.append(k) or torch.zeros(100, dtype=torch.float64))
    assert made == ["a", "b", "c", "d"] and list(cache.entries) == ["c", "a", "d"] and cache.bytes == 2400
    big = cache.get("e", lambda: {"x": torch.zeros(1000, dtype=torch.float64)})  # alone above the bound: kept
    assert list(cache.entries) == ["e"] and cache.bytes == 8000 and cache.get("e", lambda: None) is big


def test_evaluators_sharing_caches_reuse_each_others_encodes_and_draws(app_series, market_dir):
    """A pooled stage's evaluator and the same symbol's own: one encode and one draw between them; other
    rows or another symbol share nothing, and a shared result equals an unshared one."""
    from compiled_opt.core.evaluate import Caches

    caches = Caches.for_device("cpu")
    backend = CountingBootstrap(Runtime())
    draws = []
    original = backend.sample
    backend.sample = lambda state, params, d: draws.append(1) or original(state, params, d)
    rows = splits(len(app_series), 30, 20, 1).validation

    def evaluator(series, rows, shared=caches):
        return Evaluator(backend, all_aggregators(), series, rows, 1, caches=shared, max_samples=256)

    pooled, own = evaluator(app_series, rows), evaluator(app_series, rows)
    first = pooled({**PARAMS, "aggregate": "median"}, (1, 2, 3))
    again = own({**PARAMS, "aggregate": "median"}, (1, 2, 3))
    assert backend.encodes == 1 and len(draws) == 1
    np.testing.assert_array_equal(first.errors, again.errors)
    alone = evaluator(app_series, rows, None)({**PARAMS, "aggregate": "median"}, (1, 2, 3))
    np.testing.assert_array_equal(alone.errors, first.errors)
    assert backend.encodes == 2 and len(draws) == 2
    evaluator(app_series, range(rows.start - 1, rows.stop - 1))(PARAMS, (1, 2, 3))
    nu = read_series(market_dir / "NU.parquet")
    evaluator(nu, splits(len(nu), 30, 20, 1).validation)(PARAMS, (1, 2, 3))
    assert backend.encodes == 4 and len(draws) == 4
