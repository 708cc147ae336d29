"""Acceptance policies decide whether a challenger config replaces the stored incumbent."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from compiled_opt.core.evaluate import Evaluation
from compiled_opt.core.randomness import derive_seeds
from compiled_opt.core.stats import paired_differences

Evaluate = Callable[[Mapping[str, Any], tuple[int, ...]], Evaluation]


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


def more_seeds(seeds: tuple[int, ...], total: int) -> tuple[int, ...]:
    """``seeds`` extended to ``total`` run seeds, the new ones derived from ``seeds`` (``derive_seeds``).

    Deterministic, and every extension of the same ``seeds`` is a prefix of the longer ones, so a
    stage's runs are the previous stage's plus new ones. A new seed never repeats an earlier one.
    """
    seeds = tuple(seeds)
    new: list[int] = []
    draw = 2 * total
    while len(seeds) + len(new) < total:
        candidates = derive_seeds(seeds[0] if seeds else 0, "more runs", draw, *seeds[1:])
        new = list(dict.fromkeys(c for c in candidates if c not in seeds))
        draw *= 2
    return (seeds + tuple(new))[:total]


def join_runs(first: Evaluation, more: Evaluation) -> Evaluation:
    """One evaluation holding the runs of ``first`` and then those of ``more`` (same config, same windows)."""
    if first.window_ids != more.window_ids:
        raise ValueError("cannot join runs scored on different windows")

    def joined(name: str) -> np.ndarray | None:
        a, b = getattr(first, name), getattr(more, name)
        return None if a is None or b is None else np.concatenate([a, b])

    return replace(
        first,
        errors=joined("errors"),
        price_errors=joined("price_errors"),
        return_errors=joined("return_errors"),
        seeds=first.seeds + more.seeds,
        latency_s=first.latency_s + more.latency_s,
    )


class Stages:
    """Challenger and incumbent scored on a growing prefix of one seed sequence (sequential acceptance).

    ``stages()`` scores both on the decision's seeds; ``stages(runs)`` extends both to ``runs`` runs
    (``more_seeds``), evaluating only the new seeds: one evaluator call per config and stage. An
    exact evaluation (no runs) is kept as it is. Returns ``(challenger, incumbent)``.
    """

    def __init__(
        self, evaluator: Evaluate, challenger: Mapping[str, Any], incumbent: Mapping[str, Any], seeds: tuple[int, ...]
    ):
        self.evaluator, self.configs, self.seeds = evaluator, (challenger, incumbent), tuple(seeds)
        self.runs = 0
        self.scored: tuple[Evaluation, Evaluation] | None = None

    def __call__(self, runs: int | None = None) -> tuple[Evaluation, Evaluation]:
        if self.scored is None:
            self.scored = (self.evaluator(self.configs[0], self.seeds), self.evaluator(self.configs[1], self.seeds))
            self.runs = len(self.seeds)
        if runs is not None and runs > self.runs:
            new = more_seeds(self.seeds, runs)[self.runs :]
            self.scored = tuple(
                ev if ev.exact else join_runs(ev, self.evaluator(config, new))  # type: ignore[assignment]
                for ev, config in zip(self.scored, self.configs, strict=True)
            )
            self.runs = runs
        return self.scored


class StagedPolicy(Policy):
    """A policy that may have both configs scored with more runs before it decides.

    ``judge`` calls ``decide_staged`` instead of ``decide``; ``decide`` stays the verdict on two
    given evaluations.
    """

    @abstractmethod
    def decide_staged(self, stages: Stages) -> Decision:
        """The verdict; ``stages()`` gives both evaluations, ``stages(runs)`` the same with ``runs`` runs."""


@dataclass(frozen=True)
class Verdict:
    """A decision with the two evaluations it was made from (same windows, same seeds) and their resolution:
    the larger of the two MAEs' standard errors over runs; an accepted change below it is ``below_resolution``."""

    decision: Decision
    challenger: Evaluation
    incumbent: Evaluation
    resolution_se: float
    below_resolution: bool


def decision_seeds(policy: Policy, search_seeds: tuple[int, ...], fresh_seeds: tuple[int, ...]) -> tuple[int, ...]:
    """The seeds a decision is scored on: the search's own, or fresh ones if the policy asks to ``confirm``."""
    return fresh_seeds if policy.confirm else search_seeds


def judge(
    policy: Policy,
    evaluator: Evaluate,
    challenger: Mapping[str, Any],
    incumbent: Mapping[str, Any],
    search_seeds: tuple[int, ...],
    fresh_seeds: tuple[int, ...],
) -> Verdict:
    """Re-score both configs on the same validation windows and ``decision_seeds``, then ask ``policy``.

    A ``StagedPolicy`` may extend both to more runs first (``Stages``); the verdict holds the final
    evaluations. An accepted change smaller than the evaluation's own resolution (the larger of the two
    MAEs' standard errors over runs) is flagged in the reason and in the verdict (``below_resolution``).
    """
    seeds = decision_seeds(policy, search_seeds, fresh_seeds)
    if isinstance(policy, StagedPolicy):
        stages = Stages(evaluator, challenger, incumbent, seeds)
        decision = policy.decide_staged(stages)
        ch, inc = stages()
    else:
        ch, inc = evaluator(challenger, seeds), evaluator(incumbent, seeds)
        decision = policy.decide(ch, inc)
    paired_differences(ch, inc)  # the two are paired: same windows, same seeds
    se = float(max(ch.sem, inc.sem))
    below = bool(decision.accept and abs(inc.mean - ch.mean) < se)
    reason = decision.reason
    if below:
        reason += (
            f"; below the evaluation's resolution: the change {inc.mean - ch.mean:.3g} is less than the"
            f" MAE's standard error {se:.3g}"
        )
    return Verdict(Decision(decision.accept, reason, decision.stats), ch, inc, se, below)
