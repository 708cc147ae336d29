"""Each built-in backend's default space is really searched: a 100-trial run visits at least 10 values
of every parameter that has that many, and symbols get their own recommendations (compiled-opt 0.1's
NGOpt visited one lookback and one vol_scale in 480 trials)."""

from __future__ import annotations

import json

import pytest
from conftest import write_config

from compiled_opt.commands.checkpoint import options_toml, write_random
from compiled_opt.commands.cli import main
from compiled_opt.core.registry import Plugins
from compiled_opt.core.space import Choices, Range, parse_space
from compiled_opt.store.stores import ConfigStore, read_trials


def many_valued(space) -> list[str]:
    """The parameters with at least 10 possible values: ranges, and choices of 10 or more numbers."""

    def counts(entry) -> bool:
        if isinstance(entry, Range):
            return entry.hi - entry.lo + 1 >= 10 if entry.integer else True
        return (
            isinstance(entry, Choices)
            and len(entry.values) >= 10
            and all(isinstance(v, (int, float)) for v in entry.values)
        )

    return [name for name, entry in space.items() if counts(entry)]


@pytest.mark.parametrize("backend", ["bootstrap", "toto", "kronos"])
def test_a_100_trial_search_explores_the_default_space(backend, tmp_path, market_dir):
    cls = Plugins.load().backends.get(backend)
    options = "" if backend == "bootstrap" else options_toml(write_random(backend, tmp_path / "ckpt", "tiny"))
    models = f'[models.m]\nbackend = "{backend}"\n{options}\n'
    config = write_config(tmp_path, market_dir, trials=100, models=models)
    assert main(["run", str(config), "-q"]) == 0
    rows = read_trials(next((tmp_path / "runs").iterdir()))
    space = parse_space(cls.default_space, "default")
    store = ConfigStore(tmp_path / "hyperparams")
    recommendations = []
    for symbol in ("APP", "NU"):
        params = [json.loads(r.params) for r in rows if r.symbol == symbol]
        assert len(params) >= 100
        for name in many_valued(space):
            assert len({p[name] for p in params}) >= 10, (backend, symbol, name)
        recommendations.append(store.load("m", symbol).search.challenger)
    assert recommendations[0] != recommendations[1]
