"""The ``paired`` acceptance policy and the acceptance simulation benchmark."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as st

from compiled_opt.core.errors import OptionError, UsageError
from compiled_opt.core.evaluate import Evaluation, Evaluator
from compiled_opt.core.randomness import derive_seeds
from compiled_opt.core.registry import Plugins
from compiled_opt.plugins.policies.paired import Paired
from compiled_opt.tuning.acceptance import judge

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "acceptance_sim.py"
REQUIRED = (
    "challenger_mean",
    "incumbent_mean",
    "mean_difference",
    "se_difference",
    "statistic",
    "p_value",
    "df",
    "seeds",
    "test",
    "mc_se",
    "window_se",
    "relative_improvement",
    "lower_bound",
    "fresh_seeds",
)


def evaluation(errors, seeds=(11, 12, 13, 14, 15, 16), exact=False) -> Evaluation:
    errors = np.asarray(errors, dtype=float)
    return Evaluation(
        errors=errors,
        price_errors=100 * errors,
        seeds=() if exact else tuple(seeds[: len(errors)]),
        window_ids=tuple(range(100, 100 + errors.shape[1])),
        latency_s=0.0,
        exact=exact,
    )


def pair(gain=0.0, runs=3, windows=30, mc=0.001, shared=0.9, seed=0):
    """Incumbent and challenger errors around per-window levels; MC noise partly shared (CRN)."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(0.01, 0.04, windows)
    common = rng.normal(size=(runs, windows))
    own = rng.normal(size=(2, runs, windows))
    noise = [mc * (np.sqrt(shared) * common + np.sqrt(1 - shared) * own[i]) for i in range(2)]
    return evaluation(np.abs((1 - gain) * level + noise[0])), evaluation(np.abs(level + noise[1]))


