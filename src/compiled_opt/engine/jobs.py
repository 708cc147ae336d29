"""The unit of work: a (symbol, model) job, or a model's pooled stage over every symbol.

The driver builds ``JobSpec``s (plain, picklable data) and collects ``JobResult``s; a ``Worker``
loads each model once and runs many jobs, streaming each finished batch of trials back through a
callback. Workers never write stores or logs: the driver is the only writer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import stats as st

from compiled_opt.engine.acceptance import Decision, Policy, judge, window_standard_error
from compiled_opt.engine.backend import ModelBackend, Runtime
from compiled_opt.engine.config import RuntimeConfig
from compiled_opt.engine.data import Series
from compiled_opt.engine.errors import UsageError
from compiled_opt.engine.evaluate import Evaluation, Evaluator, PooledEvaluator
from compiled_opt.engine.models import ModelSpec, build_backend, resolve_runtime
from compiled_opt.engine.racing import Race
from compiled_opt.engine.records import TrialRow
from compiled_opt.engine.registry import Plugins, build
from compiled_opt.engine.search import Logged, ScoreMemo, Trial, params_key, search


@dataclass(frozen=True)
class Seeds:
    """Run seeds: ``search`` scores every candidate; ``decision`` scores the final comparison (when
    the policy asks to confirm) and the test windows; ``gate`` the pooled-stage test. The last two
    are drawn anew for every decision and were never used by the search."""

    search: tuple[int, ...]
    decision: tuple[int, ...]
    gate: tuple[int, ...]


@dataclass(frozen=True)
class SearchSpec:
    optimizer: str
    trials: int
    batch: int
    seed: int
    exhaustive: bool
    racing_max_runs: int | None = None  # racing on, up to this many runs


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs for one job; ``series`` holds one symbol, or all for the pooled stage.

    ``reference`` is what a challenger must beat: the stored config, else the model's defaults.
    ``pooled`` (per-symbol jobs with the pooled stage) is the pooled config: suggested first, and
    a symbol's own winner replaces it only if a one-sided paired t-test over the symbol's validation
    windows says it is better at level ``pooled_alpha``. ``replay`` re-tells logged trials (resume).
    """

    job_id: str
    run_id: str
    model: str
    backend: str
    stage: str  # "search" or "pooled"
    series: tuple[Series, ...]
    validation: tuple[range, ...]
    test: tuple[range, ...]
    horizon: int
    metric: str
    seeds: Seeds
    search: SearchSpec
    policy: str
    policy_options: dict[str, Any]
    reference: dict[str, Any]
    reference_kind: str  # "stored" or "defaults"
    pooled: dict[str, Any] | None = None
    pooled_alpha: float = 0.05
    replay: tuple[Logged, ...] = ()

    @property
    def symbol(self) -> str:
        return self.series[0].symbol if self.stage == "search" else "(pooled)"


@dataclass(frozen=True)
class TrialBatch:
    """A finished batch of one job's trials, streamed to the driver as it finishes."""

    job_id: str
    stage: str
    batch: int
    rows: list[TrialRow]
    tracebacks: list[str]


@dataclass(frozen=True)
class JobResult:
    """What the driver stores and reports for a finished job."""

    job_id: str
    method: str
    trials: int
    failed: int
    cached: int
    incumbent_suggested: bool
    challenger: dict[str, Any]
    decision: Decision
    challenger_val: Evaluation
    reference_val: Evaluation
    test: dict[str, Evaluation]  # "challenger", "reference", "defaults": on the decision seeds
    gate: dict[str, Any] | None = None  # the pooled-stage test, when it ran


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker loads once: every model of the run, on the run's runtime."""

    models: dict[str, ModelSpec]
    runtime: RuntimeConfig
    config_path: str
    horizon: int = 1
    dtypes: dict[str, str] = field(default_factory=dict)  # per model, where it differs from runtime.dtype


