"""The search: seeded, batched, incumbent first, best scored trial recommended, failures survived,
long budgets, exhaustive grids, the score memo and replay for resuming."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from compiled_opt.core.backend import Runtime
from compiled_opt.core.config import SearchConfig
from compiled_opt.core.data import read_series, splits
from compiled_opt.core.evaluate import Evaluator
from compiled_opt.core.registry import Plugins
from compiled_opt.core.space import Choices, Range, parametrization, parse_space
from compiled_opt.plugins.backends.bootstrap import BootstrapBackend
from compiled_opt.tuning.search import (
    CACHED_COUNT_COST,
    CACHED_POINT_COST,
    Logged,
    ResumeMismatch,
    ScoreMemo,
    SearchFailed,
    exhaustive_cost,
    search,
)

SPACE = {
    "lookback": Range(10, 120, integer=True),
    "vol_scale": Range(0.3, 2.0, log=True),
    "aggregate": Choices(("mean", "median", "quantile_0.30")),
    "num_samples": Choices((32, 64, 128), ordered=True),
}
BASE = dict(BootstrapBackend.defaults)
SEEDS = (1, 2)
# The optimizers the README suggests; each must survive the seed's budget and beyond.
DEFAULT_OPTIMIZER = SearchConfig().optimizer
SUGGESTED = ("NGOpt", "CMA", "TwoPointsDE", "PortfolioDiscreteOnePlusOne", "DiscreteLenglerOnePlusOne", "RandomSearch")


def make_evaluator(series) -> ScoreMemo:
    plugins = Plugins.load()
    rows = splits(len(series), 30, 20, 1).validation
    aggregators = {n: plugins.aggregators.get(n) for n in plugins.aggregators}
    return ScoreMemo(Evaluator(BootstrapBackend(Runtime()), aggregators, series, rows, 1))


@pytest.fixture
def evaluator(app_series):
    return make_evaluator(app_series)


def run(evaluator, space=SPACE, **kw):
    batches = []
    args = dict(optimizer="NGOpt", trials=10, batch=4, seed=3)
    args.update(kw)
    result = search(evaluator, space, BASE, SEEDS, on_batch=batches.append, **args)
    return result, batches


def test_seeded_search_is_reproducible_and_batched(evaluator):
    a, batches = run(evaluator)
    b, _ = run(make_evaluator(evaluator.evaluate.series))
    assert [len(x) for x in batches] == [4, 4, 2]
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert a.recommendation == b.recommendation
    for t in a.trials:
        assert SPACE["lookback"].contains(t.params["lookback"]) and isinstance(t.params["lookback"], int)
        assert t.params["aggregate"] in SPACE["aggregate"].values
    c, _ = run(evaluator, seed=4)
    assert [t.params for t in c.trials] != [t.params for t in a.trials]


def test_incumbent_is_the_first_candidate(evaluator):
    incumbent = {**BASE, "lookback": 77, "vol_scale": 0.9, "aggregate": "median", "num_samples": 64}
    result, _ = run(evaluator, incumbent=incumbent)
    assert result.incumbent_suggested and result.trials[0].params == incumbent


@pytest.mark.parametrize("outside", [{"lookback": 500}, {"lookback": 12.6}])
def test_incumbent_outside_the_space_is_not_suggested(evaluator, outside):
    """Out of range, or a fraction for an integer parameter (it would be evaluated as another value)."""
    incumbent = {**BASE, "vol_scale": 0.9, "aggregate": "median", "num_samples": 64, **outside}
    result, _ = run(evaluator, incumbent=incumbent)
    assert not result.incumbent_suggested and result.trials[0].params["lookback"] != outside["lookback"]


def test_recommendation_is_the_best_scored_trial(evaluator):
    result, _ = run(evaluator, trials=24, optimizer="CMA")
    best = min(result.trials, key=lambda t: t.score)
    assert result.recommendation == best.params
    assert all(result.recommendation != t.params or t.score == best.score for t in result.trials)


def test_parametrization_is_not_flagged_noisy():
    """With common random numbers a score is a deterministic function of the config (benchmarks/optimizers.py)."""
    assert parametrization(SPACE, 0).function.deterministic


@pytest.mark.parametrize("optimizer", SUGGESTED)
def test_suggested_optimizers_run_the_seed_budget_and_beyond(app_series, optimizer):
    """160 trials: past the point (60-80) where NGOpt's metamodel crashed under numpy 2.4."""
    result, batches = run(make_evaluator(app_series), optimizer=optimizer, trials=160, batch=4)
    assert len(result.trials) == 160 and sum(len(b) for b in batches) == 160
    assert all(t.score is not None for t in result.trials)


