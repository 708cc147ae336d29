"""The outcome of a finished job, a pure function: every status, the config left in place, the record stored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from compiled_opt.core.data import Series
from compiled_opt.core.evaluate import Evaluation
from compiled_opt.core.metrics import builtin_metrics
from compiled_opt.run.outcome import Context, outcome
from compiled_opt.store.records import (
    JobId,
    Metadata,
    Metrics,
    ReferenceKind,
    Stage,
    Status,
    StoredRecord,
    Windows,
    load_outcomes,
    outcomes_json,
)
from compiled_opt.tuning.acceptance import Decision
from compiled_opt.tuning.jobs import JobResult, JobSpec, SearchSpec, Seeds

DEFAULTS = {"lookback": 60, "aggregate": "median"}
STORED = {"lookback": 40, "aggregate": "mean"}
POOLED = {"lookback": 80, "aggregate": "mean"}
CHALLENGER = {"lookback": 20, "aggregate": "mean"}
CONTEXT = Context(
    run_id="R2",
    run_seed=7,
    force=False,
    val_window=30,
    test_window=20,
    policy="any_improvement",
    policy_options={},
    compile_mode="none",
    mode="default",
    optimizer="TwoPointsDE",
    metric="pct_return_mae",
    created_at="2026-12-02T00:00:00+00:00",
)
SERIES = Series(
    "APP", Path("APP.parquet"), torch.arange(100, dtype=torch.int64) * 86400, torch.ones(100, 6, dtype=torch.float64)
)


def evaluation(level: float, windows: int = 20) -> Evaluation:
    """An evaluation of every metric, as the test windows get (``every_metric``)."""
    errors = np.full((3, windows), level) + np.linspace(0, 1e-4, windows)
    naive = np.full(windows, 0.02)
    return Evaluation(
        errors,
        errors * 100,
        (1, 2, 3),
        tuple(range(windows)),
        0.01,
        return_errors=errors,
        naive_errors=naive,
        losses={m.name: errors for m in builtin_metrics()},
        naive_losses={m.name: naive for m in builtin_metrics()},
    )


def job(
    stage: Stage = Stage.SEARCH, kind: ReferenceKind = ReferenceKind.DEFAULTS, pooled: dict | None = None
) -> JobSpec:
    reference = STORED if kind is ReferenceKind.STORED else DEFAULTS
    return JobSpec(
        job_id=JobId("m", "APP" if stage is Stage.SEARCH else None),
        run_id="R2",
        backend="bootstrap",
        series=(SERIES,),
        validation=(range(50, 80),),
        test=(range(80, 100),),
        horizon=1,
        metric="pct_return_mae",
        seeds=Seeds((1, 2, 3), (4, 5, 6), (7, 8, 9)),
        search=SearchSpec("TwoPointsDE", 8, 4, 11, False),
        policy="any_improvement",
        policy_options={},
        reference=reference,
        reference_kind=kind,
        pooled=pooled,
    )


def result(accept: bool, challenger: dict = CHALLENGER) -> JobResult:
    better, worse = evaluation(0.010), evaluation(0.012)
    return JobResult(
        method="TwoPointsDE",
        trials=8,
        failed=1,
        cached=2,
        incumbent_suggested=True,
        challenger=challenger,
        decision=Decision(accept, "because", {"relative_improvement": 0.1}),
        challenger_val=better if accept else worse,
        reference_val=worse if accept else better,
        resolution_se=1e-5,
        below_resolution=False,
        test={"challenger": evaluation(0.020), "reference": evaluation(0.021), "defaults": evaluation(0.022)},
        device="cpu",
        dtype="float32",
    )


PRIOR = StoredRecord(
    symbol="APP",
    model="m",
    backend="bootstrap",
    status=Status.TUNED,
    config=STORED,
    validation=Metrics.of(evaluation(0.011)),
    test=Metrics.of(evaluation(0.021)),
    out_of_sample=None,
    windows=Windows(30, 20, 1),
    seeds=None,
    decision=None,
    previous=None,
    search=None,
    metadata=Metadata(run_id="R1", generation=3),
)


@pytest.mark.parametrize(
    "spec, res, force, status, kept",
    [
        (job(), result(True), False, Status.TUNED, CHALLENGER),
        (job(kind=ReferenceKind.STORED), result(True), False, Status.TUNED, CHALLENGER),
        (job(pooled=POOLED), result(True, POOLED), False, Status.POOLED, POOLED),
        (job(pooled=POOLED), result(True), False, Status.TUNED, CHALLENGER),
        (job(), result(False), False, Status.KEPT_DEFAULTS, DEFAULTS),
        (job(kind=ReferenceKind.STORED), result(False), False, Status.KEPT, STORED),
        (job(kind=ReferenceKind.STORED), result(False), True, Status.FORCED, CHALLENGER),
        (job(Stage.POOLED), result(True), False, Status.POOLED, CHALLENGER),
        (job(Stage.POOLED), result(False), False, Status.KEPT_DEFAULTS, DEFAULTS),
        (job(Stage.POOLED), result(False), True, Status.KEPT_DEFAULTS, DEFAULTS),  # --force is for symbols' configs
    ],
)
def test_every_status_and_the_config_it_leaves(spec, res, force, status, kept):
    context = Context(**{**vars(CONTEXT), "force": force})
    done = outcome(spec, res, PRIOR if spec.reference_kind is ReferenceKind.STORED else None, context)
    assert done.status is status and done.config == kept and done.job == spec.job_id
    replaced = kept is not spec.reference
    assert done.replaced == replaced
    assert done.kept_validation == Metrics.of(res.challenger_val if replaced else res.reference_val)
    which = "challenger" if replaced else "reference"
    assert done.test == Metrics.of(res.test[which])
    assert done.out_of_sample.config_mae == res.test[which].mean
    assert done.out_of_sample.defaults_mae == res.test["defaults"].mean
    stores = status.stores and spec.stage is Stage.SEARCH
    assert (done.record is not None) == stores
    if stores:
        assert done.record.status is status and done.record.config == kept
        assert done.record.validation == done.kept_validation


def test_the_record_carries_its_provenance():
    done = outcome(job(kind=ReferenceKind.STORED), result(True), PRIOR, CONTEXT)
    r = done.record
    assert r.metadata.generation == 4 and r.metadata.previous_mae == PRIOR.validation.value
    assert r.metadata.run_id == "R2" and r.metadata.device == "cpu" and r.metadata.dtype == "float32"
    assert r.metadata.data_rows == 100 and r.metadata.last_timestamp == 99 * 86400
    assert r.previous.kind is ReferenceKind.STORED and r.previous.config == STORED
    assert r.windows.validation_rows == (50, 79) and r.windows.test_rows == (80, 99)
    assert r.seeds.search == [1, 2, 3] and r.seeds.decision == [4, 5, 6] and r.seeds.optimizer == 11
    assert r.decision.policy == "any_improvement" and r.decision.stats == {"relative_improvement": 0.1}
    assert r.search.failed == 1 and r.search.cached == 2 and r.search.challenger == CHALLENGER


def test_a_first_run_starts_at_generation_one_and_records_no_previous_config():
    r = outcome(job(), result(True), None, CONTEXT).record
    assert r.metadata.generation == 1 and r.metadata.previous_mae is None
    assert r.previous.kind is ReferenceKind.DEFAULTS and r.previous.config is None


def test_the_outcome_round_trips_through_its_file_format():
    done = outcome(job(kind=ReferenceKind.STORED), result(True), PRIOR, CONTEXT)
    assert load_outcomes(json.loads(json.dumps(outcomes_json([done]))), "x") == [done]
