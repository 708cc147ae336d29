"""What a run prints: its header, live progress, each job's decision, the summary and its warnings.

Built on ``rich``: on a terminal a live progress bar with ETA; in a pipe or a log file plain text
without ANSI codes, with a progress line (trials done, ETA) every ``progress_s`` seconds. ``level`` is
``warning`` (failures and the summary only: ``-q``), ``info`` (each job's decision) or ``debug``
(every batch, the decision's statistics and seeds, and failure tracebacks).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import numpy as np
from rich.console import Console as RichConsole
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from compiled_opt.core.metrics import Metric
from compiled_opt.core.stats import Across
from compiled_opt.store.records import (
    JobId,
    JobOutcome,
    MetricComparison,
    Metrics,
    ReferenceKind,
    RunState,
    Stage,
    Status,
)
from compiled_opt.tuning.jobs import JobSpec, TrialBatch

LEVELS = ("debug", "info", "warning")
RULE = "═" * 72
# the numbers behind a decision, shown first when a policy records them (all are stored)
DECISION_KEYS = (
    "incumbent_mean",
    "challenger_mean",
    "mean_difference",
    "se_difference",
    "statistic",
    "df",
    "p_value",
    "mc_se",
    "window_se",
    "relative_improvement",
    "threshold",
    "resolution_se",
    "runs_spent",
    "stopped",
    "stage_summary",
)


def se_reduction(runs: int) -> float:
    """How much N runs shrink the Monte Carlo standard error of a mean versus one run: 1 - 1/sqrt(N)."""
    return 1 - 1 / math.sqrt(runs)


def out_of_sample_line(changes: Sequence[float | None], label: str = "test MAE") -> str | None:
    """``test MAE vs defaults: better on k of n symbols (sign test p), median change, mean (sem), trimmed
    mean`` across symbols, from each symbol's relative change of MAE against the model's defaults."""
    a = Across.of([c for c in changes if c is not None])
    if a is None:
        return None
    sem = "one symbol: no sem" if a.sem is None else f"sem {100 * a.sem:.2f}%"
    return (
        f"{label} vs defaults: better on {a.better} of {a.n} symbols (sign test p={a.sign_p:.2g}), median change "
        f"{100 * a.median:+.2f}%, mean {100 * a.mean:+.2f}% ({sem}), {100 * Across.TRIM:.0f}%-trimmed mean "
        f"{100 * a.trimmed:+.2f}% (negative: lower error than the model's defaults)"
    )


def metrics_table(
    comparisons: Sequence[Mapping[str, MetricComparison]], metrics: Mapping[str, Metric], title: str = "Test metrics"
) -> Table | None:
    """Every metric across jobs: the stored configs', the models' defaults' and the naive forecast's mean, in
    the metric's own units, and the configs' difference from the defaults (mean over jobs, with its
    standard error over the jobs' paired differences, or over the windows for one job) and on how many
    jobs the config did better."""
    rows = [c for c in comparisons if c]
    if not rows:
        return None
    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    for name, justify in (
        ("Metric", "left"),
        ("Stored config", "right"),
        ("Model defaults", "right"),
        ("Naive", "right"),
        ("Config vs defaults", "right"),
        ("Better on", "right"),
        ("", "left"),
    ):
        table.add_column(name, justify=justify)
    for name, metric in metrics.items():
        per_job = [c[name] for c in rows if name in c]
        if not per_job:
            continue
        shown = {k: np.array([metric.shown(getattr(c, k)) for c in per_job]) for k in ("config", "defaults", "naive")}
        diff = shown["config"] - shown["defaults"]
        se = float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else per_job[0].se
        better = sum(c.difference > 0 for c in per_job)
        table.add_row(
            name,
            *(f"{shown[k].mean():.6g}" for k in ("config", "defaults", "naive")),
            f"{diff.mean():+.4g} ± {se:.2g}",
            f"{better} of {len(per_job)}",
            "higher is better" if metric.higher_is_better else "lower is better",
        )
    return table


def warnings_of(rows: Sequence[Mapping[str, Any]], label: str = "test") -> list[str]:
    """What a user must not miss: configs worse than the model's defaults by more than 2 standard errors or
    worse than the naive forecast, and a mean change that the median contradicts."""
    out = []
    for r in rows:
        where = f"{r['symbol']}/{r['model']}"
        change, se = r.get("test_change"), r.get("test_se")
        if change is not None and se is not None and change > 2 * se:
            out.append(
                f"{where}: worse than the model's defaults on {label} by {100 * change:+.2f}% "
                f"(more than 2 SE, {100 * se:.2f}%)"
            )
        if r.get("skill") is not None and r["skill"] < 0:
            out.append(f"{where}: worse than the naive forecast on {label} (skill {r['skill']:+.4f})")
    a = Across.of([r["test_change"] for r in rows if r.get("test_change") is not None])
    if a is not None and a.n > 1 and (a.mean > 0) != (a.median > 0):
        out.append(
            f"across symbols the mean change ({100 * a.mean:+.2f}%) and the median ({100 * a.median:+.2f}%)"
            " disagree: a few symbols drive the mean"
        )
    elif a is not None and a.median > 0:
        out.append(
            f"across symbols the stored configs are worse than the model's defaults on {label}"
            f" (median {100 * a.median:+.2f}%)"
        )
    return out


class Console:
    """The run's console output; see the module docstring."""

    def __init__(
        self, stream: TextIO | None = None, level: str = "info", json_summary: bool = False, progress_s: float = 10.0
    ):
        self.stream = stream
        self.level = LEVELS.index(level)
        self.json_summary = json_summary
        self.progress_s = progress_s
        self.progress: Progress | None = None
        self.task = None
        self._rich: RichConsole | None = None

    @property
    def out(self) -> RichConsole:
        stream = self.stream or sys.stdout
        if self._rich is None or self._rich.file is not stream:
            self._rich = RichConsole(
                file=stream, highlight=False, soft_wrap=True, width=None if stream.isatty() else 160
            )
        return self._rich

    def line(self, text: str = "", level: str = "info") -> None:
        if LEVELS.index(level) >= self.level:
            self.out.print(escape(text))

    # --- the run ----------------------------------------------------------------------------------

    def run_header(self, run_dir: Any, config: Any, executor: str, resumed: bool) -> None:
        self.line(f"Run {run_dir.run_id}{' (resumed)' if resumed else ''}: executor {executor}")
        self.line(f"  stored configs: {config.output.directory}/<model>/<SYMBOL>.json; run log: {run_dir.path}/")

    def stage(self, name: str, jobs: Sequence[JobSpec]) -> None:
        """The start of a stage: how much work it is."""
        if jobs:
            trials = sum(j.search.trials for j in jobs)
            self.line(f"{name}: {len(jobs)} job{'s' * (len(jobs) != 1)}, up to {trials} trials")

    def start_jobs(self, jobs: Sequence[JobSpec]) -> None:
        self.totals = {j.job_id: j.search.trials for j in jobs}
        self.best: dict[JobId, float] = {}
        self.done_trials: dict[JobId, int] = {}
        self.started = self.shown = time.monotonic()
        if self.out.is_terminal and self.level <= LEVELS.index("info") and jobs:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("trials"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.out,
                transient=True,
            )
            self.task = self.progress.add_task(f"{len(jobs)} jobs", total=sum(self.totals.values()))
            self.progress.start()

    def stop_jobs(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def batch(self, event: TrialBatch) -> None:
        scores = [r.score for r in event.rows if r.score is not None]
        if scores:
            self.best[event.job] = min(self.best.get(event.job, math.inf), min(scores))
        done = self.done_trials[event.job] = self.done_trials.get(event.job, 0) + len(event.rows)
        if self.progress is not None:
            self.progress.update(self.task, advance=len(event.rows))
        failed = sum(r.score is None for r in event.rows)
        secs = sum(r.latency_s for r in event.rows) / len(event.rows)
        self.line(
            f"  {event.job}: {done}/{self.totals.get(event.job, done)} trials | best so far "
            f"{self.best.get(event.job, math.nan):.6f} | {secs:.4f} s/trial"
            + (f" | {failed} failed" if failed else ""),
            level="debug",
        )
        if self.progress is None and time.monotonic() - self.shown >= self.progress_s:
            self.line(self.progress_line())

    def progress_line(self) -> str:
        """``progress: 120/400 trials (30%), 1 of 4 jobs done, 0:42 elapsed, about 1:38 left``."""
        self.shown = now = time.monotonic()
        done, total = sum(self.done_trials.values()), max(sum(self.totals.values()), 1)
        finished = sum(self.done_trials.get(j, 0) >= n for j, n in self.totals.items())
        elapsed = now - self.started
        left = f", about {_clock(elapsed / done * (total - done))} left" if done else ""
        return (
            f"  progress: {done}/{total} trials ({100 * done / total:.0f}%), {finished} of {len(self.totals)}"
            f" jobs done, {_clock(elapsed)} elapsed{left}"
        )

    def job_failed(self, job: JobId, error: str, trace: str) -> None:
        self.line(f"FAILED {job}: {error}", level="warning")
        if trace:
            self.line(trace, level="warning")

    def job_done(self, job: JobSpec, done: JobOutcome, metrics: Mapping[str, Metric]) -> None:
        if self.level > LEVELS.index("info"):
            return
        if job.stage is Stage.POOLED:
            what = "pooled config" if done.status is Status.POOLED else "model defaults kept as the pooled config"
            self.line(f"Pooled stage {job.job_id}: {what} {dict(done.config)}: {done.decision.reason}")
            return
        self._job_block(job, done)
        shown = [
            f"{name} {' | '.join(f'{metric.shown(getattr(c, k)):.4g}' for k in ('config', 'defaults', 'naive'))}"
            for name, metric in metrics.items()
            for c in [done.out_of_sample.metrics.get(name)]
            if c is not None and name != "pct_return_mae"
        ]
        if shown:
            self.line(f"  Test metrics (stored | defaults | naive): {', '.join(shown)}")

    def _job_block(self, job: JobSpec, done: JobOutcome) -> None:
        runs, search = len(job.seeds.search), done.search
        self.line(RULE)
        self.line(f"Optimizing {job.model} (backend {job.backend}) for {job.symbol}")
        self.line(
            f"Trials: {search.trials} | Validation windows: {len(job.validation[0])} | Test windows: {len(job.test[0])}"
        )
        if done.challenger_validation.exact:
            self.line(
                "Eval runs per config: 1 (exact aggregates from the predictive distribution: no Monte Carlo noise)"
            )
        else:
            self.line(
                f"Eval runs per config: {runs} (Monte Carlo standard error {100 * se_reduction(runs):.0f}% "
                f"lower than one run: 1 - 1/sqrt({runs}))"
            )
        self.line(
            f"Search: {search.method} | Acceptance policy: {job.policy} | Reference: "
            f"{'stored config' if job.reference_kind is ReferenceKind.STORED else 'model defaults'}"
        )
        self.line(RULE)
        extra = ", ".join(f"{n} {w}" for n, w in ((search.cached, "cached"), (search.failed, "failed")) if n)
        self.line(
            f"  Scored {search.trials} trials{f' ({extra})' if extra else ''}; recommendation: {search.challenger}"
        )
        gate = done.decision.pooled_gate
        if gate:
            self.line(f"  Against the pooled config: p={gate.p_value:.3g} ({'kept own' if gate.accept else 'pooled'})")
        self.evaluation("Reference ", done.reference_validation)
        self.evaluation("Challenger", done.challenger_validation)
        reason = done.decision.reason
        self.decision(
            done.replaced,
            reason if done.status is not Status.FORCED else f"forced (--force); {reason}",
            {**done.decision.stats, "resolution_se": done.decision.resolution_se},
        )
        oos = done.out_of_sample
        self.line(
            f"  Test (never used to choose), {'stored' if done.replaced else 'kept'} config: MAE "
            f"{oos.config_mae:.6f}, skill {oos.skill:+.4f} against the naive forecast; vs the model's defaults "
            f"{100 * oos.change:+.2f}% (SE {100 * oos.relative_se:.2f}%)"
        )

    def evaluation(self, label: str, m: Metrics) -> None:
        spread = (
            "exact: no Monte Carlo spread"
            if m.exact
            else f"Monte Carlo sd {m.std:.6f}, sem {m.sem:.6f} over {m.runs} runs"
        )
        self.line(
            f"  {label}: MAE {m.value:.6f} ({spread}; window-to-window sd {m.window_sd:.6f}, sem {m.window_sem:.6f})"
        )

    def decision(self, accept: bool, reason: str, stats: Mapping[str, Any]) -> None:
        self.line(f"  {'UPDATING' if accept else 'NOT updating'} config: {reason}")
        shown = {k: stats[k] for k in DECISION_KEYS if stats.get(k) is not None}
        if shown:
            self.line("    " + ", ".join(f"{k}={_fmt(v)}" for k, v in shown.items()), level="debug")
        if stats.get("seeds"):
            self.line(f"    seeds: {stats['seeds']}", level="debug")

    def table(self, table: Table) -> None:
        self.out.print(table)

    def summary(
        self,
        results: Sequence[JobOutcome | JobId],
        state: RunState,
        run_dir: Any,
        next_steps: str,
        skipped: Mapping[str, str] | None = None,
        metrics: Mapping[str, Metric] | None = None,
    ) -> None:
        """The run's table, one row per (symbol, model) job (a failed job: its id), the lines across them,
        its warnings, and the commands that look at the results (``next_steps``)."""
        rows = [summary_row(r, state) for r in results]
        line = out_of_sample_line([r["test_change"] for r in rows])
        warnings = warnings_of(rows)
        if self.json_summary:
            print(
                json.dumps(
                    {
                        "run_id": run_dir.run_id,
                        "run_dir": str(run_dir.path),
                        "jobs": rows,
                        "out_of_sample": line,
                        "warnings": warnings,
                        "skipped": dict(skipped or {}),
                    }
                ),
                file=self.stream or sys.stdout,
            )
            return
        table = Table(title=f"Run {run_dir.run_id}", title_justify="left", box=None, pad_edge=False)
        for name, justify in (
            ("Symbol", "left"),
            ("Model", "left"),
            ("Status", "left"),
            ("Kept val MAE", "right"),
            ("Challenger val MAE", "right"),
            ("Val improvement", "right"),
            ("Test MAE", "right"),
            ("Skill", "right"),
            ("Test MAE vs defaults", "right"),
        ):
            table.add_column(name, justify=justify)
        for r in rows:
            flag = " (below resolution)" if r["below_resolution"] else ""
            change = "-" if r["test_change"] is None else f"{100 * r['test_change']:+.2f}% ± {100 * r['test_se']:.2f}%"
            table.add_row(
                r["symbol"],
                r["model"],
                r["status"] + flag,
                _fmt(r["validation_mae"]),
                _fmt(r["challenger_mae"]),
                _pct(r["improvement"]),
                _fmt(r["test_mae"]),
                _fmt(r["skill"], "+.4f"),
                change,
            )
        self.out.print(table)
        finished = [r.out_of_sample.metrics for r in results if isinstance(r, JobOutcome)]
        across = metrics_table(
            finished,
            metrics or {},
            "Test metrics across jobs (stored configs against the models' defaults and the naive forecast)",
        )
        if across is not None:
            self.out.print(across)
        for r in rows:
            if r["status"] == Status.FAILED:
                self.line(f"  {r['symbol']}/{r['model']} failed: {r['error']}", level="warning")
        for symbol, why in (skipped or {}).items():
            self.line(f"  {symbol} skipped: {why}", level="warning")
        self.line(counts_line([r["status"] for r in rows], len(skipped or {})), level="warning")
        if line:
            self.line(line, level="warning")
        for text in warnings:
            self.line(f"WARNING: {text}", level="warning")
        if any(r["status"] == Status.FAILED for r in rows):
            self.line(f"Tracebacks of the failures: {run_dir.errors_path}", level="warning")
        self.line(f"Run log: {run_dir.path}/", level="warning")
        self.line(f"Look at the results: {next_steps}", level="warning")


def counts_line(statuses: Sequence[str], skipped: int = 0) -> str:
    """``4 jobs: 3 stored (tuned 1, pooled 2), 0 kept, 1 failed`` (and the skipped symbols, if any)."""
    stored = [s for s in statuses if Status(s).stores]
    parts = ", ".join(f"{s.value} {stored.count(s)}" for s in Status if s.stores and stored.count(s))
    text = (
        f"{len(statuses)} jobs: {len(stored)} stored{f' ({parts})' if parts else ''}, "
        f"{list(statuses).count(Status.KEPT)} kept, {list(statuses).count(Status.FAILED)} failed"
    )
    return text + (f"; {skipped} symbol{'s' * (skipped != 1)} skipped" if skipped else "")


def summary_row(result: JobOutcome | JobId, state: RunState) -> dict[str, Any]:
    """One summary line as plain values: the kept config's validation and test errors, the decision's numbers."""
    if isinstance(result, JobId):
        job = state.jobs.get(result)
        return {
            "symbol": result.symbol,
            "model": result.model,
            "status": Status.FAILED.value,
            "error": job.error if job else "",
            "validation_mae": None,
            "challenger_mae": None,
            "improvement": None,
            "test_mae": None,
            "test_change": None,
            "test_se": None,
            "skill": None,
            "below_resolution": False,
        }
    oos = result.out_of_sample
    return {
        "symbol": result.job.symbol,
        "model": result.job.model,
        "status": result.status.value,
        "error": "",
        "validation_mae": result.kept_validation.value,
        "challenger_mae": result.challenger_validation.value,
        "improvement": result.improvement,
        "test_mae": oos.config_mae,
        "test_change": oos.change,
        "test_se": oos.relative_se,
        "skill": oos.skill,
        "below_resolution": result.decision.below_resolution,
    }


def _clock(seconds: float) -> str:
    """``1:05`` or ``2:01:05``."""
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.2f}%"


def _fmt(value: Any, spec: str = ".6g") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)
