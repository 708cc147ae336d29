"""The Nevergrad search: seeded, batched, incumbent first, recommendation returned."""

from __future__ import annotations

import pytest

from compiled_opt.engine.backend import Runtime
from compiled_opt.engine.data import splits
from compiled_opt.engine.evaluate import Evaluator
from compiled_opt.engine.registry import Plugins
from compiled_opt.engine.search import search
from compiled_opt.engine.space import Choices, Range
from compiled_opt.plugins.bootstrap import BootstrapBackend

SPACE = {"lookback": Range(10, 120, integer=True), "vol_scale": Range(0.3, 2.0, log=True),
         "aggregate": Choices(("mean", "median", "quantile_0.30")), "num_samples": Choices((32, 64, 128), ordered=True)}
BASE = dict(BootstrapBackend.defaults)


@pytest.fixture
def evaluator(app_series):
    plugins = Plugins.load()
    rows = splits(len(app_series), 30, 20, 1).validation
    return Evaluator(BootstrapBackend(Runtime()), {n: plugins.aggregators.get(n) for n in plugins.aggregators},
                     app_series, rows, 1)


def run(evaluator, **kw):
    batches = []
    args = dict(optimizer="NGOpt", trials=10, batch=4, seed=3)
    args.update(kw)
    result = search(evaluator, SPACE, BASE, (1, 2), on_batch=batches.append, **args)
    return result, batches


def test_seeded_search_is_reproducible_and_batched(evaluator):
    a, batches = run(evaluator)
    b, _ = run(evaluator)
    assert [len(x) for x in batches] == [4, 4, 2]
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert a.recommendation == b.recommendation
    for t in a.trials:
        assert SPACE["lookback"].contains(t.params["lookback"]) and isinstance(t.params["lookback"], int)
        assert t.params["aggregate"] in SPACE["aggregate"].values
    assert len({str(t.params) for t in a.trials}) > 5


def test_incumbent_is_the_first_candidate(evaluator):
    incumbent = {**BASE, "lookback": 77, "vol_scale": 0.9, "aggregate": "median", "num_samples": 64}
    result, _ = run(evaluator, incumbent=incumbent)
    assert result.incumbent_suggested and result.trials[0].params == incumbent


def test_incumbent_outside_the_space_is_not_suggested(evaluator):
    result, _ = run(evaluator, incumbent={**BASE, "lookback": 500})
    assert not result.incumbent_suggested and result.trials[0].params["lookback"] != 500


def test_recommendation_comes_from_the_optimizer(evaluator):
    result, _ = run(evaluator, trials=16)
    assert set(result.recommendation) == set(BASE)
    assert any(t.params == result.recommendation for t in result.trials)
