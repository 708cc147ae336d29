"""Acceptance policies decide whether a challenger config replaces the stored incumbent."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from compiled_opt.engine.evaluate import Evaluation, Evaluator


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


def judge(policy: Policy, evaluator: Evaluator, challenger: Mapping[str, Any], incumbent: Mapping[str, Any],
          search_seeds: tuple[int, ...], fresh_seeds: tuple[int, ...]) -> Verdict:
    """Re-score both configs on the same validation windows and ``decision_seeds``, then ask ``policy``."""
    seeds = decision_seeds(policy, search_seeds, fresh_seeds)
    ch, inc = evaluator(challenger, seeds), evaluator(incumbent, seeds)
    return Verdict(policy.decide(ch, inc), ch, inc)
