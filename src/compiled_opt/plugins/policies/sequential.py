"""``sequential``: the ``paired`` runs test, with more runs only while the decision is close.

Both configs are first scored with the decision's seeds (``eval_runs``); while the test is
inconclusive both get more runs, doubling up to ``max_runs`` (3 -> 6 -> 12), each stage one
evaluator call per config on new seeds only. At look k the paired runs statistic ``t_k`` (as in
``paired``, scope ``"runs"``) is compared with a group-sequential boundary from alpha spending
(``engine.boundaries``), so the chance of ever accepting a challenger that is not better by
``min_effect`` stays at ``alpha`` however many looks are taken. A look whose conditional power
(the chance, if the observed trend went on, of being accepted at ``max_runs``) is below
``futility`` stops and rejects; that rule is non-binding (the boundaries ignore it), so it can
only lower the false-accept rate.
"""

from __future__ import annotations

import math
from typing import Any

from scipy import stats as st

from compiled_opt.api import (
    SPENDING,
    Boundaries,
    Decision,
    OptionError,
    Register,
    StagedPolicy,
    Stages,
    boundaries,
    hookimpl,
    paired_differences,
    stage_runs,
    z_equivalent,
)
from compiled_opt.plugins.policies.paired import Paired, Test, runs_test

MAX_RUNS = 1000  # as evaluation.eval_runs' limit (run/limits.py): more is a run that never ends


class Sequential(Paired, StagedPolicy):
    """Accept when a group-sequential paired runs test crosses its boundary within ``max_runs`` runs.

    ``spending``: ``"pocock"`` (default: clear cases stop at the first look) or ``"obrien_fleming"``;
    ``futility``: the conditional power below which a look stops and rejects (0: never).
    ``decide`` alone (no staging) is the fixed-runs ``paired`` test.
    """

    name = "sequential"

    def __init__(
        self,
        alpha: float = 0.05,
        min_effect: float = 0.0,
        confirm: bool = True,
        max_runs: int = 12,
        spending: str = "pocock",
        futility: float = 0.1,
    ):
        super().__init__("runs", alpha, min_effect, confirm)
        if not isinstance(max_runs, int) or not 2 <= max_runs <= MAX_RUNS:
            raise OptionError(f"must be an integer from 2 to {MAX_RUNS}, not {max_runs!r}", "max_runs")
        if spending not in SPENDING:
            raise OptionError(f"must be one of {', '.join(map(repr, SPENDING))}, not {spending!r}", "spending")
        if not 0 <= futility < 1:
            raise OptionError(f"must be a conditional power in [0, 1), not {futility}", "futility")
        self.max_runs, self.spending, self.futility = max_runs, spending, float(futility)

    def decide_staged(self, stages: Stages) -> Decision:
        challenger, incumbent = stages()
        if challenger.exact and incumbent.exact:
            return self.decide(challenger, incumbent)
        first = max(2, challenger.runs, incumbent.runs)
        design = boundaries(stage_runs(first, max(first, self.max_runs)), self.alpha, self.spending)
        futile = design.futility(self.futility)
        path: list[dict[str, Any]] = []
        for look, runs in enumerate(design.runs):
            challenger, incumbent = stages(runs)
            test = runs_test(paired_differences(challenger, incumbent))
            if test is None or test.se == 0:  # no Monte Carlo spread at all: nothing to gain from more runs
                return self.decide(challenger, incumbent)
            path.append(self._look(design, look, test, futile, self.min_effect * incumbent.mean))
            if path[-1]["action"] != "continue":
                break
        return self._decision(challenger, incumbent, design, path, test)

    def _look(self, design: Boundaries, look: int, test: Test, futile: tuple[float, ...], margin: float) -> dict:
        """One look: the t statistic, its z equivalent (same tail probability) and the boundaries it met."""
        t = (test.mean - margin) / test.se
        z = z_equivalent(t, test.df)
        last = look == len(design.runs) - 1
        lower = None if last or futile[look] == -math.inf else futile[look]
        action = (
            "accept"
            if z >= design.efficacy[look]
            else "reject"
            if last
            else "futility"
            if lower is not None and z < lower
            else "continue"
        )
        return {
            "look": look + 1,
            "runs": design.runs[look],
            "mean_difference": test.mean,
            "se_difference": test.se,
            "df": test.df,
            "statistic": float(t),
            "z": z,
            "efficacy_bound": design.efficacy[look],
            "critical_t": design.critical_t(look, test.df),
            "futility_bound": lower,
            "futility_t": None if lower is None else float(st.t.isf(st.norm.sf(lower), test.df)),
            "alpha_spent": design.spent(look),
            "action": action,
        }

    def _decision(self, challenger, incumbent, design: Boundaries, path: list[dict], test: Test) -> Decision:
        stats, text, _, _ = self.describe(challenger, incumbent)
        end, base = path[-1], incumbent.mean
        look = end["look"] - 1
        p = design.p_value(look, end["z"])
        bound = (test.mean - end["critical_t"] * test.se) / base
        stats.update(
            test="group-sequential one-sided paired t-test over runs (per-window variances pooled, Welch-"
            f"Satterthwaite df; {self.spending} alpha spending, conditional-power futility {self.futility:g})",
            statistic=end["statistic"],
            df=test.df,
            se_difference=test.se,
            p_value=p,
            lower_bound=float(bound),
            spending=self.spending,
            futility=self.futility,
            max_runs=self.max_runs,
            looks=list(design.runs),
            runs_spent=end["runs"],
            stopped=end["action"],
            stages=path,
            stage_summary="; ".join(_summary(s) for s in path),
        )
        where = f"look {end['look']} of {len(design.runs)} ({end['runs']} runs)"
        detail = f"t={end['statistic']:.2f} (df {test.df:.1f})"
        if end["action"] == "accept":
            return Decision(
                True,
                f"{text}; sequential paired test over runs, {where}: {detail} >="
                f" {end['critical_t']:.2f}, p={p:.3g} < {self.alpha:g}; at least {100 * bound:.2f}% with"
                f" {100 * (1 - self.alpha):g}% confidence",
                stats,
            )
        beyond = f" beyond {100 * self.min_effect:g}%" if self.min_effect else ""
        why = (
            f"stopped for futility at {where}: {detail} < {end['futility_t']:.2f} (conditional power below"
            f" {self.futility:g})"
            if end["action"] == "futility"
            else f"not accepted at {where}, the last: {detail} < {end['critical_t']:.2f}"
        )
        return Decision(
            False,
            f"No significant improvement{beyond}: {100 * stats['relative_improvement']:.2f}%"
            f" (MAE: {incumbent.mean:.6f} -> {challenger.mean:.6f}); sequential paired test over runs"
            f" {why}, p={p:.3g}",
            stats,
        )


def _summary(stage: dict) -> str:
    """``"6 runs t=2.61>=2.08 accept"``: one look in a line."""
    t = stage["statistic"]
    if stage["action"] == "accept":
        return f"{stage['runs']} runs t={t:.2f}>={stage['critical_t']:.2f} accept"
    if stage["action"] == "futility":
        return f"{stage['runs']} runs t={t:.2f}<{stage['futility_t']:.2f} futility"
    return f"{stage['runs']} runs t={t:.2f}<{stage['critical_t']:.2f} {stage['action']}"


@hookimpl
def compiled_opt_register_policies(register: Register) -> None:
    register("sequential", Sequential)
