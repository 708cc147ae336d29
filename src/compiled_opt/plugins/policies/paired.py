"""``paired``: accept a challenger only when a one-sided paired t-test says it is better.

Both configs are scored on the same windows with the same run seeds, so error ``[r, w]`` of
the challenger and of the incumbent share their random draws (common random numbers) and
``d[r, w] = incumbent[r, w] - challenger[r, w]`` is a paired difference (positive: the
challenger is better). The test is of H0: mean improvement <= ``min_effect`` (a fraction of the
incumbent's MAE) against H1: it is larger, at level ``alpha``; two questions, by ``scope``:

- ``"runs"``: is the challenger better on these validation windows, or did it draw luckier
  samples? Only Monte Carlo noise is random here. Keyed draws are independent across runs and
  across windows, so Var(mean d) = sum_w var_w / (R W^2): each window's variance over the R runs
  is estimated and pooled, with Welch-Satterthwaite degrees of freedom (up to W (R - 1); a plain
  t-test on the R per-run means would have R - 1 = 2 and little power).
- ``"windows"``: will it be better on future windows like these? A paired t-test over the
  run-averaged window errors (W - 1 degrees of freedom), treating windows as exchangeable draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as st

from compiled_opt.api import (
    Decision,
    Evaluation,
    OptionError,
    Policy,
    Register,
    hookimpl,
    improvement_text,
    mc_standard_error,
    paired_differences,
    window_standard_error,
)

SCOPES = ("runs", "windows")


@dataclass(frozen=True)
class Test:
    """A one-sided test of the mean paired difference: its estimate, standard error, dof and name."""

    mean: float
    se: float
    df: float
    name: str


def runs_test(d: np.ndarray) -> Test | None:
    """Monte Carlo test: per-window variances over runs, pooled; ``None`` with fewer than 2 runs."""
    mc = mc_standard_error(d)
    if mc is None:
        return None
    return Test(
        float(d.mean()),
        mc[0],
        mc[1],
        "one-sided paired t-test over runs (per-window variances pooled, Welch-Satterthwaite df)",
    )


def windows_test(d: np.ndarray) -> Test | None:
    """Window-to-window test on run-averaged differences; ``None`` with fewer than 2 windows."""
    per_window = d.mean(axis=0)
    se = window_standard_error(per_window)
    if se is None:
        return None
    return Test(
        float(per_window.mean()),
        se,
        float(per_window.size - 1),
        "one-sided paired t-test over windows (run-averaged errors)",
    )


class Paired(Policy):
    """Accept when the improvement exceeds ``min_effect`` significantly at level ``alpha``.

    ``scope`` ``"runs"`` tests Monte Carlo noise on these windows, ``"windows"`` generalisation to
    future windows. ``confirm`` (default on) re-scores both configs on fresh seeds first.
    """

    name = "paired"

    def __init__(self, scope: str = "runs", alpha: float = 0.05, min_effect: float = 0.0, confirm: bool = True):
        if scope not in SCOPES:
            raise OptionError(f"must be 'runs' or 'windows', not {scope!r}", "scope")
        if not 0 < alpha < 0.5:
            raise OptionError(f"must be between 0 and 0.5 (a one-sided level such as 0.05), not {alpha}", "alpha")
        if not 0 <= min_effect < 1:
            raise OptionError(f"must be a fraction in [0, 1) of the incumbent's MAE, not {min_effect}", "min_effect")
        self.scope, self.alpha, self.min_effect, self.confirm = scope, alpha, min_effect, bool(confirm)

    def decide(self, challenger: Evaluation, incumbent: Evaluation) -> Decision:
        stats, text, runs_t, windows_t = self.describe(challenger, incumbent)
        if self.scope == "runs" and challenger.exact and incumbent.exact:
            return self._sign_only(stats, text, "exact evaluations, no Monte Carlo noise")
        test = runs_t if self.scope == "runs" else windows_t
        if test is None:
            need = "2 evaluation runs (--eval-runs 2 or more)" if self.scope == "runs" else "2 validation windows"
            stats.update(test="none", statistic=None, df=None, p_value=None, se_difference=None, lower_bound=None)
            return Decision(False, f"Cannot test: scope {self.scope!r} needs at least {need}; {text}", stats)
        if test.se == 0:
            return self._sign_only(stats, text, f"the difference has no spread over {self.scope}")
        return self._t_decision(stats, text, test, stats["margin"], incumbent.mean)

    def describe(self, challenger: Evaluation, incumbent: Evaluation) -> tuple[dict, str, Test | None, Test | None]:
        """The stats every decision records, the improvement text, and the runs and windows tests."""
        d = paired_differences(challenger, incumbent)
        margin = self.min_effect * incumbent.mean
        runs_t, windows_t = runs_test(d), windows_test(d)
        stats = {
            "policy": self.name,
            "scope": self.scope,
            "alpha": self.alpha,
            "min_effect": self.min_effect,
            "fresh_seeds": self.confirm,
            "seeds": list(challenger.seeds or incumbent.seeds),
            "common_seeds": not (challenger.seeds and incumbent.seeds) or challenger.seeds == incumbent.seeds,
            "runs": int(d.shape[0]),
            "windows": int(d.shape[1]),
            "challenger_mean": challenger.mean,
            "incumbent_mean": incumbent.mean,
            "challenger_per_run": [float(x) for x in challenger.per_run],
            "incumbent_per_run": [float(x) for x in incumbent.per_run],
            "mean_difference": float(d.mean()),
            "relative_improvement": float(d.mean() / incumbent.mean),
            "margin": margin,
            "mc_se": runs_t.se if runs_t else None,
            "window_se": windows_t.se if windows_t else None,
        }
        return stats, improvement_text(challenger, incumbent), runs_t, windows_t

    def _sign_only(self, stats: dict, text: str, why: str) -> Decision:
        gain = stats["relative_improvement"]
        accept = stats["mean_difference"] > stats["margin"]
        stats.update(
            test=f"sign of the difference ({why})",
            statistic=None,
            df=None,
            se_difference=0.0,
            p_value=0.0 if accept else 1.0,
            lower_bound=gain,
        )
        if accept:
            return Decision(True, f"{text}; {why}: decided on the difference alone", stats)
        if stats["mean_difference"] == 0:
            return Decision(False, f"No difference: both configs scored the same ({why})", stats)
        return Decision(
            False,
            f"Insufficient improvement: {100 * gain:.2f}% (needs > {100 * self.min_effect:g}%);"
            f" {why}: decided on the difference alone",
            stats,
        )

    def _t_decision(self, stats: dict, text: str, test: Test, margin: float, base: float) -> Decision:
        t = (test.mean - margin) / test.se
        p = float(st.t.sf(t, test.df))
        bound = (test.mean - st.t.ppf(1 - self.alpha, test.df) * test.se) / base
        stats.update(
            test=test.name, statistic=float(t), df=test.df, p_value=p, se_difference=test.se, lower_bound=float(bound)
        )
        detail = (
            f"paired over {stats[self.scope]} {self.scope}: SE {100 * test.se / base:.2f}%, t={t:.2f}"
            f" (df {test.df:.1f}), p={p:.3g}"
        )
        if p < self.alpha:
            return Decision(
                True,
                f"{text}; {detail} < {self.alpha:g}; at least {100 * bound:.2f}% with"
                f" {100 * (1 - self.alpha):g}% confidence",
                stats,
            )
        beyond = f" beyond {100 * self.min_effect:g}%" if self.min_effect else ""
        return Decision(
            False,
            f"No significant improvement{beyond}: {100 * stats['relative_improvement']:.2f}%"
            f" (MAE: {stats['incumbent_mean']:.6f} -> {stats['challenger_mean']:.6f}); {detail}"
            f" >= {self.alpha:g}",
            stats,
        )


@hookimpl
def compiled_opt_register_policies(register: Register) -> None:
    register("paired", Paired)
