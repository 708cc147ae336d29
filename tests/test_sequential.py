"""Group-sequential boundaries and the ``sequential`` acceptance policy: boundaries against published
values and Monte Carlo, staged evaluation through ``judge`` (only new seeds, one call per config and
stage), recorded stages, and error rates by simulation."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from scipy import stats as st

from compiled_opt.core.boundaries import boundaries, stage_runs
from compiled_opt.core.errors import UsageError
from compiled_opt.core.evaluate import Evaluation
from compiled_opt.core.randomness import derive_seeds
from compiled_opt.core.registry import Plugins
from compiled_opt.plugins.policies.paired import Paired
from compiled_opt.plugins.policies.sequential import Sequential
from compiled_opt.tuning.acceptance import join_runs, judge, more_seeds

WINDOWS = 30


class Synthetic:
    """Errors ``[runs, windows]`` around fixed window levels, scaled by ``1 - gain``; run r's noise is a
    function of its seed only (runs independent, keyed by seed, as in the engine), and configs with the
    same ``id`` share the ``shared`` part of it (common random numbers). ``calls`` logs every call."""

    def __init__(self, mc: float = 0.001, shared: float = 0.8, seed: int = 0):
        self.level = np.random.default_rng(seed).uniform(0.01, 0.04, WINDOWS)
        self.mc, self.shared, self.calls = mc, shared, []

    def __call__(self, params: Mapping[str, Any], seeds: tuple[int, ...]) -> Evaluation:
        self.calls.append((params["name"], tuple(seeds)))
        truth = self.level * (1 - params["gain"])
        if params.get("exact"):
            return Evaluation(truth[None], 100 * truth[None], (), tuple(range(100, 100 + WINDOWS)), 0.0, exact=True)
        rows = []
        for s in seeds:
            common = np.random.default_rng([s, 0]).normal(size=WINDOWS)
            own = np.random.default_rng([s, 1 + params["id"]]).normal(size=WINDOWS)
            rows.append(np.abs(truth + self.mc * (np.sqrt(self.shared) * common + np.sqrt(1 - self.shared) * own)))
        errors = np.array(rows)
        return Evaluation(errors, 100 * errors, tuple(seeds), tuple(range(100, 100 + WINDOWS)), 0.0)


def config(name: str, gain: float = 0.0, id: int = 0, **extra: Any) -> dict[str, Any]:
    return {"name": name, "gain": gain, "id": id, **extra}


def seeds(base: int, runs: int = 3) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Search and fresh (confirmation) seeds of one decision, as the runner derives them."""
    return tuple(derive_seeds(base, "search", runs)), tuple(derive_seeds(base, "confirm", runs))


def brownian(looks: tuple[int, ...], n: int, seed: int = 0, drift: float = 0.0) -> np.ndarray:
    """``[n, looks]`` stage statistics Z_k = B(t_k) / sqrt(t_k) of a Brownian motion (independent increments)."""
    t = np.asarray(looks, dtype=float) / looks[-1]
    steps = np.random.default_rng(seed).normal(size=(n, len(t))) * np.sqrt(np.diff(t, prepend=0.0))
    return (np.cumsum(steps, axis=1) + drift * t) / np.sqrt(t)


# --- boundaries -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "looks, published",
    [
        ((1, 2, 3), (3.7103, 2.5114, 1.9930)),
        ((1, 2, 3, 4), (4.3326, 2.9631, 2.3590, 2.0141)),
    ],
)
def test_obrien_fleming_boundaries_match_published_values(looks, published):
    """Lan-DeMets O'Brien-Fleming-type spending, one-sided 0.025, equally spaced looks (Jennison &
    Turnbull; gsDesign's sfLDOF), to the 4 decimals published (the quasi-Monte Carlo is good to ~1e-4)."""
    assert boundaries(looks, 0.025, "obrien_fleming").efficacy == pytest.approx(published, abs=2e-4)


@pytest.mark.parametrize(
    "looks, spending", [((3, 6, 12), "pocock"), ((3, 6, 10), "obrien_fleming"), ((2, 4, 8, 16), "pocock")]
)
def test_boundaries_spend_alpha_as_planned_by_monte_carlo(looks, spending):
    """An independent check: Brownian paths cross first at each look with the planned alpha increment."""
    design = boundaries(looks, 0.05, spending)
    z = brownian(looks, 400_000, seed=len(looks))
    crossed = z >= np.array(design.efficacy)
    first = np.where(crossed.any(axis=1), crossed.argmax(axis=1), -1)
    for look in range(len(looks)):
        planned = design.spent(look) - design.spent(look - 1)
        observed = (first == look).mean()
        assert abs(observed - planned) < 5 * np.sqrt(planned / 400_000) + 1e-5, (look, observed, planned)
    assert (first >= 0).mean() == pytest.approx(0.05, abs=5 * np.sqrt(0.05 / 400_000))


