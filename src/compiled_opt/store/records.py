"""The on-disk formats, in one place: the stored config record, the job outcome, the trial row, the run state.

Every file carries ``schema_version`` and is read through ``store.typed``: a value of the wrong
type, a missing key or an unknown status is a one-line error naming the file and the key. A file
of an unknown or newer version is refused; records of earlier versions are read and migrated:
version 1 (compiled-opt 0.1, or the seed system's own files, without ``schema_version``) and 2.

A stored config stays readable by the seed system's own store, which reads ``config``,
``validation``, ``test`` (falling back to ``validation``) and ``metadata`` from
``hyperparams/<model>/<SYMBOL>.json``, and ``model`` and ``config`` from ``hyperparams/best/<SYMBOL>.json``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from compiled_opt.core.errors import UsageError
from compiled_opt.core.evaluate import Evaluation
from compiled_opt.core.stats import window_standard_error
from compiled_opt.store.typed import dump, load

SCHEMA_VERSION = 3


class Status(StrEnum):
    """What a job did: one vocabulary for the run's summary, ``show`` and ``report``."""

    TUNED = "tuned"
    POOLED = "pooled"
    KEPT_DEFAULTS = "kept defaults"
    FORCED = "forced"
    KEPT = "kept"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    @property
    def meaning(self) -> str:
        return MEANINGS[self]

    @property
    def stores(self) -> bool:
        """Whether a job with this status writes a stored config."""
        return self in (Status.TUNED, Status.POOLED, Status.KEPT_DEFAULTS, Status.FORCED)


MEANINGS = {
    Status.TUNED: "a searched config, accepted by the policy",
    Status.POOLED: "the model's pooled config (tuned on every symbol together): no per-symbol config beat it",
    Status.KEPT_DEFAULTS: "the model's own configuration: no searched config beat it",
    Status.FORCED: "stored with --force, whatever the policy said",
    Status.KEPT: "the config stored earlier stays: no searched config beat it (nothing written)",
    Status.FAILED: "the job failed; its stored config, if any, is untouched",
    Status.INTERRUPTED: "the run stopped before this job finished",
}


class Stage(StrEnum):
    SEARCH = "search"  # one symbol's search
    POOLED = "pooled"  # a model's pooled stage over every symbol


class ReferenceKind(StrEnum):
    """What a job's challenger had to beat."""

    STORED = "stored"
    DEFAULTS = "defaults"