def test_ngopt_runs_300_trials_on_the_default_space(app_series):
    space = parse_space(BootstrapBackend.default_space, "default")
    result, _ = run(make_evaluator(app_series), space=space, trials=300, batch=4)
    assert len(result.trials) == 300


class Flaky:
    """Fails for every candidate with vol_scale above 1.2, like a model that cannot handle some values."""

    def __init__(self, memo):
        self.memo = memo
        self.calls = 0

    def lookup(self, params, seeds):
        self.calls += 1
        if params["vol_scale"] > 1.2:
            raise FloatingPointError("the model produced NaN")
        return self.memo.lookup(params, seeds)


@pytest.mark.parametrize("optimizer", ["NGOpt", "CMA", "TwoPointsDE"])
def test_a_failing_candidate_is_told_as_failed_and_the_search_goes_on(evaluator, optimizer):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing leaks to the user's console
        result, batches = run(Flaky(evaluator), optimizer=optimizer, trials=40)
    failed = [t for t in result.trials if t.score is None]
    assert failed and len(result.trials) == 40
    assert all("FloatingPointError: the model produced NaN" == t.error and "Traceback" in t.traceback for t in failed)
    assert result.recommendation["vol_scale"] <= 1.2
    assert sum(t.score is None for b in batches for t in b) == len(failed)


def test_a_search_whose_candidates_all_fail_fails(evaluator):
    class Broken:
        def lookup(self, params, seeds):
            raise RuntimeError("out of memory")

    with pytest.raises(SearchFailed, match="all 10 candidates failed; the first: RuntimeError: out of memory"):
        run(Broken())


def test_repeated_candidates_come_from_the_memo(evaluator):
    space = {"aggregate": Choices(("mean", "median")), "num_samples": Choices((32, 64), ordered=True)}
    result, _ = run(evaluator, space=space, trials=20, optimizer="RandomSearch", exhaustive=False)
    cached = [t for t in result.trials if t.cached]
    assert len({str(t.params) for t in result.trials}) <= 4 and len(cached) >= 16
    first = {str(t.params): t for t in result.trials if not t.cached}
    for t in cached:
        assert t.score == first[str(t.params)].score  # the same config and seeds: the same score


def test_exhaustive_scores_every_grid_point_and_finds_the_exact_best(evaluator):
    space = {"aggregate": Choices(("mean", "median", "quantile_0.30")), "num_samples": Choices((32, 64), ordered=True)}
    incumbent = {**BASE, "aggregate": "median", "num_samples": 64}
    result, batches = run(evaluator, space=space, trials=100, exhaustive=True, incumbent=incumbent)
    assert result.method == "exhaustive" and len(result.trials) == 6 and [len(b) for b in batches] == [4, 2]
    assert result.trials[0].params == incumbent
    scores = {(t.params["aggregate"], t.params["num_samples"]): t.score for t in result.trials}
    assert len(scores) == 6
    rec = result.recommendation
    assert (rec["aggregate"], rec["num_samples"]) == min(scores, key=scores.get)


def test_exhaustive_cost_counts_shared_draws():
    space = parse_space(
        {
            "num_samples": {"ordered": [64, 128, 256]},
            "aggregate": {"choice": ["mean", "median"]},
            "context_length": {"ordered": [128, 256]},
        },
        "s",
    )
    # aggregates share a draw and its table; each point is a lookup
    assert exhaustive_cost(space, None) == pytest.approx(6 + 6 * CACHED_COUNT_COST + 12 * CACHED_POINT_COST)
    # counts are prefixes of the largest draw, each with its own table
    assert exhaustive_cost(space, "num_samples") == pytest.approx(2 + 6 * CACHED_COUNT_COST + 12 * CACHED_POINT_COST)
    assert exhaustive_cost({"x": Range(0, 1)}, None) is None