@pytest.fixture(scope="module")
def sim():
    sys.path.insert(0, str(BENCHMARK.parent))  # as when run as a script: its sibling `market` module
    spec = importlib.util.spec_from_file_location("acceptance_sim", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_registered_through_entry_point():
    policies = Plugins.load().policies
    assert policies.get("paired") is Paired
    assert "entry point 'paired'" in policies.source("paired")


def test_clearly_better_challenger_is_accepted_with_small_p():
    ch, inc = pair(gain=0.05)
    decision = Paired().decide(ch, inc)
    assert decision.accept
    assert decision.stats["p_value"] < 1e-4
    assert decision.reason.startswith("Improvement: ")
    assert "p=" in decision.reason and "confidence" in decision.reason


def test_worse_challenger_is_rejected():
    inc, ch = pair(gain=0.05)
    decision = Paired().decide(ch, inc)
    assert not decision.accept and decision.stats["p_value"] > 0.99
    assert decision.reason.startswith("No significant improvement")


def test_identical_configs_are_rejected():
    ch, _ = pair()
    decision = Paired().decide(ch, ch)
    assert not decision.accept
    assert decision.stats["p_value"] == 1.0 and decision.stats["mean_difference"] == 0.0
    assert decision.reason.startswith("No difference")


@pytest.mark.parametrize("scope", ["runs", "windows"])
def test_false_accepts_at_nominal_level_on_equal_configs(scope):
    """Equal in truth, heteroscedastic, non-normal |error| noise: p-values ~ uniform, accepts ~ alpha."""
    policy = Paired(scope=scope)
    p = np.array([policy.decide(*pair(mc=0.004, shared=0.5, seed=s)).stats["p_value"] for s in range(1500)])
    assert 0.03 <= (p < 0.05).mean() <= 0.075
    assert st.kstest(p, "uniform").pvalue > 1e-3


def test_single_window_runs_test_is_the_paired_t_test():
    ch, inc = pair(gain=0.01, runs=5, windows=1, mc=0.0005, seed=3)
    ref = st.ttest_rel(inc.errors[:, 0], ch.errors[:, 0], alternative="greater")
    stats = Paired().decide(ch, inc).stats
    assert stats["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert stats["statistic"] == pytest.approx(ref.statistic, rel=1e-9)
    assert stats["df"] == pytest.approx(4)


def test_windows_scope_is_the_t_test_over_run_averaged_windows():
    ch, inc = pair(gain=0.01, seed=4)
    ref = st.ttest_rel(inc.errors.mean(0), ch.errors.mean(0), alternative="greater")
    stats = Paired(scope="windows").decide(ch, inc).stats
    assert stats["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert stats["df"] == 29 and stats["se_difference"] == stats["window_se"]


def test_runs_pool_window_variances():
    """Homogeneous windows: the pooled test has about W (R - 1) degrees of freedom, not R - 1."""
    ch, inc = pair(gain=0.01, seed=5)
    stats = Paired().decide(ch, inc).stats
    assert 20 < stats["df"] <= 60 and stats["se_difference"] == stats["mc_se"]
    d = inc.errors - ch.errors
    assert stats["mc_se"] == pytest.approx(np.sqrt(d.var(axis=0, ddof=1).sum() / (3 * 30**2)))


def test_scopes_ask_different_questions():
    """Tiny Monte Carlo noise, a small mean gain and large window-to-window swings: runs says yes, windows no."""
    rng = np.random.default_rng(7)
    level = rng.uniform(0.02, 0.03, 30)
    swing = 0.004 * np.where(np.arange(30) % 2, 1.0, -1.0) + 0.0003
    inc = evaluation(level + 1e-5 * rng.normal(size=(3, 30)))
    ch = evaluation(level - swing + 1e-5 * rng.normal(size=(3, 30)))
    assert Paired(scope="runs").decide(ch, inc).accept
    assert not Paired(scope="windows").decide(ch, inc).accept


def test_min_effect_is_a_margin():
    ch, inc = pair(gain=0.01, mc=0.00002)
    assert Paired(min_effect=0.005).decide(ch, inc).accept
    decision = Paired(min_effect=0.02).decide(ch, inc)
    assert not decision.accept and "beyond 2%" in decision.reason
    assert decision.stats["margin"] == pytest.approx(0.02 * inc.mean)
    assert decision.stats["statistic"] < 0


def test_stats_hold_every_number_and_are_json():
    ch, inc = pair(gain=0.02)
    for policy in (Paired(), Paired(scope="windows")):
        stats = policy.decide(ch, inc).stats
        assert set(REQUIRED) <= set(stats)
        assert stats["seeds"] == [11, 12, 13]
        assert stats["challenger_mean"] == ch.mean and stats["incumbent_mean"] == inc.mean
        assert stats["mean_difference"] == pytest.approx(inc.mean - ch.mean)
        json.dumps(stats, allow_nan=False)


def test_exact_evaluations_decide_on_the_difference():
    level = np.linspace(0.01, 0.03, 30)[None]
    better, worse = evaluation(0.99 * level, exact=True), evaluation(level, exact=True)
    accepted = Paired().decide(better, worse)
    assert accepted.accept and "exact evaluations" in accepted.reason and accepted.stats["p_value"] == 0.0
    rejected = Paired().decide(worse, better)
    assert not rejected.accept and "exact evaluations" in rejected.reason
    assert Paired(min_effect=0.02).decide(better, worse).accept is False
    windows = Paired(scope="windows").decide(better, worse)
    assert windows.stats["statistic"] is not None and windows.stats["df"] == 29
    for decision in (accepted, rejected, windows):
        assert set(REQUIRED) <= set(decision.stats)
        json.dumps(decision.stats, allow_nan=False)


def test_sampled_challenger_against_exact_incumbent():
    ch, inc = pair(gain=0.03)
    exact = evaluation(inc.errors.mean(0, keepdims=True), exact=True)
    decision = Paired().decide(ch, exact)
    assert decision.accept and decision.stats["runs"] == 3 and decision.stats["seeds"] == [11, 12, 13]


def test_one_run_cannot_be_tested_over_runs():
    ch, inc = pair(gain=0.05, runs=1)
    decision = Paired().decide(ch, inc)
    assert not decision.accept and "at least 2 evaluation runs" in decision.reason
    json.dumps(decision.stats, allow_nan=False)
    assert Paired(scope="windows").decide(ch, inc).accept


def test_unpairable_evaluations_are_refused():
    ch, inc = pair()
    shifted = Evaluation(ch.errors, ch.price_errors, ch.seeds, tuple(r + 1 for r in ch.window_ids), 0.0)
    with pytest.raises(ValueError, match="different windows"):
        Paired().decide(shifted, inc)
    with pytest.raises(ValueError, match="different seeds"):
        Paired().decide(evaluation(ch.errors[:2]), inc)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"scope": "x"}, "scope: must be 'runs' or 'windows', not 'x'"),
        ({"alpha": 0.7}, "alpha: must be between 0 and 0.5"),
        ({"alpha": 0}, "alpha: must be between 0 and 0.5"),
        ({"min_effect": -0.01}, "min_effect: must be a fraction in [0, 1)"),
    ],
)
def test_bad_options(options, message):
    key, text = message.split(": ", 1)
    with pytest.raises(OptionError, match=re.escape(text)) as e:
        Paired(**options)
    assert e.value.key == key
    with pytest.raises(UsageError, match=re.escape(f"acceptance.options.{message}")):
        Plugins.load().policies.build("paired", options, "acceptance.options")


