"""The unit of work: a (symbol, model) job, or a model's pooled stage over every symbol.

The driver builds ``JobSpec``s (plain, picklable data) and collects ``JobResult``s; a worker
(``tuning.worker``) loads each model once and runs many jobs, streaming each finished batch of
trials back as a ``TrialBatch``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from compiled_opt.core.config import RuntimeConfig
from compiled_opt.core.data import Series
from compiled_opt.core.evaluate import Evaluation
from compiled_opt.store.records import Gate, JobId, ReferenceKind, Stage, TrialRow
from compiled_opt.tuning.acceptance import Decision
from compiled_opt.tuning.models import ModelSpec
from compiled_opt.tuning.search import Logged

POOLED_SYMBOL = "(pooled)"  # the pooled stage's symbol in the trial log


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

    job_id: JobId
    run_id: str
    backend: str
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
    reference_kind: ReferenceKind
    pooled: dict[str, Any] | None = None
    pooled_alpha: float = 0.05
    replay: tuple[Logged, ...] = ()
    unused: tuple[str, ...] = ()  # parameters without effect under the fixed ones: not stored
    levels: tuple[float, ...] = (0.1, 0.5, 0.9)  # the quantiles pinball loss scores (forecast.quantiles)
    cost: float = 0.0  # per unit of position change, for the sign strategy's return (evaluation.cost)
    shards: int = 1  # the pooled stage: groups of symbols an executor may evaluate apart (pooled.shards)

    @property
    def model(self) -> str:
        return self.job_id.model

    @property
    def stage(self) -> Stage:
        return self.job_id.stage

    @property
    def symbol(self) -> str:
        """The symbol, or ``(pooled)`` for the pooled stage (as the trial log names it)."""
        return self.job_id.symbol or POOLED_SYMBOL


@dataclass(frozen=True)
class TrialBatch:
    """A finished batch of one job's trials, streamed to the driver as it finishes."""

    job: JobId
    batch: int
    rows: list[TrialRow]
    tracebacks: list[str]


@dataclass(frozen=True)
class JobResult:
    """What a worker found for one job: the search, the decision (with the evaluations it was made from and
    their resolution, see ``acceptance.judge``), the test windows, and the device and dtype it ran on."""

    method: str
    trials: int
    failed: int
    cached: int
    incumbent_suggested: bool
    challenger: dict[str, Any]
    decision: Decision
    challenger_val: Evaluation
    reference_val: Evaluation
    resolution_se: float
    below_resolution: bool
    test: dict[str, Evaluation]  # "challenger", "reference", "defaults": on the decision seeds
    device: str
    dtype: str
    gate: Gate | None = None  # the pooled-stage test, when it ran


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker loads once: every model of the run, on the run's runtime."""

    models: dict[str, ModelSpec]
    runtime: RuntimeConfig
    config_path: str
    horizon: int = 1
    dtypes: dict[str, str] = field(default_factory=dict)  # per model, where it differs from runtime.dtype


def logged_trials(rows: list[TrialRow]) -> tuple[Logged, ...]:
    """An interrupted job's logged trials, to replay when it resumes."""
    return tuple(Logged(json.loads(r.params), r.score) for r in sorted(rows, key=lambda r: r.trial))
