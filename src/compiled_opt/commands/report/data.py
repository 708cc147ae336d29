"""What a run's report shows, gathered from the run folder alone (no drawing, no HTML).

Per job: its trials (``read_trials``), its state in ``run.json`` and its outcome (``outcomes/``):
the decision, the kept config's validation and test figures, and the model's defaults. The stores
are not read, so a report shows what the run decided, whatever later runs stored.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiled_opt.core.config import Config
from compiled_opt.store.records import JobId, JobOutcome, ReferenceKind, RunState, Stage, Status, TrialRow
from compiled_opt.store.stores import find_run, read_trials


@dataclass(frozen=True)
class Comparison:
    """Mean errors of the kept config, the model's defaults and the naive forecast; ``None`` where this
    run did not score it. ``test_change``/``test_se`` are relative to the defaults."""

    validation: float | None
    defaults_validation: float | None
    naive_validation: float | None
    test: float | None = None
    defaults_test: float | None = None
    naive_test: float | None = None
    test_change: float | None = None
    test_se: float | None = None


@dataclass(frozen=True)
class JobReport:
    """One job of the run: a (symbol, model) search, or a model's pooled stage."""

    job: JobId
    status: Status
    error: str
    trials: list[TrialRow]
    outcome: JobOutcome | None  # None: the job failed or was interrupted
    defaults: dict[str, Any] | None  # the model's own configuration

    @property
    def chosen(self) -> dict[str, Any] | None:
        """The config this job left in place (or the pooled stage chose)."""
        return self.outcome.config if self.outcome else None

    def comparison(self) -> Comparison:
        defaults_val = self._trial_score(self.defaults)
        o = self.outcome
        if o is None:
            naive = next((t.naive_mae for t in self.trials if t.naive_mae is not None), None)
            return Comparison(None, defaults_val, naive)
        if o.reference_kind is ReferenceKind.DEFAULTS:  # re-scored on the decision's seeds, as the kept config was
            defaults_val = o.reference_validation.value
        oos, kept = o.out_of_sample, o.kept_validation
        return Comparison(
            kept.value,
            defaults_val,
            kept.naive_mae,
            oos.config_mae,
            oos.defaults_mae,
            oos.naive_mae,
            oos.change,
            oos.relative_se,
        )

    def _trial_score(self, params: Mapping[str, Any] | None) -> float | None:
        if params is None:
            return None
        return next(
            (t.score for t in self.trials if t.score is not None and json.loads(t.params) == dict(params)), None
        )


@dataclass(frozen=True)
class RunReport:
    run_id: str
    state: RunState
    run_path: Path
    jobs: list[JobReport]

    @property
    def searches(self) -> list[JobReport]:
        return [j for j in self.jobs if j.job.stage is Stage.SEARCH]


def gather(config: Config, which: str, where: str) -> RunReport:
    """The run ``which`` (an id or ``latest``) under ``config.output.runs``: its jobs, pooled stages first."""
    run = find_run(config.output.runs, which, where, config.path)
    state = run.load_state()
    outcomes = run.load_outcomes()
    trials: dict[JobId, list[TrialRow]] = {}
    for row in read_trials(
        run.path, lambda problem: print(f"warning: {problem}: left out of the report", file=sys.stderr)
    ):
        trials.setdefault(row.job, []).append(row)
    ids = list(dict.fromkeys([*state.jobs, *outcomes, *trials]))
    ids.sort(key=lambda j: (j.stage is Stage.SEARCH, j.symbol or "", j.model))
    jobs = []
    for job in ids:
        job_state, done = state.jobs.get(job), outcomes.get(job)
        status = done.status if done else Status.FAILED if job_state and job_state.error else Status.INTERRUPTED
        jobs.append(
            JobReport(
                job,
                status,
                job_state.error if job_state else "",
                trials.get(job, []),
                done,
                state.defaults.get(job.model),
            )
        )
    return RunReport(state.run_id, state, run.path, jobs)
