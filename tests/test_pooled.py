"""The pooled stage: one config per model from every symbol's windows, then per-symbol configs only
when a paired test over the symbol's windows says they beat it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write_config

from compiled_opt.commands.cli import main
from compiled_opt.core.evaluate import Evaluation
from compiled_opt.store.records import JobId
from compiled_opt.store.stores import RunDir, read_trials
from compiled_opt.tuning.worker import pooled_gate


def test_pooled_stage_runs_first_and_symbols_start_from_it(tmp_path, market_dir, capsys):
    config = write_config(tmp_path, market_dir, trials=8, extra="[pooled]\nenabled = true\n")
    config.write_text(config.read_text().replace('symbols = ["APP", "NU"]', 'symbols = ["APP", "NU", "ARM"]'))
    assert main(["run", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.index("Pooled stage pooled/bootstrap") < out.index("Optimizing bootstrap (backend bootstrap) for APP")
    run = next((tmp_path / "runs").iterdir())
    pooled = RunDir(run.parent, run.name).load_outcomes()[JobId("bootstrap")].config
    rows = read_trials(run)
    assert {r.stage for r in rows if r.job == JobId("bootstrap")} == {"pooled"}
    assert sum(r.job == JobId("bootstrap") for r in rows) == 8
    # a pooled trial scores every symbol's validation windows: 3 symbols x 30 windows x 3 runs
    assert {len(r.per_run) for r in rows if r.stage == "pooled"} == {3}
    for symbol in ("APP", "NU", "ARM"):
        rec = json.loads((tmp_path / "hyperparams" / "bootstrap" / f"{symbol}.json").read_text())
        assert rec["search"]["pooled_config"] == pooled
        first = next(r for r in rows if r.job == JobId("bootstrap", symbol) and r.trial == 0)
        assert json.loads(first.params) == pooled  # the pooled config is each symbol's first candidate
        if rec["status"] == "tuned":  # its own config beat the pooled one in the gate
            gate = rec["decision"]["pooled_gate"]
            assert gate["accept"] and gate["p_value"] < 0.05
        elif rec["status"] == "pooled":
            assert rec["config"] == pooled


def evaluation(window_errors, runs=3) -> Evaluation:
    errors = np.tile(np.asarray(window_errors, float), (runs, 1))
    return Evaluation(errors, errors, tuple(range(runs)), tuple(range(errors.shape[1])), 0.0)


def test_the_gate_is_a_one_sided_paired_t_test_over_windows():
    from scipy import stats

    rng = np.random.default_rng(3)
    pooled = rng.uniform(0.01, 0.03, 40)
    own = pooled - 0.002 + rng.normal(0, 0.003, 40)
    gate = pooled_gate(evaluation(own), evaluation(pooled), 0.05)
    reference = stats.ttest_rel(pooled, own, alternative="greater")
    assert gate.p_value == pytest.approx(reference.pvalue, rel=1e-10)
    assert gate.statistic == pytest.approx(reference.statistic, rel=1e-10) and gate.df == 39
    assert gate.accept == (reference.pvalue < 0.05)
    worse = pooled_gate(evaluation(pooled + 0.001), evaluation(pooled), 0.05)
    assert not worse.accept and worse.p_value == 1.0  # worse on every window: no spread, never better


def test_false_gate_acceptances_happen_at_the_level_alpha():
    """Own and pooled equally good in truth: the gate lets the own config through about 5% of the time."""
    rng = np.random.default_rng(11)
    accepted = []
    for _ in range(2000):
        level = rng.uniform(0.01, 0.03, 30)
        own, pooled = level + rng.normal(0, 0.002, 30), level + rng.normal(0, 0.002, 30)
        accepted.append(pooled_gate(evaluation(own), evaluation(pooled), 0.05).accept)
    rate = np.mean(accepted)
    assert abs(rate - 0.05) < 3 * np.sqrt(0.05 * 0.95 / 2000)


def test_symbols_reuse_the_pooled_stages_encodes_and_draws_without_changing_a_score(tmp_path, market_dir, monkeypatch):
    """A worker's caches serve the pooled stage and then each symbol's own search: the same trials and
    scores as evaluators with caches of their own, with fewer encodes and draws."""
    from compiled_opt.core.evaluate import CACHE_BYTES, SAMPLE_CACHE_BYTES, BoundedCache, Caches, Evaluator
    from compiled_opt.plugins.backends.bootstrap import BootstrapBackend

    models = """
[models.bootstrap]
backend = "bootstrap"
[models.bootstrap.space]
lookback = { ordered = [20, 40] }
num_samples = { ordered = [32, 64] }
aggregate = { choice = ["mean", "median", "quantile_0.30"] }
"""
    calls = {"encode": 0, "sample": 0}
    for method in calls:
        original = getattr(BootstrapBackend, method)
        monkeypatch.setattr(
            BootstrapBackend,
            method,
            lambda *a, _o=original, _m=method, **k: calls.__setitem__(_m, calls[_m] + 1) or _o(*a, **k),
        )

    def run(directory):
        directory.mkdir()
        config = write_config(directory, market_dir, trials=20, models=models, extra="[pooled]\nenabled = true\n")
        config.write_text(config.read_text().replace("[search]\n", '[search]\nseed = 0\nexhaustive = "always"\n'))
        calls.update(dict.fromkeys(calls, 0))
        assert main(["run", str(config), "-q"]) == 0
        rows = read_trials(next((directory / "runs").iterdir()))
        return [(str(r.job), r.trial, r.params, r.score) for r in rows], dict(calls)

    shared, shared_calls = run(tmp_path / "shared")
    own = Evaluator.__init__

    def own_caches(self, *args, **kwargs):
        own(self, *args, **kwargs)
        self.caches = Caches(BoundedCache(CACHE_BYTES), BoundedCache(SAMPLE_CACHE_BYTES))

    monkeypatch.setattr(Evaluator, "__init__", own_caches)
    alone, alone_calls = run(tmp_path / "alone")
    assert sorted(shared) == sorted(alone) and len(shared) == 3 * 12  # the pooled stage and 2 symbols, 12 points each
    assert shared_calls["encode"] < alone_calls["encode"] and shared_calls["sample"] < alone_calls["sample"]
