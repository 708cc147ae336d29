"""Racing in the search: the leader gets every run, clearly worse candidates stop early, only new runs
are evaluated, equal candidates are rarely stopped, the search recommends the leader, and a resumed
racing search continues exactly as the uninterrupted one."""

from __future__ import annotations

import numpy as np
import pytest
from test_sequential import Synthetic, config

from compiled_opt.core.backend import Runtime
from compiled_opt.core.data import splits
from compiled_opt.core.evaluate import Evaluator
from compiled_opt.core.randomness import derive_seeds
from compiled_opt.core.registry import Plugins
from compiled_opt.core.space import Choices, Range
from compiled_opt.plugins.backends.bootstrap import BootstrapBackend
from compiled_opt.tuning.acceptance import more_seeds
from compiled_opt.tuning.racing import Race
from compiled_opt.tuning.search import Logged, ScoreMemo, params_key, search

SEEDS = (11, 12, 13)
SPACE = {
    "lookback": Range(10, 120, integer=True),
    "vol_scale": Range(0.3, 2.0, log=True),
    "aggregate": Choices(("mean", "median", "quantile_0.30")),
    "num_samples": Choices((32, 64, 128), ordered=True),
}


def test_the_leader_gets_every_run_and_a_clearly_worse_candidate_stops_at_the_first_look():
    ev = Synthetic()
    race = Race(ScoreMemo(ev))
    extended = more_seeds(SEEDS, 12)
    leader, _ = race.lookup(config("a", id=0), SEEDS)
    assert leader.runs == 12 and leader.seeds == extended
    assert ev.calls == [("a", extended[:3]), ("a", extended[3:6]), ("a", extended[6:12])]
    worse, known = race.lookup(config("b", -0.05, id=1), SEEDS)
    assert worse.runs == 3 and not known and worse.mean > leader.mean
    assert ev.calls[3:] == [("b", extended[:3])]  # the leader's runs came from the memo
    better, _ = race.lookup(config("c", 0.02, id=2), SEEDS)
    assert better.runs == 12 and race.leader == (config("c", 0.02, id=2), better.mean)
    again, known = race.lookup(config("b", -0.05, id=1), SEEDS)
    assert known and again.runs == 3
    assert race.summary()["stopped"] == {"1": 2} and race.summary()["full"] == 2


def test_equal_candidates_are_rarely_stopped():
    """A candidate as good as the leader is stopped at most about alpha of the time (here: 300 races)."""
    stopped = []
    for base in range(300):
        seeds = tuple(derive_seeds(base, "search", 3))
        race = Race(ScoreMemo(Synthetic(shared=0.5)))
        race.lookup(config("a", id=0), seeds)
        stopped.append(race.lookup(config("b", id=1), seeds)[0].runs < 12)
    assert np.mean(stopped) <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 300)


def test_exact_candidates_are_not_raced():
    ev = Synthetic()
    race = Race(ScoreMemo(ev))
    race.lookup(config("a", id=0), SEEDS)
    exact, _ = race.lookup(config("x", 0.01, exact=True), SEEDS)
    assert exact.exact and race.leader[0]["name"] == "x"
    worse, _ = race.lookup(config("b", -0.05, id=1), SEEDS)  # raced against the exact leader
    assert worse.runs == 3


@pytest.fixture
def bootstrap(app_series):
    plugins = Plugins.load()
    rows = splits(len(app_series), 30, 20, 1).validation
    return Evaluator(
        BootstrapBackend(Runtime()),
        {n: plugins.aggregators.get(n) for n in plugins.aggregators},
        app_series,
        rows,
        1,
        max_samples=128,
    )


def race_search(memo, replay=(), **kw):
    race = Race(memo, replay=replay)
    batches = []
    result = search(
        race,
        SPACE,
        dict(BootstrapBackend.defaults),
        SEEDS,
        optimizer="NGOpt",
        trials=16,
        batch=4,
        seed=3,
        incumbent=BootstrapBackend.defaults,
        replay=replay,
        on_batch=batches.append,
        **kw,
    )
    return result, batches, race


