"""The worker: loads every model once and runs job after job, streaming each finished batch back.

Workers never write stores or logs: the driver is the only writer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy import stats as st

from compiled_opt.core.backend import ModelBackend, Runtime
from compiled_opt.core.data import Series
from compiled_opt.core.errors import UsageError
from compiled_opt.core.evaluate import Caches, Evaluation, Evaluator, PooledEvaluator
from compiled_opt.core.registry import Plugins
from compiled_opt.core.stats import window_standard_error
from compiled_opt.store.records import Gate, TrialRow
from compiled_opt.tuning.acceptance import Policy, judge
from compiled_opt.tuning.jobs import JobResult, JobSpec, TrialBatch, WorkerSetup
from compiled_opt.tuning.models import ModelSpec, build_backend, resolve_runtime
from compiled_opt.tuning.racing import Race
from compiled_opt.tuning.search import ScoreMemo, Trial, params_key, search


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
        self.metrics = {name: self.plugins.metrics.get(name) for name in self.plugins.metrics}
        # shared by every job: a symbol's own search reuses the encodes and draws of the pooled stage's search
        self.caches = Caches.for_device(self.runtime.device)
        self.backends: dict[str, ModelBackend] = {
            name: build_backend(spec, self.plugins, self.model_runtime(name), f"{setup.config_path}: models.{name}")
            for name, spec in setup.models.items()
        }
        for name, backend in self.backends.items():  # a loaded model may know a tighter limit than its class
            if backend.max_horizon is not None and setup.horizon > backend.max_horizon:
                raise UsageError(
                    f"model {name!r} forecasts at most {backend.max_horizon} step(s) ahead, not {setup.horizon}",
                    f"{setup.config_path}: data.horizon",
                )

    def model_runtime(self, name: str) -> Runtime:
        """The worker's runtime with model ``name``'s dtype."""
        dtype = self.setup.dtypes.get(name, self.setup.runtime.dtype)
        return dataclasses.replace(self.runtime, dtype=getattr(torch, dtype))

    def evaluator(
        self,
        model: str,
        series: Sequence[Series],
        rows: Sequence[range],
        horizon: int,
        metric: str,
        sample_cache: bool = True,
        levels: Sequence[float] = (0.1, 0.5, 0.9),
        cost: float = 0.0,
    ) -> ScoreMemo:
        """Scores configs of ``model`` on the given rows of each series (several: pooled), memoised; with
        ``sample_cache`` (for many configs, as a search scores) through the model's sample cache. Every
        registered metric is there for evaluations of all of them (``levels`` and ``cost``: see
        ``Evaluator``)."""
        spec = self.setup.models[model]
        max_samples = spec.max_samples if sample_cache else None
        parts = [
            Evaluator(
                self.backends[model],
                self.aggregators,
                s,
                r,
                horizon,
                metric,
                self.caches,
                name=spec.backend,
                max_samples=max_samples,
                metrics=self.metrics,
                levels=levels,
                cost=cost,
            )
            for s, r in zip(series, rows, strict=True)
        ]
        return ScoreMemo(parts[0] if len(parts) == 1 else PooledEvaluator(parts))

    def _evaluator(self, job: JobSpec, which: str, sample_cache: bool) -> ScoreMemo:
        return self.evaluator(
            job.model, job.series, getattr(job, which), job.horizon, job.metric, sample_cache, job.levels, job.cost
        )

    def run(self, job: JobSpec, emit: Callable[[TrialBatch], None]) -> JobResult:
        """Search, gate against the pooled config, judge against the reference, score the test windows."""
        runtime = self.backends[job.model].runtime
        return run_search(
            job,
            self.setup.models[job.model],
            self.plugins,
            lambda which, sample_cache: self._evaluator(job, which, sample_cache),
            emit,
            runtime.device,
            str(runtime.dtype).removeprefix("torch."),
        )


Evaluators = Callable[[str, bool], ScoreMemo]  # ("validation" or "test", through the sample cache) -> scorer


def run_search(
    job: JobSpec,
    spec: ModelSpec,
    plugins: Plugins,
    evaluators: Evaluators,
    emit: Callable[[TrialBatch], None],
    device: str,
    dtype: str,
) -> JobResult:
    """One job through ``evaluators``: search, gate against the pooled config, judge against the reference,
    score the test windows. ``device`` and ``dtype`` are where the evaluations ran."""
    policy: Policy = plugins.policies.build(job.policy, job.policy_options, "acceptance.options")
    validation = evaluators("validation", True)
    s = job.search
    scorer = (
        validation if s.racing_max_runs is None else Race(validation, max_runs=s.racing_max_runs, replay=job.replay)
    )
    result = search(
        scorer,
        spec.space,
        spec.base,
        job.seeds.search,
        optimizer=s.optimizer,
        trials=s.trials,
        batch=s.batch,
        seed=s.seed,
        incumbent=job.pooled or job.reference,
        exhaustive=s.exhaustive,
        replay=job.replay,
        on_batch=lambda trials: emit(_batch(job, trials)),
    )
    challenger, gate = result.recommendation, None
    if job.pooled is not None and params_key(challenger) != params_key(job.pooled):
        once = evaluators("validation", False)  # two configs on seeds of their own
        gate = pooled_gate(once(challenger, job.seeds.gate), once(job.pooled, job.seeds.gate), job.pooled_alpha)
        challenger = challenger if gate.accept else job.pooled
    verdict = judge(policy, validation, challenger, job.reference, job.seeds.search, job.seeds.decision)
    test = evaluators("test", False)  # three configs at most: each draws its own count
    configs = {"challenger": challenger, "reference": job.reference, "defaults": spec.defaults}
    return JobResult(
        method=result.method,
        trials=len(result.trials),
        failed=sum(t.score is None for t in result.trials),
        cached=sum(t.cached for t in result.trials),
        incumbent_suggested=result.incumbent_suggested,
        challenger=challenger,
        decision=verdict.decision,
        challenger_val=verdict.challenger,
        reference_val=verdict.incumbent,
        resolution_se=verdict.resolution_se,
        below_resolution=verdict.below_resolution,
        test={k: test.evaluate(v, job.seeds.decision, every_metric=True) for k, v in configs.items()},
        device=device,
        dtype=dtype,
        gate=gate,
    )


def pooled_gate(own: Evaluation, pooled: Evaluation, alpha: float) -> Gate:
    """One-sided paired t-test over windows: is the symbol's own config better than the pooled one?"""
    d = pooled.errors.mean(axis=0) - own.errors.mean(axis=0)  # positive: own is better
    se = window_standard_error(d)
    t = float(d.mean() / se) if se > 0 else (np.inf if d.mean() > 0 else -np.inf)
    p = float(st.t.sf(t, d.size - 1))
    return Gate(
        "one-sided paired t-test over validation windows against the pooled config",
        float(d.mean()),
        se,
        t,
        int(d.size - 1),
        p,
        alpha,
        bool(p < alpha),
    )


def _batch(job: JobSpec, trials: list[Trial]) -> TrialBatch:
    rows = [trial_row(job, t) for t in trials]
    return TrialBatch(job.job_id, trials[0].batch, rows, [t.traceback for t in trials if t.traceback])


def trial_row(job: JobSpec, t: Trial) -> TrialRow:
    ev = t.evaluation
    return TrialRow(
        run_id=job.run_id,
        symbol=job.symbol,
        model=job.model,
        stage=job.stage,
        trial=t.number,
        batch=t.batch,
        params=params_key(t.params),
        score=t.score,
        std=ev.std if ev else None,
        sem=ev.sem if ev else None,
        per_run=[float(x) for x in ev.per_run] if ev else [],
        price_mae=ev.price_mae if ev else None,
        naive_mae=ev.naive_mae if ev else None,
        latency_s=0.0 if (ev is None or t.cached) else ev.latency_s,
        seeds=list(ev.seeds) if ev else [],
        cached=t.cached,
        error=t.error,
    )