class Progress(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class JobId:
    """A job: one model on one symbol, or (``symbol`` None) the model's pooled stage."""

    model: str
    symbol: str | None = None

    @property
    def stage(self) -> Stage:
        return Stage.POOLED if self.symbol is None else Stage.SEARCH

    def __str__(self) -> str:
        return f"{'pooled' if self.symbol is None else self.symbol}/{self.model}"


@dataclass(frozen=True)
class Metrics:
    """One evaluation as stored: the means, their spreads, and what they were computed from."""

    metric: str
    pct_return_mae: float
    price_mae: float
    std: float
    sem: float
    window_sd: float
    per_run: list[float]
    num_predictions: int
    latency_s: float
    exact: bool
    seeds: list[int]
    naive_mae: float | None = None
    skill: float | None = None
    score: float | None = None

    @classmethod
    def of(cls, ev: Evaluation) -> Metrics:
        return cls(
            metric=ev.metric,
            pct_return_mae=ev.pct_return_mae,
            price_mae=ev.price_mae,
            std=ev.std,
            sem=ev.sem,
            window_sd=ev.window_sd,
            per_run=[float(x) for x in ev.per_run],
            num_predictions=int(ev.errors.size),
            latency_s=ev.latency_s,
            exact=ev.exact,
            seeds=list(ev.seeds),
            naive_mae=ev.naive_mae,
            skill=ev.skill,
            score=ev.mean,
        )

    def checks(self) -> dict[str, str | None]:
        """Ranges, checked when a file is read (``store.typed``); spreads may be NaN (unknown, in old records).
        ``per_run``, ``score`` and ``naive_mae`` are in the record's metric: an MAE is at least 0, another
        metric's loss may be negative (the sign strategy's is minus a return)."""
        score = _error if self.metric in ("pct_return_mae", "price_mae") else _finite
        return {
            "metric": None if self.metric else "must name a metric",
            "pct_return_mae": _error(self.pct_return_mae),
            "price_mae": _error(self.price_mae),
            **{f"per_run[{i}]": score(v) for i, v in enumerate(self.per_run)},
            "std": _spread(self.std),
            "sem": _spread(self.sem),
            "window_sd": _spread(self.window_sd),
            "num_predictions": _count(self.num_predictions),
            "latency_s": _spread(self.latency_s),
            "naive_mae": None if self.naive_mae is None else score(self.naive_mae),
            "score": None if self.score is None else score(self.score),
            "skill": None if self.skill is None or self.skill <= 1 else f"must be at most 1, not {self.skill!r}",
        }

    @property
    def value(self) -> float:
        """The mean of this record's metric: the search's score (records before compiled-opt 0.3 kept no
        ``score``: then the MAE of the metric)."""
        if self.score is not None:
            return self.score
        return self.pct_return_mae if self.metric == "pct_return_mae" else self.price_mae

    def in_metric(self, metric: str) -> float | None:
        """The validation mean in ``metric``: both MAEs are always stored, any other metric only when it
        was the record's own (None otherwise: the record cannot be compared in it)."""
        if metric == self.metric:
            return self.value
        return getattr(self, metric) if metric in ("pct_return_mae", "price_mae") else None

    @property
    def runs(self) -> int:
        return max(len(self.per_run), 1)

    @property
    def window_sem(self) -> float:
        """The window-to-window standard error of the mean: ``window_sd`` over the root of the windows."""
        return self.window_sd / math.sqrt(max(self.num_predictions // self.runs, 1))


@dataclass(frozen=True)
class MetricComparison:
    """One metric's mean loss on the test windows for a config, the model's defaults and the naive forecast;
    ``difference`` is the defaults' minus the config's (positive: the config is better) and ``se`` its
    standard error over the paired, run-averaged window differences."""

    config: float
    defaults: float
    naive: float
    difference: float
    se: float

    @classmethod
    def of(cls, config: np.ndarray, defaults: np.ndarray, naive: np.ndarray) -> MetricComparison:
        """From losses ``[runs, windows]`` of the config and the defaults and the naive forecast's ``[windows]``."""
        d = defaults.mean(axis=0) - config.mean(axis=0)
        return cls(
            float(config.mean()),
            float(defaults.mean()),
            float(naive.mean()),
            float(d.mean()),
            window_standard_error(d) or 0.0,
        )

    def checks(self) -> dict[str, str | None]:
        return {
            "config": _finite(self.config),
            "defaults": _finite(self.defaults),
            "naive": _finite(self.naive),
            "se": _spread(self.se),
        }


@dataclass(frozen=True)
class OutOfSample:
    """A config against the model's defaults on the test windows (never used to choose).

    The headline is the MAE of the predicted return: ``difference`` is the defaults' MAE minus the
    config's (positive: the config is better), ``se`` its standard error over the paired window
    differences, ``change`` the config's relative change of MAE against the defaults (negative:
    better). ``metrics`` compares every registered metric the same way (``MetricComparison``).
    """

    config_mae: float
    defaults_mae: float
    naive_mae: float
    difference: float
    se: float
    change: float
    windows: int
    skill: float
    defaults_skill: float
    metrics: dict[str, MetricComparison] = field(default_factory=dict)

    @classmethod
    def of(cls, config: Evaluation, defaults: Evaluation) -> OutOfSample:
        """From two evaluations of every metric (``Evaluator(..., every_metric=True)``) on the same windows."""
        metrics = {
            name: MetricComparison.of(config.losses[name], defaults.losses[name], config.naive_losses[name])
            for name in config.losses
        }
        mae = metrics["pct_return_mae"]
        return cls(
            config_mae=mae.config,
            defaults_mae=mae.defaults,
            naive_mae=mae.naive,
            difference=mae.difference,
            se=mae.se,
            change=(mae.config - mae.defaults) / mae.defaults,
            windows=int(config.losses["pct_return_mae"].shape[1]),
            skill=1 - mae.config / mae.naive,
            defaults_skill=1 - mae.defaults / mae.naive,
            metrics=metrics,
        )

    def checks(self) -> dict[str, str | None]:
        return {
            "config_mae": _error(self.config_mae),
            "defaults_mae": _error(self.defaults_mae),
            "naive_mae": _error(self.naive_mae),
            "se": _spread(self.se),
            "windows": _count(self.windows),
        }

    @property
    def relative_se(self) -> float:
        """``se`` relative to the defaults' MAE: the standard error of ``change``."""
        return self.se / self.defaults_mae if self.defaults_mae else 0.0


@dataclass(frozen=True)
class Windows:
    """How the data was cut: window counts, horizon, and the first and last target row of each split."""

    val_window: int
    test_window: int
    forecast_horizon: int
    validation_rows: tuple[int, int] | None = None
    test_rows: tuple[int, int] | None = None

    def checks(self) -> dict[str, str | None]:
        return {
            "val_window": _count(self.val_window),
            "test_window": _count(self.test_window),
            "forecast_horizon": _count(self.forecast_horizon),
        }


@dataclass(frozen=True)
class RecordSeeds:
    """The seeds behind a record: the search's runs, the decision's, the run's and the optimizer's."""

    search: list[int]
    decision: list[int]
    run_seed: int
    optimizer: int


@dataclass(frozen=True)
class Gate:
    """The pooled-stage test: a one-sided paired t-test over validation windows, own config against pooled."""

    test: str
    mean_difference: float
    se: float | None
    statistic: float
    df: int
    p_value: float
    alpha: float
    accept: bool


@dataclass(frozen=True)
class DecisionRecord:
    """The acceptance decision: the policy's verdict, reason and statistics, and the evaluation's resolution
    (the larger MAE standard error over runs; an accepted change below it is flagged ``below_resolution``)."""

    accepted: bool
    reason: str
    policy: str
    options: dict[str, Any]
    stats: dict[str, Any]
    resolution_se: float
    below_resolution: bool
    pooled_gate: Gate | None = None


@dataclass(frozen=True)
class SearchRecord:
    """How the search went: method, trials (failed, answered from the memo), its best config."""

    method: str
    trials: int
    failed: int
    cached: int
    incumbent_suggested: bool
    challenger: dict[str, Any]
    pooled_config: dict[str, Any] | None = None


@dataclass(frozen=True)
class Previous:
    """What the job's challenger had to beat, re-scored on the decision's windows and seeds."""

    kind: ReferenceKind
    config: dict[str, Any] | None
    rescored_validation: Metrics


@dataclass(frozen=True)
class Metadata:
    """Provenance. The seed system's files carry ``compiled``, ``compile_mode`` and ``previous_mae`` only."""

    engine_version: str | None = None
    run_id: str | None = None
    created_at: str | None = None
    previous_mae: float | None = None
    generation: int = 0
    compiled: bool | None = None
    compile_mode: str | None = None
    device: str | None = None
    dtype: str | None = None
    mode: str | None = None
    optimizer: str | None = None
    metric: str | None = None
    data_file: str | None = None
    data_rows: int | None = None
    last_timestamp: int | None = None

    def checks(self) -> dict[str, str | None]:
        return {
            "generation": _count(self.generation),
            "previous_mae": None if self.previous_mae is None else _error(self.previous_mae),
        }


@dataclass(frozen=True)
class StoredRecord:
    """``hyperparams/<model>/<SYMBOL>.json``; the ``best/`` copy adds ``selected_from`` and ``selection_metric``.

    ``windows``, ``seeds``, ``decision``, ``previous`` and ``search`` are ``None`` in a record of the seed
    system or of compiled-opt 0.1, which did not keep them.
    """

    symbol: str
    model: str
    backend: str
    status: Status
    config: dict[str, Any]
    validation: Metrics
    test: Metrics
    out_of_sample: OutOfSample | None
    windows: Windows | None
    seeds: RecordSeeds | None
    decision: DecisionRecord | None
    previous: Previous | None
    search: SearchRecord | None
    metadata: Metadata
    selected_from: dict[str, float] | None = None
    selection_metric: str | None = None
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        out = dump(self)
        if self.selected_from is None:
            del out["selected_from"], out["selection_metric"]
        return {"schema_version": out.pop("schema_version"), **out}

    @classmethod
    def from_json(cls, payload: Any, where: str) -> StoredRecord:
        version = _version(payload, where, legacy=1)
        migrated = {1: _from_v1, 2: _from_v2}.get(version, dict)(payload)
        record = load(cls, migrated, where)
        if not record.status.stores:
            raise UsageError(f"status: {record.status.value!r} is not the status of a stored config", where)
        return record


def _error(value: float) -> str | None:
    """An MAE: finite and not negative."""
    return None if math.isfinite(value) and value >= 0 else f"must be a finite number of at least 0, not {value!r}"


def _finite(value: float) -> str | None:
    return None if math.isfinite(value) else f"must be a finite number, not {value!r}"


def _spread(value: float) -> str | None:
    """A spread or a time: not negative, or NaN (unknown)."""
    return None if math.isnan(value) or value >= 0 else f"must be at least 0 (or NaN: unknown), not {value!r}"


def _count(value: int) -> str | None:
    return None if value >= 0 else f"must be at least 0, not {value}"


# What a record of the seed system (or of compiled-opt 0.1) may lack: unknown spreads are NaN, not 0.
LEGACY_METRICS = {
    "metric": "pct_return_mae",
    "std": math.nan,
    "sem": math.nan,
    "window_sd": math.nan,
    "per_run": [],
    "exact": False,
    "seeds": [],
}


def _version(payload: Any, where: str, legacy: int | None = None) -> int:
    if not isinstance(payload, dict):
        raise UsageError("not a compiled-opt file (expected a JSON object)", where)
    version = payload.get("schema_version", legacy)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SCHEMA_VERSION:
        raise UsageError(
            f"schema_version {version!r} is not one this compiled-opt reads (1 to {SCHEMA_VERSION});"
            " a newer compiled-opt wrote it: upgrade, or point output.directory elsewhere",
            where,
        )
    return version


def _from_v1(payload: dict[str, Any]) -> dict[str, Any]:
    """A record without ``schema_version``: compiled-opt 0.1's, or the seed system's own (symbol, model,
    config, validation, test, windows, metadata). Its metrics get NaN spreads; what it lacks is ``None``;
    the backend is taken to be the model's name."""
    decision = payload.get("decision")
    forced = isinstance(decision, dict) and decision.get("forced") is True
    windows = payload.get("windows")
    keep = ("val_window", "test_window", "forecast_horizon")
    metrics = {
        k: {**LEGACY_METRICS, **v} if isinstance(v, dict) else v
        for k, v in (("validation", payload.get("validation")), ("test", payload.get("test")))
    }
    return {
        "backend": payload.get("model"),
        **payload,
        "status": "forced" if forced else "tuned",
        "validation": metrics["validation"],
        "test": metrics["test"] or metrics["validation"],
        "out_of_sample": None,
        "seeds": None,
        "decision": None,
        "previous": None,
        "search": None,
        "windows": {k: windows[k] for k in keep} if isinstance(windows, dict) and set(keep) <= set(windows) else None,
        "metadata": payload.get("metadata") if isinstance(payload.get("metadata"), dict) else {},
        "schema_version": 1,
    }


def _from_v2(payload: dict[str, Any]) -> dict[str, Any]:
    """compiled-opt 0.2's records: the resolution moves from the policy's stats into the decision; the
    copies of values stored elsewhere (``eval_runs``, ``decision.forced``, ``previous.stored_validation_mae``)
    go."""
    out = {k: v for k, v in payload.items() if k != "eval_runs"}
    decision = payload.get("decision")
    if isinstance(decision, dict):
        stats = dict(decision.get("stats") or {})
        se = stats.pop("resolution_se", math.nan)
        stats.pop("below_resolution", None)
        out["decision"] = {**{k: v for k, v in decision.items() if k != "forced"}, "stats": stats, "resolution_se": se}
    previous = payload.get("previous")
    if isinstance(previous, dict):
        out["previous"] = {k: v for k, v in previous.items() if k != "stored_validation_mae"}
    return out


@dataclass(frozen=True)
class JobOutcome:
    """What a finished job did, kept in its run folder: the run's summary line and its report's section.

    ``config`` is what the job left in place: the challenger when accepted (or forced), else the
    reference; ``test`` is that config on the test windows and ``out_of_sample`` it against the
    model's defaults there. ``record`` is the stored config the job wrote (``None``: it wrote none).
    """

    job: JobId
    status: Status
    reference_kind: ReferenceKind
    config: dict[str, Any]
    decision: DecisionRecord
    challenger_validation: Metrics
    reference_validation: Metrics
    test: Metrics
    out_of_sample: OutOfSample
    search: SearchRecord
    record: StoredRecord | None = None

    @property
    def replaced(self) -> bool:
        """Whether the challenger took the reference's place (accepted, or forced)."""
        return self.decision.accepted or self.status is Status.FORCED

    @property
    def kept_validation(self) -> Metrics:
        """The validation metrics of the config the job left in place."""
        return self.challenger_validation if self.replaced else self.reference_validation

    @property
    def improvement(self) -> float | None:
        """The challenger's validation improvement over the reference (positive: better), at decision time."""
        before, after = self.reference_validation.value, self.challenger_validation.value
        return (before - after) / before if before else None


@dataclass(frozen=True)
class TrialRow:
    """One row of ``runs/<id>/trials/``: a scored (or failed) candidate of one job."""

    run_id: str
    symbol: str  # "(pooled)" for the pooled stage
    model: str
    stage: Stage
    trial: int
    batch: int
    params: str  # canonical JSON
    score: float | None
    std: float | None
    sem: float | None
    per_run: list[float]
    price_mae: float | None
    naive_mae: float | None
    latency_s: float
    seeds: list[int]
    cached: bool
    error: str
    schema_version: int = SCHEMA_VERSION

    @property
    def job(self) -> JobId:
        return JobId(self.model, None if self.stage == Stage.POOLED else self.symbol)


TRIAL_VERSIONS = (2, SCHEMA_VERSION)  # version 2 parts also held a ``job`` column, now derived


def trial_schema() -> Any:
    """The Arrow schema of ``TrialRow``, so every part file has the same columns and types."""
    import pyarrow as pa

    types = {
        "run_id": pa.string(),
        "symbol": pa.string(),
        "model": pa.string(),
        "stage": pa.string(),
        "trial": pa.int64(),
        "batch": pa.int64(),
        "params": pa.string(),
        "score": pa.float64(),
        "std": pa.float64(),
        "sem": pa.float64(),
        "per_run": pa.list_(pa.float64()),
        "price_mae": pa.float64(),
        "naive_mae": pa.float64(),
        "latency_s": pa.float64(),
        "seeds": pa.list_(pa.int64()),
        "cached": pa.bool_(),
        "error": pa.string(),
        "schema_version": pa.int64(),
    }
    return pa.schema([(f.name, types[f.name]) for f in dataclasses.fields(TrialRow)])


@dataclass
class JobState:
    """A job's progress in ``run.json``; ``status`` once it finished (``outcomes/`` holds the rest)."""

    job: JobId
    progress: Progress = Progress.PENDING
    attempts: int = 0
    error: str = ""
    status: Status | None = None

    def checks(self) -> dict[str, str | None]:
        return {"attempts": _count(self.attempts)}


@dataclass(frozen=True)
class Snapshot:
    """What reproduces a run's config: the file's path and text, and the command-line overrides."""

    path: str
    text: str
    overrides: dict[str, Any]


@dataclass
class RunState:
    """``runs/<id>/run.json``: what resuming and reporting the run need, besides its trials and outcomes.

    ``defaults`` is each model's own configuration, the baseline the report compares against.
    """

    run_id: str
    created_at: str
    config: Snapshot
    config_fingerprint: str
    data: dict[str, str]
    run_seed: int
    defaults: dict[str, dict[str, Any]]
    jobs: dict[JobId, JobState] = field(default_factory=dict)
    engine_version: str = ""
    schema_version: int = SCHEMA_VERSION

    def checks(self) -> dict[str, str | None]:
        return {"run_seed": _count(self.run_seed)}

    def job(self, job: JobId) -> JobState:
        """The state of ``job``, added as pending if the run has none yet."""
        return self.jobs.setdefault(job, JobState(job))

    def to_json(self) -> dict[str, Any]:
        out = dump(dataclasses.replace(self, jobs={}))
        out["jobs"] = [dump(s) for s in self.jobs.values()]
        return {"schema_version": out.pop("schema_version"), **out}

    @classmethod
    def from_json(cls, payload: Any, where: str) -> RunState:
        if _version(payload, where) != SCHEMA_VERSION:
            raise UsageError(
                f"a run folder of an older compiled-opt (schema_version {payload['schema_version']}):"
                " start a new run, or report it with the compiled-opt that wrote it",
                where,
            )
        jobs = load(list[JobState], payload.get("jobs", []), where, "jobs")
        state = load(cls, {**payload, "jobs": {}}, where)
        state.jobs = {s.job: s for s in jobs}
        return state


def load_outcomes(payload: Any, where: str) -> list[JobOutcome]:
    """One part of ``runs/<id>/outcomes/``: a list of job outcomes."""
    _version(payload, where)
    return load(list[JobOutcome], payload.get("outcomes"), where, "outcomes")


def outcomes_json(outcomes: list[JobOutcome]) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "outcomes": [dump(o) for o in outcomes]}


def load_jobs(payload: Any, where: str) -> list[JobState]:
    """One part of ``runs/<id>/jobs/``: job states that changed in one group commit."""
    _version(payload, where)
    return load(list[JobState], payload.get("jobs"), where, "jobs")


def jobs_json(jobs: list[JobState]) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "jobs": [dump(j) for j in jobs]}