def test_pocock_is_flat_and_obrien_fleming_saves_alpha_for_the_end():
    pocock, obf = boundaries((3, 6, 12), 0.05, "pocock"), boundaries((3, 6, 12), 0.05, "obrien_fleming")
    assert max(pocock.efficacy) - min(pocock.efficacy) < 0.25
    assert obf.efficacy[0] > 3.5 and obf.efficacy[-1] < pocock.efficacy[-1] < pocock.efficacy[0]
    assert boundaries((5,), 0.05, "pocock").efficacy == pytest.approx((st.norm.isf(0.05),))  # one look: fixed test


def test_stagewise_p_value_is_uniform_under_h0_and_matches_the_boundaries():
    design = boundaries((3, 6, 12), 0.05, "pocock")
    for look, c in enumerate(design.efficacy):
        assert design.p_value(look, c) == pytest.approx(design.spent(look), abs=1e-5)
    z = brownian((3, 6, 12), 600, seed=11)
    crossed = z >= np.array(design.efficacy)
    stop = np.where(crossed.any(axis=1), crossed.argmax(axis=1), 2)
    p = np.array([design.p_value(k, z[i, k]) for i, k in enumerate(stop)])
    assert st.kstest(p, "uniform").pvalue > 1e-3
    assert np.array_equal(p <= 0.05 + 1e-9, crossed.any(axis=1))


def test_futility_boundary_is_where_conditional_power_falls_below_the_threshold():
    """At the futility boundary, continuing the observed trend crosses the last boundary with the given power."""
    design = boundaries((3, 6, 12), 0.05, "pocock")
    t = design.fractions
    for look, f in enumerate(design.futility(0.1)):
        drift = f / np.sqrt(t[look])  # the trend the statistic shows
        rest = np.random.default_rng(look).normal(size=200_000) * np.sqrt(1 - t[look]) + drift * (1 - t[look])
        power = (f * np.sqrt(t[look]) + rest >= design.efficacy[-1]).mean()
        assert power == pytest.approx(0.1, abs=0.004)
    assert all(f == -np.inf for f in design.futility(0.0))


def test_stage_runs_double_up_to_the_maximum():
    assert stage_runs(3, 12) == (3, 6, 12)
    assert stage_runs(3, 10) == (3, 6, 10)
    assert stage_runs(2, 16) == (2, 4, 8, 16)
    assert stage_runs(3, 3) == (3,) and stage_runs(5, 3) == (5,)


def test_bad_designs_are_refused():
    with pytest.raises(ValueError, match="spending must be one of"):
        boundaries((3, 6), 0.05, "haybittle")
    with pytest.raises(ValueError, match="increasing positive"):
        boundaries((6, 3), 0.05, "pocock")


# --- seeds and runs ---------------------------------------------------------------------------------


def test_more_seeds_extend_by_prefix_with_new_distinct_seeds():
    first = tuple(derive_seeds(5, "confirm", 3))
    six, twelve = more_seeds(first, 6), more_seeds(first, 12)
    assert six[:3] == first and twelve[:6] == six and len(set(twelve)) == 12
    assert more_seeds(first, 12) == twelve and more_seeds(first, 2) == first[:2]
    assert set(more_seeds(tuple(derive_seeds(6, "confirm", 3)), 12)[3:]).isdisjoint(twelve[3:])


def test_join_runs_stacks_runs_of_one_config():
    ev = Synthetic()
    a, b = ev(config("a"), (1, 2)), ev(config("a"), (3,))
    both = join_runs(a, b)
    assert both.seeds == (1, 2, 3) and np.array_equal(both.errors, ev(config("a"), (1, 2, 3)).errors)
    assert both.runs == 3 and both.mean == pytest.approx(ev(config("a"), (1, 2, 3)).mean, rel=1e-12)


# --- the policy -------------------------------------------------------------------------------------


def test_registered_through_entry_point():
    policies = Plugins.load().policies
    assert policies.get("sequential") is Sequential
    assert "entry point 'sequential'" in policies.source("sequential")


def decide(gain: float, base: int, policy: Sequential | None = None, **kw) -> tuple[Any, Synthetic]:
    ev = Synthetic(**kw)
    search, fresh = seeds(base)
    return judge(policy or Sequential(), ev, config("ch", gain, id=1), config("inc"), search, fresh), ev


