"""Acceptance policies decide whether a challenger config replaces the stored incumbent."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compiled_opt.engine.evaluate import Evaluation


@dataclass(frozen=True)
class Decision:
    """A policy's verdict, the one-line reason printed after UPDATING / NOT updating, and its numbers."""

    accept: bool
    reason: str
    stats: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable, stored with the config


def relative_improvement(challenger: Evaluation, incumbent: Evaluation) -> float:
    """How much lower the challenger's MAE is, as a fraction of the incumbent's."""
    return (incumbent.mean - challenger.mean) / incumbent.mean


def improvement_text(challenger: Evaluation, incumbent: Evaluation) -> str:
    """``"Improvement: 0.50% (MAE: 0.008210 -> 0.008169)"`` in the seed note's words."""
    pct = 100 * relative_improvement(challenger, incumbent)
    return f"Improvement: {pct:.2f}% (MAE: {incumbent.mean:.6f} -> {challenger.mean:.6f})"


class Policy(ABC):
    """Decides from two evaluations made on the same windows with the same seeds.

    Set ``confirm = True`` to have both configs re-scored on fresh seeds, never used during the
    search, before ``decide`` sees them, so the search winner's selection bias stays out.
    """

    confirm: bool = False

    @abstractmethod
    def decide(self, challenger: Evaluation, incumbent: Evaluation) -> Decision:
        """The verdict for ``challenger`` against ``incumbent``."""


@dataclass(frozen=True)
class Verdict:
    """A decision with the two evaluations it was made from (same windows, same seeds)."""

    decision: Decision
    challenger: Evaluation
    incumbent: Evaluation


def decision_seeds(policy: Policy, search_seeds: tuple[int, ...], fresh_seeds: tuple[int, ...]) -> tuple[int, ...]:
    """The seeds a decision is scored on: the search's own, or fresh ones if the policy asks to ``confirm``."""
    return fresh_seeds if policy.confirm else search_seeds


def paired_differences(challenger: Evaluation, incumbent: Evaluation) -> np.ndarray:
    """``incumbent.errors - challenger.errors``, ``[runs, windows]``; an exact side is broadcast over runs.

    Only evaluations of the same windows with the same seeds pair (common random numbers).
    """
    if challenger.window_ids != incumbent.window_ids:
        raise ValueError("challenger and incumbent were scored on different windows; they cannot be paired")
    if challenger.seeds and incumbent.seeds and challenger.seeds != incumbent.seeds:
        raise ValueError("challenger and incumbent were scored with different seeds; they cannot be paired")
    a, b = incumbent.errors, challenger.errors
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise ValueError(f"cannot pair {b.shape[0]} challenger runs with {a.shape[0]} incumbent runs")
    return a - b


def mc_standard_error(d: np.ndarray) -> tuple[float, float] | None:
    """The Monte Carlo standard error of ``d.mean()`` and its Welch-Satterthwaite degrees of freedom.

    Keyed draws are independent across runs and across windows, so Var(mean d) = sum_w var_w / (R W^2),
    each window's variance over the R runs estimated and pooled. ``None`` with fewer than 2 runs.
    """
    runs, width = d.shape
    if runs < 2:
        return None
    var_w = d.var(axis=0, ddof=1)
    total = var_w.sum()
    df = total**2 / ((var_w**2).sum() / (runs - 1)) if total > 0 else float(width * (runs - 1))
    return float(np.sqrt(total / (runs * width**2))), float(df)


def judge(policy: Policy, evaluator: Callable[[Mapping[str, Any], tuple[int, ...]], Evaluation],
          challenger: Mapping[str, Any], incumbent: Mapping[str, Any],
          search_seeds: tuple[int, ...], fresh_seeds: tuple[int, ...]) -> Verdict:
    """Re-score both configs on the same validation windows and ``decision_seeds``, then ask ``policy``.

    An accepted change smaller than the evaluation's own resolution (the Monte Carlo standard error
    of the paired difference) is flagged in the reason and in the stats (``below_resolution``).
    """
    seeds = decision_seeds(policy, search_seeds, fresh_seeds)
    ch, inc = evaluator(challenger, seeds), evaluator(incumbent, seeds)
    decision = policy.decide(ch, inc)
    mc = mc_standard_error(paired_differences(ch, inc))
    se = mc[0] if mc else None
    below = decision.accept and se is not None and abs(inc.mean - ch.mean) < se
    stats = {**decision.stats, "resolution_se": se, "below_resolution": below}
    reason = decision.reason
    if below:
        reason += (f"; below the evaluation's resolution: the difference {inc.mean - ch.mean:.3g} is less than its"
                   f" Monte Carlo SE {se:.3g}")
    return Verdict(Decision(decision.accept, reason, stats), ch, inc)