def test_judge_confirms_on_fresh_seeds_with_real_evaluator(sim):
    plugins = Plugins.load()
    series = sim.load_symbol("AEM")
    ev = Evaluator(
        sim.SimBackend(sim.Runtime()),
        {"mean": plugins.aggregators.get("mean")},
        series,
        range(len(series) - 50, len(series) - 20),
        1,
    )
    search, fresh = tuple(derive_seeds(1, "search", 3)), tuple(derive_seeds(1, "confirm", 3))
    incumbent = {**sim.SimBackend.defaults, "spread": 0.5}
    challenger = {**incumbent, "num_samples": 96, "bias": 0.3}
    for policy, seeds in ((Paired(), fresh), (Paired(confirm=False), search)):
        verdict = judge(policy, ev, challenger, incumbent, search, fresh)
        assert verdict.decision.stats["seeds"] == list(seeds) == list(verdict.incumbent.seeds)
        assert verdict.decision.stats["fresh_seeds"] is policy.confirm
    # Runs do not depend on what else is in the batch: the benchmark scores all repetitions at once.
    batched = ev(incumbent, search + fresh)
    assert np.array_equal(batched.errors[3:], ev(incumbent, fresh).errors)


def test_quick_simulation_separates_the_policies(sim):
    result = sim.run(reps=100, calibration_runs=400)
    rates = result["policies"]
    assert 0.35 <= rates["any_improvement"]["aa_accept"]["rate"] <= 0.65
    assert rates["any_improvement"]["flat_accept"]["rate"] >= 0.9
    assert rates["paired[scope=runs]"]["aa_accept"]["rate"] <= 0.15
    assert rates["paired[scope=runs]"]["flat_accept"]["rate"] <= 0.15
    assert rates["paired[scope=runs,confirm=false]"]["flat_accept"]["rate"] >= 0.25
    assert rates["paired[scope=runs]"]["power_5pct"]["rate"] >= 0.9
    assert rates["sequential"]["aa_accept"]["rate"] <= 0.15 and rates["sequential"]["flat_accept"]["rate"] <= 0.15
    assert rates["sequential"]["power_1pct"]["rate"] >= 0.85
    assert all(r["mean_runs"] == 3 for r in rates["paired[scope=runs]"].values())
    assert all(3 <= r["mean_runs"] <= 6 for r in rates["sequential"].values())
    assert rates["sequential[futility=0]"]["aa_accept"]["mean_runs"] > 10  # equal configs go to the last look
    check = rates["paired[scope=runs]"]["power_1pct"]["se_check"]  # the reported SE is the sd over repetitions
    assert check["rms_reported_se"] == pytest.approx(check["sd_of_mean_difference"], rel=0.3)
    assert abs(result["calibration"]["run_to_run_spread_pct"] - 1.2) < 0.05
    json.dumps(result, allow_nan=False)


def test_wilson_interval_matches_scipy(sim):
    for hits, n in ((20, 400), (0, 100), (97, 100)):
        ref = st.binomtest(hits, n).proportion_ci(method="wilson")
        assert sim.wilson(hits, n) == pytest.approx([ref.low, ref.high], abs=1e-6)
