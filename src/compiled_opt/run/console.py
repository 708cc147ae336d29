"""What a run prints: its header, a progress bar over all jobs, each job's decision, the summary.

Built on ``rich``: on a terminal a live progress bar with ETA; in a pipe or a log file plain text
without ANSI codes. ``level`` is ``warning`` (failures and the summary only: ``-q``), ``info`` (each
job's decision) or ``debug`` (every batch and failure tracebacks).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TextIO

import numpy as np
from rich.console import Console as RichConsole
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from compiled_opt.core.evaluate import Evaluation

LEVELS = ("debug", "info", "warning")
RULE = "═" * 72
# the numbers behind a decision, shown first when a policy records them (all are stored)
DECISION_KEYS = ("incumbent_mean", "challenger_mean", "mean_difference", "se_difference", "statistic", "df",
                 "p_value", "mc_se", "window_se", "relative_improvement", "threshold", "resolution_se", "runs_spent",
                 "stopped", "stage_summary")
STATUSES = ("improved", "new", "pooled", "forced", "kept defaults", "no improvement", "failed")


def se_reduction(runs: int) -> float:
    """How much N runs shrink the Monte Carlo standard error of a mean versus one run: 1 - 1/sqrt(N)."""
    return 1 - 1 / math.sqrt(runs)


@dataclass
class Outcome:
    """One (symbol, model) line of the summary. ``improvement`` is on validation (positive: better);
    ``test_change`` is the test MAE's relative change against the model's defaults (negative: better)."""

    symbol: str
    model: str
    status: str
    mae: float | None = None
    previous: float | None = None
    test_mae: float | None = None
    test_change: float | None = None
    test_se: float | None = None
    skill: float | None = None
    below_resolution: bool = False
    detail: str = ""

    @property
    def improvement(self) -> float | None:
        if self.mae is None or not self.previous:
            return None
        return (self.previous - self.mae) / self.previous


def out_of_sample_line(changes: Sequence[float | None], label: str = "test MAE") -> str | None:
    """``test MAE vs defaults: better on k of n symbols, mean change x% (sem y%)`` across symbols,
    from each symbol's relative change of MAE against the model's defaults."""
    changes = np.array([c for c in changes if c is not None])
    if not changes.size:
        return None
    sem = changes.std(ddof=1) / np.sqrt(changes.size) if changes.size > 1 else float("nan")
    return (f"{label} vs defaults: better on {int((changes < 0).sum())} of {changes.size} symbols, mean change "
            f"{100 * changes.mean():+.2f}% (sem {100 * sem:.2f}%; negative: lower error than the model's defaults)")


class Console:
    """The run's console output; see the module docstring."""

    def __init__(self, stream: TextIO | None = None, level: str = "info", json_summary: bool = False):
        self.stream = stream
        self.level = LEVELS.index(level)
        self.json_summary = json_summary
        self.progress: Progress | None = None
        self.task = None
        self._rich: RichConsole | None = None

    @property
    def out(self) -> RichConsole:
        stream = self.stream or sys.stdout
        if self._rich is None or self._rich.file is not stream:
            self._rich = RichConsole(file=stream, highlight=False, soft_wrap=True,
                                     width=None if stream.isatty() else 160)
        return self._rich

    def line(self, text: str = "", level: str = "info") -> None:
        if LEVELS.index(level) >= self.level:
            self.out.print(escape(text))

    # --- the run ----------------------------------------------------------------------------------

    def run_header(self, run_dir: Any, config: Any, executor: str, resumed: bool) -> None:
        self.line(f"Run {run_dir.run_id}{' (resumed)' if resumed else ''}: executor {executor}")
        self.line(f"  stored configs: {config.output.directory}/<model>/<SYMBOL>.json; run log: {run_dir.path}/")

    def start_jobs(self, jobs: Sequence[Any]) -> None:
        self.totals = {j.job_id: j.search.trials for j in jobs}
        self.best: dict[str, float] = {}
        self.done_trials: dict[str, int] = {}
        if self.out.is_terminal and self.level <= LEVELS.index("info") and jobs:
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("trials"), TimeElapsedColumn(), TimeRemainingColumn(),
                                     console=self.out, transient=True)
            self.task = self.progress.add_task(f"{len(jobs)} jobs", total=sum(self.totals.values()))
            self.progress.start()

    def stop_jobs(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def batch(self, event: Any) -> None:
        scores = [r.score for r in event.rows if r.score is not None]
        if scores:
            self.best[event.job_id] = min(self.best.get(event.job_id, math.inf), min(scores))
        done = self.done_trials[event.job_id] = self.done_trials.get(event.job_id, 0) + len(event.rows)
        if self.progress is not None:
            self.progress.update(self.task, advance=len(event.rows))
        failed = sum(r.score is None for r in event.rows)
        secs = sum(r.latency_s for r in event.rows) / len(event.rows)
        self.line(f"  {event.job_id}: {done}/{self.totals.get(event.job_id, done)} trials | best so far "
                  f"{self.best.get(event.job_id, math.nan):.6f} | {secs:.4f} s/trial"
                  + (f" | {failed} failed" if failed else ""), level="debug")

    def pooled_done(self, result: Any, chosen: Mapping[str, Any]) -> None:
        what = "pooled config" if result.decision.accept else "model defaults kept as the pooled config"
        self.line(f"Pooled stage {result.job_id}: {what} {dict(chosen)}: {result.decision.reason}")

    def job_done(self, job: Any, result: Any, outcome: Outcome, error: str, trace: str) -> None:
        if error:
            self.line(f"FAILED {job.job_id}: {error}", level="warning")
            if trace:
                self.line(trace, level="warning")
            return
        if self.level > LEVELS.index("info"):
            return
        self._job_block(job, result, outcome)

    def _job_block(self, job: Any, result: Any, outcome: Outcome) -> None:
        runs = len(job.seeds.search)
        self.line(RULE)
        self.line(f"Optimizing {job.model} (backend {job.backend}) for {job.symbol}")
        self.line(f"Trials: {result.trials} | Validation samples: {len(job.validation[0])} | "
                  f"Test samples: {len(job.test[0])}")
        if result.challenger_val.exact:
            self.line("Eval runs per config: 1 (exact aggregates from the predictive distribution: no Monte Carlo"
                      " noise)")
        else:
            self.line(f"Eval runs per config: {runs} (Monte Carlo standard error {100 * se_reduction(runs):.0f}% "
                      f"lower than one run: 1 - 1/sqrt({runs}))")
        self.line(f"Search: {result.method} | Acceptance policy: {job.policy} | Reference: "
                  f"{'stored config' if job.reference_kind == 'stored' else 'model defaults'}")
        self.line(RULE)
        extra = ", ".join(f"{n} {w}" for n, w in ((result.cached, "cached"), (result.failed, "failed")) if n)
        self.line(f"  Scored {result.trials} trials{f' ({extra})' if extra else ''}; recommendation: "
                  f"{result.challenger}")
        if result.gate:
            g = result.gate
            self.line(f"  Against the pooled config: p={g['p_value']:.3g} ({'kept own' if g['accept'] else 'pooled'})")
        self.evaluation("Reference ", result.reference_val)
        self.evaluation("Challenger", result.challenger_val)
        accept = outcome.status in ("improved", "new", "pooled", "forced")
        self.decision(accept, result.decision.reason if outcome.status != "forced"
                      else f"forced (--force); {result.decision.reason}", result.decision.stats)
        kept = "stored" if accept else "kept"
        self.line(f"  Test (never used to choose), {kept} config: MAE {outcome.test_mae:.6f}, skill "
                  f"{outcome.skill:+.4f} against the naive forecast; vs the model's defaults "
                  f"{100 * outcome.test_change:+.2f}% (SE {100 * outcome.test_se:.2f}%)")

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

    def table(self, table: Table) -> None:
        self.out.print(table)

    def summary(self, outcomes: Sequence[Outcome], run_dir: Any) -> None:
        if self.json_summary:
            print(json.dumps({"run_id": run_dir.run_id, "run_dir": str(run_dir.path),
                              "jobs": [asdict(o) | {"improvement": o.improvement} for o in outcomes],
                              "out_of_sample": out_of_sample_line([o.test_change for o in outcomes])}),
                  file=self.stream or sys.stdout)
            return
        table = Table(title=f"Run {run_dir.run_id}", title_justify="left", box=None, pad_edge=False)
        for name, justify in (("Symbol", "left"), ("Model", "left"), ("Status", "left"), ("Val MAE", "right"),
                              ("Reference", "right"), ("Val improvement", "right"), ("Test MAE", "right"),
                              ("Skill", "right"), ("Test MAE vs defaults", "right")):
            table.add_column(name, justify=justify)
        for o in outcomes:
            flag = " (below resolution)" if o.below_resolution else ""
            table.add_row(o.symbol, o.model, o.status + flag, _fmt(o.mae), _fmt(o.previous),
                          _pct(o.improvement), _fmt(o.test_mae), _fmt(o.skill, "+.4f"),
                          "-" if o.test_change is None else f"{100 * o.test_change:+.2f}% ± {100 * o.test_se:.2f}%")
        self.out.print(table)
        for o in outcomes:
            if o.status == "failed":
                self.line(f"  {o.symbol}/{o.model} failed: {o.detail}", level="warning")
        counts = {s: sum(o.status == s for o in outcomes) for s in STATUSES}
        self.line(" | ".join(f"{k}: {v}" for k, v in counts.items() if v or k in ("improved", "failed")),
                  level="warning")
        line = out_of_sample_line([o.test_change for o in outcomes])
        if line:
            self.line(line, level="warning")
        if any(o.status == "failed" for o in outcomes):
            self.line(f"Tracebacks of the failures: {run_dir.errors_path}", level="warning")
        self.line(f"Run log: {run_dir.path}/ (compiled-opt report {run_dir.run_id})", level="warning")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.2f}%"


def _fmt(value: Any, spec: str = ".6g") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)
