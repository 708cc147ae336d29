"""What a run prints: header, progress, decision, summary table."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from compiled_opt.engine.evaluate import Evaluation
from compiled_opt.engine.search import Trial

RULE = "═" * 72
# the numbers behind a decision, shown first when a policy records them (all are stored)
DECISION_KEYS = ("incumbent_mean", "challenger_mean", "mean_difference", "se_difference", "statistic", "df",
                 "p_value", "mc_se", "window_se", "relative_improvement", "threshold")


def se_reduction(runs: int) -> float:
    """How much N runs shrink the Monte Carlo standard error of a mean versus one run: 1 - 1/sqrt(N)."""
    return 1 - 1 / math.sqrt(runs)


@dataclass
class Outcome:
    """One (symbol, model) line of the summary."""

    symbol: str
    model: str
    status: str  # improved | new | forced | no improvement | failed
    mae: float | None = None
    previous: float | None = None
    detail: str = ""


class Reporter:
    def __init__(self, stream: TextIO | None = None):
        self.out = stream  # None: whatever sys.stdout is when printing
        self.best = math.inf
        self.done = 0

    def line(self, text: str = "") -> None:
        print(text, file=self.out or sys.stdout, flush=True)

    def header(self, model: str, backend: str, symbol: str, trials: int, val: int, test: int, runs: int,
               optimizer: str, policy: str) -> None:
        self.best, self.done, self.total = math.inf, 0, trials
        self.line(RULE)
        self.line(f"Optimizing {model} (backend {backend}) for {symbol}")
        self.line(f"Trials: {trials} | Validation samples: {val} | Test samples: {test}")
        self.line(f"Eval runs per config: {runs} (Monte Carlo standard error {100 * se_reduction(runs):.0f}% "
                  f"lower than one run: 1 - 1/sqrt({runs}))")
        self.line(f"Optimizer: {optimizer} | Acceptance policy: {policy}")
        self.line(RULE)

    def batch(self, trials: Sequence[Trial]) -> None:
        self.done += len(trials)
        batch_best = min(t.evaluation.mean for t in trials)
        self.best = min(self.best, batch_best)
        width = 24
        filled = round(width * self.done / self.total)
        secs = sum(t.evaluation.latency_s for t in trials) / len(trials)
        self.line(f"  [{'#' * filled}{'.' * (width - filled)}] {self.done:>4}/{self.total} trials | "
                  f"batch best {batch_best:.6f} | best so far {self.best:.6f} | {secs:.3f} s/trial")

    def evaluation(self, label: str, ev: Evaluation) -> None:
        spread = ("exact: no Monte Carlo spread" if ev.exact else
                  f"Monte Carlo sd {ev.std:.6f}, sem {ev.sem:.6f} over {ev.runs} runs")
        self.line(f"  {label}: MAE {ev.mean:.6f} ({spread}; window-to-window sd {ev.window_sd:.6f}, "
                  f"sem {ev.window_sem:.6f})")

    def decision(self, accept: bool, reason: str, stats: Mapping[str, Any]) -> None:
        self.line(f"  {'UPDATING' if accept else 'NOT updating'} config: {reason}")
        shown = {k: stats[k] for k in DECISION_KEYS if stats.get(k) is not None}
        if shown:
            self.line("    " + ", ".join(f"{k}={_fmt(v)}" for k, v in shown.items()))
        if stats.get("seeds"):
            self.line(f"    seeds: {stats['seeds']}")

    def summary(self, outcomes: Sequence[Outcome]) -> None:
        self.line(RULE)
        self.line(f"{'Symbol':<12}{'Model':<14}{'Status':<16}{'Val MAE':>12}{'Previous':>12}{'Change':>10}")
        for o in outcomes:
            change = f"{100 * (o.mae - o.previous) / o.previous:+.2f}%" if o.mae is not None and o.previous else ""
            self.line(f"{o.symbol:<12}{o.model:<14}{o.status:<16}{_fmt(o.mae):>12}{_fmt(o.previous):>12}{change:>10}")
            if o.detail:
                self.line(f"{'':<12}{o.detail}")
        counts = {s: sum(o.status == s for o in outcomes) for s in ("improved", "new", "forced", "no improvement", "failed")}
        self.line(" | ".join(f"{k}: {v}" for k, v in counts.items()))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