class Worker:
    """Loads every model once (``build_backend``) and runs jobs one after another."""

    def __init__(self, setup: WorkerSetup, plugins: Plugins | None = None):
        self.setup = setup
        self.plugins = plugins or Plugins.load()
        if setup.runtime.threads:
            torch.set_num_threads(setup.runtime.threads)
        where = f"{setup.config_path}: runtime.device"
        self.runtime: Runtime = resolve_runtime(setup.runtime, where)
        self.aggregators = {name: self.plugins.aggregators.get(name) for name in self.plugins.aggregators}
        self.backends: dict[str, ModelBackend] = {
            name: build_backend(spec, self.plugins, self.model_runtime(name), f"{setup.config_path}: models.{name}")
            for name, spec in setup.models.items()
        }
        for name, backend in self.backends.items():  # a loaded model may know a tighter limit than its class
            if backend.max_horizon is not None and setup.horizon > backend.max_horizon:
                raise UsageError(f"model {name!r} forecasts at most {backend.max_horizon} step(s) ahead, not"
                                 f" {setup.horizon}", f"{setup.config_path}: data.horizon")

    def model_runtime(self, name: str) -> Runtime:
        """The worker's runtime with model ``name``'s dtype."""
        return dataclasses.replace(self.runtime, dtype=getattr(torch, self.setup.dtypes.get(name, self.setup.runtime.dtype)))

    def evaluator(self, model: str, series: Sequence[Series], rows: Sequence[range], horizon: int,
                  metric: str) -> ScoreMemo:
        """Scores configs of ``model`` on the given rows of each series (several: pooled), memoised."""
        spec = self.setup.models[model]
        parts = [Evaluator(self.backends[model], self.aggregators, s, r, horizon, metric, name=spec.backend,
                           max_samples=spec.max_samples) for s, r in zip(series, rows, strict=True)]
        return ScoreMemo(parts[0] if len(parts) == 1 else PooledEvaluator(parts))

    def _evaluator(self, job: JobSpec, which: str) -> ScoreMemo:
        return self.evaluator(job.model, job.series, getattr(job, which), job.horizon, job.metric)

    def run(self, job: JobSpec, emit: Callable[[TrialBatch], None]) -> JobResult:
        """Search, gate against the pooled config, judge against the reference, score the test windows."""
        spec = self.setup.models[job.model]
        policy: Policy = build(self.plugins.policies.get(job.policy), job.policy_options, "acceptance.options")
        validation = self._evaluator(job, "validation")
        s = job.search
        scorer = validation if s.racing_max_runs is None else Race(validation, max_runs=s.racing_max_runs,
                                                                   replay=job.replay)
        result = search(scorer, spec.space, spec.base, job.seeds.search, optimizer=s.optimizer, trials=s.trials,
                        batch=s.batch, seed=s.seed, incumbent=job.pooled or job.reference, exhaustive=s.exhaustive,
                        replay=job.replay, on_batch=lambda trials: emit(_batch(job, trials)))
        challenger, gate = result.recommendation, None
        if job.pooled is not None and params_key(challenger) != params_key(job.pooled):
            gate = pooled_gate(validation(challenger, job.seeds.gate), validation(job.pooled, job.seeds.gate),
                               job.pooled_alpha)
            challenger = challenger if gate["accept"] else job.pooled
        verdict = judge(policy, validation, challenger, job.reference, job.seeds.search, job.seeds.decision)
        test = self._evaluator(job, "test")
        configs = {"challenger": challenger, "reference": job.reference, "defaults": spec.defaults}
        return JobResult(
            job_id=job.job_id, method=result.method, trials=len(result.trials),
            failed=sum(t.score is None for t in result.trials), cached=sum(t.cached for t in result.trials),
            incumbent_suggested=result.incumbent_suggested, challenger=challenger, decision=verdict.decision,
            challenger_val=verdict.challenger, reference_val=verdict.incumbent,
            test={k: test(v, job.seeds.decision) for k, v in configs.items()}, gate=gate,
        )


def pooled_gate(own: Evaluation, pooled: Evaluation, alpha: float) -> dict[str, Any]:
    """One-sided paired t-test over windows: is the symbol's own config better than the pooled one?"""
    d = pooled.errors.mean(axis=0) - own.errors.mean(axis=0)  # positive: own is better
    se = window_standard_error(d)
    t = float(d.mean() / se) if se > 0 else (np.inf if d.mean() > 0 else -np.inf)
    p = float(st.t.sf(t, d.size - 1))
    return {"test": "one-sided paired t-test over validation windows against the pooled config",
            "mean_difference": float(d.mean()), "se": se, "statistic": t, "df": int(d.size - 1), "p_value": p,
            "alpha": alpha, "accept": p < alpha}


def _batch(job: JobSpec, trials: list[Trial]) -> TrialBatch:
    rows = [trial_row(job, t) for t in trials]
    return TrialBatch(job.job_id, job.stage, trials[0].batch, rows, [t.traceback for t in trials if t.traceback])


def trial_row(job: JobSpec, t: Trial) -> TrialRow:
    ev = t.evaluation
    return TrialRow(
        run_id=job.run_id, job=job.job_id, symbol=job.symbol, model=job.model, stage=job.stage, trial=t.number,
        batch=t.batch, params=params_key(t.params), score=t.score, std=ev.std if ev else None,
        sem=ev.sem if ev else None, per_run=[float(x) for x in ev.per_run] if ev else [],
        price_mae=ev.price_mae if ev else None, naive_mae=ev.naive_mae if ev else None,
        latency_s=0.0 if (ev is None or t.cached) else ev.latency_s, seeds=list(ev.seeds) if ev else [],
        cached=t.cached, error=t.error,
    )


def logged_trials(rows: list[TrialRow]) -> tuple[Logged, ...]:
    """An interrupted job's logged trials, to replay when it resumes."""
    return tuple(Logged(json.loads(r.params), r.score) for r in sorted(rows, key=lambda r: r.trial))