def test_a_close_decision_takes_every_stage_evaluating_only_new_seeds():
    for base in range(200):
        verdict, ev = decide(0.003, base)
        if verdict.decision.stats["runs_spent"] == 12:
            break
    else:
        pytest.fail("no close decision found")
    stats, fresh = verdict.decision.stats, seeds(base)[1]
    extended = more_seeds(fresh, 12)
    assert ev.calls == [
        ("ch", fresh),
        ("inc", fresh),
        ("ch", extended[3:6]),
        ("inc", extended[3:6]),
        ("ch", extended[6:12]),
        ("inc", extended[6:12]),
    ]
    assert [s["runs"] for s in stats["stages"]] == [3, 6, 12] and stats["looks"] == [3, 6, 12]
    assert [s["action"] for s in stats["stages"]][:2] == ["continue", "continue"]
    assert verdict.challenger.seeds == verdict.incumbent.seeds == extended and verdict.challenger.runs == 12
    assert stats["seeds"] == list(extended)
    # Each stage's statistic is the paired runs test on that stage's runs.
    for stage in stats["stages"]:
        k = stage["runs"]
        ref = Paired().decide(ev(config("ch", 0.003, id=1), extended[:k]), ev(config("inc"), extended[:k])).stats
        assert stage["statistic"] == pytest.approx(ref["statistic"], rel=1e-9)
        assert stage["se_difference"] == pytest.approx(ref["se_difference"], rel=1e-9)
        assert stage["df"] == pytest.approx(ref["df"], rel=1e-9)
    assert stats["stage_summary"].count("runs") == 3
    json.dumps(stats, allow_nan=False)


def test_clear_cases_stop_at_the_first_look():
    better, ev = decide(0.05, 1)
    assert better.decision.accept and better.decision.stats["runs_spent"] == 3 and len(ev.calls) == 2
    assert better.decision.stats["stopped"] == "accept" and "look 1 of 3 (3 runs)" in better.decision.reason
    assert better.decision.stats["p_value"] < 0.05 and better.decision.stats["lower_bound"] > 0
    worse, _ = decide(-0.05, 1)
    assert not worse.decision.accept and worse.decision.stats["stopped"] == "futility"
    assert "stopped for futility at look 1 of 3" in worse.decision.reason
    json.dumps(worse.decision.stats, allow_nan=False)


def test_without_futility_an_equal_challenger_goes_to_the_last_look():
    verdict, _ = decide(0.0, 3, Sequential(futility=0))
    stages = verdict.decision.stats["stages"]
    assert not verdict.decision.accept and len(stages) == 3 and stages[-1]["action"] == "reject"
    assert all(s["futility_bound"] is None for s in stages)
    assert "not accepted at look 3 of 3 (12 runs), the last: t=" in verdict.decision.reason
    json.dumps(verdict.decision.stats, allow_nan=False)


def test_error_rates_and_runs_by_simulation():
    """Equal configs are accepted at most at alpha; a 0.3% gain (drift ~1.1 at 3 runs) is found far
    more often than by the fixed 3-run test, at a fraction of the runs of 12."""
    equal, gain, fixed, runs_equal = [], [], [], []
    for base in range(300):
        verdict, _ = decide(0.0, base, shared=0.5)
        equal.append(verdict.decision.accept)
        runs_equal.append(verdict.decision.stats["runs_spent"])
        verdict, ev = decide(0.003, base)
        gain.append(verdict.decision.accept)
        fresh = seeds(base)[1]
        fixed.append(Paired().decide(ev(config("ch", 0.003, id=1), fresh), ev(config("inc"), fresh)).accept)
    assert np.mean(equal) <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 300)
    assert np.mean(gain) > np.mean(fixed) + 0.15
    assert np.mean(runs_equal) < 6


def test_exact_evaluations_decide_at_once_on_the_difference():
    ev = Synthetic()
    verdict = judge(Sequential(), ev, config("ch", 0.01, exact=True), config("inc", exact=True), *seeds(1))
    assert verdict.decision.accept and "exact evaluations" in verdict.decision.reason
    assert len(ev.calls) == 2 and "stages" not in verdict.decision.stats


def test_one_run_starts_the_test_at_two():
    ev = Synthetic()
    search, fresh = seeds(2, runs=1)
    verdict = judge(Sequential(), ev, config("ch", 0.05, id=1), config("inc"), search, fresh)
    assert verdict.decision.stats["looks"] == [2, 4, 8, 12] and verdict.decision.stats["runs_spent"] == 2
    assert ev.calls[2:] == [("ch", more_seeds(fresh, 2)[1:]), ("inc", more_seeds(fresh, 2)[1:])]


def test_decide_alone_is_the_fixed_paired_test():
    ev = Synthetic()
    ch, inc = ev(config("ch", 0.003, id=1), (1, 2, 3)), ev(config("inc"), (1, 2, 3))
    stats, ref = Sequential().decide(ch, inc).stats, Paired().decide(ch, inc).stats
    assert stats["p_value"] == ref["p_value"] and stats["policy"] == "sequential"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"max_runs": 1}, "max_runs: must be an integer from 2 to 1000"),
        ({"max_runs": 1001}, "max_runs: must be an integer from 2 to 1000"),
        ({"spending": "linear"}, "spending: must be one of 'pocock', 'obrien_fleming'"),
        ({"futility": 1.0}, r"futility: must be a conditional power in \[0, 1\)"),
        ({"alpha": 0.7}, "alpha: must be between 0 and 0.5"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(UsageError, match=f"acceptance.options.{message}"):
        Plugins.load().policies.build("sequential", options, "acceptance.options")