def test_replay_retells_logged_trials_and_continues_identically(evaluator):
    full, full_batches = run(evaluator, trials=20)
    logged = [Logged(t.params, t.score) for b in full_batches[:3] for t in b]
    resumed, resumed_batches = run(evaluator, trials=20, replay=logged)
    assert [t.params for t in resumed.trials] == [t.params for t in full.trials]
    assert [t.score for t in resumed.trials] == [t.score for t in full.trials]
    assert resumed.recommendation == full.recommendation
    assert [[t.number for t in b] for b in resumed_batches] == [[t.number for t in b] for b in full_batches[3:]]
    wrong = [Logged({**logged[0].params, "lookback": 11}, logged[0].score)] + logged[1:]
    with pytest.raises(ResumeMismatch, match="trial 0"):
        run(evaluator, trials=20, replay=wrong)


def test_default_spaces_are_explored(market_dir):
    """A 100-trial search of the bootstrap default space visits at least 10 values of each numeric
    parameter, and symbols get different recommendations (NGOpt visited one lookback in 0.1)."""
    space = parse_space(BootstrapBackend.default_space, "default")
    recommendations = []
    for symbol in ("APP", "NU", "ARM"):
        memo = make_evaluator(read_series(market_dir / f"{symbol}.parquet"))
        result = search(memo, space, BASE, SEEDS, optimizer=DEFAULT_OPTIMIZER, trials=100, batch=4, seed=0)
        for name, entry in space.items():
            if isinstance(entry, Range):
                assert len({t.params[name] for t in result.trials}) >= 10, name
        recommendations.append(tuple(sorted(result.recommendation.items())))
    assert len(set(recommendations)) == 3


def one_by_one(self, count, name, aggregator, batch):
    """The aggregation before tables: each point applies its aggregator to its own slice of the cached draw."""
    return self.errors_of(count, aggregator, batch)


def test_exhaustive_search_through_tables_equals_aggregating_one_by_one(app_series, monkeypatch):
    """Every point of a grid of counts, aggregators and lookbacks: the same trials in the same order, scores
    equal to 1e-12 (the tables sum in another order), the same recommendation."""
    from compiled_opt.core.evaluate import CachedDraw

    plugins = Plugins.load()
    aggregators = {n: plugins.aggregators.get(n) for n in plugins.aggregators}
    space = {
        "num_samples": Choices((16, 48, 128), ordered=True),
        "aggregate": Choices(tuple(aggregators)),
        "lookback": Choices((20, 60), ordered=True),
    }
    rows = splits(len(app_series), 30, 20, 1).validation

    def exhaustive():
        memo = ScoreMemo(Evaluator(BootstrapBackend(Runtime()), aggregators, app_series, rows, 1, max_samples=128))
        return search(memo, space, BASE, SEEDS, optimizer="NGOpt", trials=1000, batch=4, seed=0, exhaustive=True)

    tables = exhaustive()
    monkeypatch.setattr(CachedDraw, "errors", one_by_one)
    old = exhaustive()
    assert len(tables.trials) == 3 * len(aggregators) * 2
    assert [t.params for t in tables.trials] == [t.params for t in old.trials]
    np.testing.assert_allclose([t.score for t in tables.trials], [t.score for t in old.trials], rtol=1e-12)
    assert tables.recommendation == old.recommendation


def test_the_memo_holds_evaluations_up_to_its_bound_and_rescores_the_same(app_series):
    """A memo bounded below two evaluations keeps the newest only; a config it let go is scored again, to the
    same errors (its draws are keyed by its seeds); the search keeps each trial's score and runs, not errors."""
    memo = make_evaluator(app_series)
    first = memo(BASE, SEEDS)
    memo.known.max_bytes = int(1.5 * first.nbytes)
    other = {**BASE, "lookback": BASE["lookback"] + 5}
    memo(other, SEEDS)
    again, held = memo.lookup(BASE, SEEDS)
    assert not held and np.allclose(again.errors, first.errors, rtol=1e-12, atol=0)
    assert memo.lookup(BASE, SEEDS)[1] and len(memo.known.entries) == 1
    reported = []
    result = search(
        memo,
        SPACE,
        BASE,
        SEEDS,
        optimizer="NGOpt",
        trials=8,
        batch=4,
        seed=3,
        on_batch=lambda trials: reported.extend(t.evaluation for t in trials),
    )
    assert all(e is not None for e in reported) and all(t.evaluation is None for t in result.trials)
    assert [t.runs for t in result.trials] == [len(SEEDS)] * 8