def test_racing_search_recommends_the_leader_and_spends_fewer_runs(bootstrap):
    counted = []

    def counting(params, seeds):
        counted.append(len(seeds))
        return bootstrap(params, seeds)

    result, _, race = race_search(ScoreMemo(counting))
    runs = [t.runs for t in result.trials]
    assert result.recommendation == race.leader[0] and set(runs) <= {3, 6, 12} and 3 in runs
    best = min(t.score for t in result.trials)
    assert next(t for t in result.trials if t.params == result.recommendation).runs == 12
    assert all(t.score > best for t in result.trials if t.runs < 12)
    reached: dict[str, int] = {}  # every run is evaluated once: a config costs the most runs it reached
    for t in result.trials:
        reached[params_key(t.params)] = max(reached.get(params_key(t.params), 0), t.runs)
    assert sum(counted) == sum(reached.values()) < 12 * len(reached)


def test_resumed_racing_search_continues_identically(bootstrap):
    full, batches, _ = race_search(ScoreMemo(bootstrap))
    logged = [Logged(t.params, t.score) for b in batches[:2] for t in b]
    resumed, _, _ = race_search(ScoreMemo(bootstrap), replay=logged)
    assert [t.params for t in resumed.trials] == [t.params for t in full.trials]
    assert [t.score for t in resumed.trials] == [t.score for t in full.trials]
    assert resumed.recommendation == full.recommendation


def test_bad_options():
    with pytest.raises(ValueError, match="spending must be one of"):
        Race(ScoreMemo(Synthetic()), spending="x")
    with pytest.raises(ValueError, match="alpha must be between 0 and 0.5"):
        Race(ScoreMemo(Synthetic()), alpha=0.5)


def test_racing_runs_end_to_end_from_the_config(tmp_path, market_dir, capsys):
    from conftest import write_config

    from compiled_opt.commands.cli import main
    from compiled_opt.store.stores import read_trials

    config = write_config(tmp_path, market_dir, trials=12, extra="")
    config.write_text(config.read_text().replace("[search]", "[search]\nracing = true\nracing_max_runs = 12"))
    assert main(["run", str(config), "-q"]) == 0
    rows = read_trials(next((tmp_path / "runs").iterdir()))
    runs = {len(r.per_run) for r in rows if r.score is not None}
    assert runs <= {3, 6, 12} and 12 in runs  # leaders get every run, clearly worse candidates stop early


def test_racing_through_tables_equals_aggregating_one_by_one(app_series, monkeypatch):
    """A racing exhaustive search over counts and aggregators: the same trials, runs and recommendation
    whether a cached draw's points come from its tables or from each aggregator on its own."""
    from test_search import one_by_one

    from compiled_opt.core.evaluate import CachedDraw

    plugins = Plugins.load()
    aggregators = {n: plugins.aggregators.get(n) for n in plugins.aggregators}
    space = {"num_samples": Choices((32, 128), ordered=True), "aggregate": Choices(tuple(aggregators))}
    rows = splits(len(app_series), 30, 20, 1).validation

    def raced():
        memo = ScoreMemo(Evaluator(BootstrapBackend(Runtime()), aggregators, app_series, rows, 1, max_samples=128))
        race = Race(memo)
        return search(
            race,
            space,
            dict(BootstrapBackend.defaults),
            SEEDS,
            optimizer="NGOpt",
            trials=100,
            batch=4,
            seed=0,
            exhaustive=True,
        ), race

    tables, race = raced()
    monkeypatch.setattr(CachedDraw, "errors", one_by_one)
    old, old_race = raced()
    assert [t.params for t in tables.trials] == [t.params for t in old.trials]
    assert [t.runs for t in tables.trials] == [t.runs for t in old.trials]
    assert 3 in {t.runs for t in tables.trials}  # some candidates were stopped early
    np.testing.assert_allclose([t.score for t in tables.trials], [t.score for t in old.trials], rtol=1e-12)
    assert tables.recommendation == old.recommendation and race.summary() == old_race.summary()
