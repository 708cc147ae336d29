"""What a finished job did: a pure function from its spec, its result and the record stored before it.

``outcome(job, result, prior, context)`` decides the job's status (``store.records.Status``), the
config it leaves in place, and the record to store when it changes anything. It reads no file and
writes none: the driver stores what it returns.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import compiled_opt
from compiled_opt.store.records import (
    DecisionRecord,
    JobOutcome,
    Metadata,
    Metrics,
    OutOfSample,
    Previous,
    RecordSeeds,
    ReferenceKind,
    SearchRecord,
    Stage,
    Status,
    StoredRecord,
    Windows,
)
from compiled_opt.tuning.jobs import JobResult, JobSpec


@dataclass(frozen=True)
class Context:
    """What a record needs from the run besides the job: the run's ids, flags and settings, and the time."""

    run_id: str
    run_seed: int
    force: bool
    val_window: int
    test_window: int
    policy: str
    policy_options: dict[str, Any]
    compile_mode: str
    mode: str
    optimizer: str
    metric: str
    created_at: str


def status_of(job: JobSpec, result: JobResult, force: bool) -> Status:
    """The job's status. A pooled stage: ``pooled`` when its search beat the model's defaults, else ``kept
    defaults``. A symbol's job: accepted, ``pooled`` when the winner is the pooled config, else ``tuned``;
    rejected, ``forced`` under ``--force``, else what stays: the defaults (first run) or the stored config."""
    accepted = result.decision.accept
    if job.stage is Stage.POOLED:
        return Status.POOLED if accepted else Status.KEPT_DEFAULTS
    if accepted:
        return Status.POOLED if result.challenger == job.pooled else Status.TUNED
    if force:
        return Status.FORCED
    return Status.KEPT_DEFAULTS if job.reference_kind is ReferenceKind.DEFAULTS else Status.KEPT


def outcome(job: JobSpec, result: JobResult, prior: StoredRecord | None, context: Context) -> JobOutcome:
    """The job's outcome, with the record to store when the job changes what is stored (``record``).

    ``prior`` is the record stored before the run (``None``: none). A pooled stage stores no record:
    its config is each symbol's first candidate.
    """
    status = status_of(job, result, context.force)
    replaced = result.decision.accept or status is Status.FORCED
    which = "challenger" if replaced else "reference"
    kept = result.challenger if replaced else job.reference
    verdict = result.decision
    decision = DecisionRecord(
        accepted=verdict.accept,
        reason=verdict.reason,
        policy=context.policy,
        options=dict(context.policy_options),
        stats=dict(verdict.stats),
        resolution_se=result.resolution_se,
        below_resolution=result.below_resolution,
        pooled_gate=result.gate,
    )
    search = SearchRecord(
        method=result.method,
        trials=result.trials,
        failed=result.failed,
        cached=result.cached,
        incumbent_suggested=result.incumbent_suggested,
        challenger=result.challenger,
        pooled_config=job.pooled,
    )
    done = JobOutcome(
        job=job.job_id,
        status=status,
        reference_kind=job.reference_kind,
        config=kept,
        decision=decision,
        challenger_validation=Metrics.of(result.challenger_val),
        reference_validation=Metrics.of(result.reference_val),
        test=Metrics.of(result.test[which]),
        out_of_sample=OutOfSample.of(result.test[which], result.test["defaults"]),
        search=search,
    )
    if job.stage is Stage.POOLED or not status.stores:
        return done
    return dataclasses.replace(done, record=_record(job, result, prior, context, done))


def _record(
    job: JobSpec, result: JobResult, prior: StoredRecord | None, context: Context, done: JobOutcome
) -> StoredRecord:
    series, validation, test = job.series[0], job.validation[0], job.test[0]
    return StoredRecord(
        symbol=series.symbol,
        model=job.model,
        backend=job.backend,
        status=done.status,
        config={k: v for k, v in done.config.items() if k not in job.unused},
        validation=done.kept_validation,
        test=done.test,
        out_of_sample=done.out_of_sample,
        windows=Windows(
            context.val_window,
            context.test_window,
            job.horizon,
            (validation.start, validation.stop - 1),
            (test.start, test.stop - 1),
        ),
        seeds=RecordSeeds(list(job.seeds.search), list(job.seeds.decision), context.run_seed, job.search.seed),
        decision=done.decision,
        previous=Previous(
            job.reference_kind,
            job.reference if job.reference_kind is ReferenceKind.STORED else None,
            done.reference_validation,
        ),
        search=done.search,
        metadata=Metadata(
            engine_version=compiled_opt.__version__,
            run_id=context.run_id,
            created_at=context.created_at,
            previous_mae=prior.validation.value if prior else None,
            generation=(prior.metadata.generation if prior else 0) + 1,
            compiled=context.compile_mode != "none",
            compile_mode=context.compile_mode,
            device=result.device,
            dtype=result.dtype,
            mode=context.mode,
            optimizer=context.optimizer,
            metric=context.metric,
            data_file=str(series.path),
            data_rows=len(series),
            last_timestamp=int(series.time[-1]),
        ),
    )
