"""The on-disk formats, in one place: the stored config record, the trial row and the run state.

Every file carries ``schema_version``. A file of an unknown or newer version is refused with a
clear error; a stored config from compiled-opt 0.1 (no ``schema_version``) is read as version 1.

A stored config stays readable by the seed system's own store, which reads ``config``,
``validation``, ``test`` (falling back to ``validation``) and ``metadata`` from
``hyperparams/<model>/<SYMBOL>.json``, and ``model`` and ``config`` from ``hyperparams/best/<SYMBOL>.json``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from compiled_opt.core.errors import UsageError
from compiled_opt.core.evaluate import Evaluation
from compiled_opt.core.stats import window_standard_error

SCHEMA_VERSION = 2

# What a stored record's status means (shown by the run's summary and by `compiled-opt show`).
STATUSES = {
    "tuned": "a searched config, accepted by the policy",
    "kept defaults": "the model's own configuration: no searched config beat it",
    "pooled": "the model's pooled config (tuned on every symbol together): no per-symbol config beat it",
    "forced": "stored with --force, whatever the policy said",
}


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

    @classmethod
    def of(cls, ev: Evaluation) -> "Metrics":
        return cls(metric=ev.metric, pct_return_mae=ev.pct_return_mae, price_mae=ev.price_mae, std=ev.std, sem=ev.sem,
                   window_sd=ev.window_sd, per_run=[float(x) for x in ev.per_run], num_predictions=int(ev.errors.size),
                   latency_s=ev.latency_s, exact=ev.exact, seeds=list(ev.seeds), naive_mae=ev.naive_mae, skill=ev.skill)

    @property
    def mae(self) -> float:
        """The mean error in this record's metric."""
        return self.pct_return_mae if self.metric == "pct_return_mae" else self.price_mae


@dataclass(frozen=True)
class OutOfSample:
    """The stored config against the model's defaults on the test windows (never used to choose).

    ``difference`` is defaults' MAE minus the config's (positive: the config is better), ``se`` its
    standard error over the paired window differences; ``change`` is the config's relative change
    of MAE against the defaults (negative: better).
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

    @classmethod
    def of(cls, config: Evaluation, defaults: Evaluation) -> "OutOfSample":
        d = defaults.errors.mean(axis=0) - config.errors.mean(axis=0)  # run-averaged, per window
        return cls(config_mae=config.mean, defaults_mae=defaults.mean, naive_mae=float(config.naive_mae),
                   difference=float(d.mean()), se=window_standard_error(d) or 0.0,
                   change=(config.mean - defaults.mean) / defaults.mean, windows=int(d.size),
                   skill=float(config.skill), defaults_skill=float(defaults.skill))


@dataclass(frozen=True)
class StoredRecord:
    """``hyperparams/<model>/<SYMBOL>.json``; the ``best/`` copy adds ``selected_from`` and ``selection_metric``."""

    symbol: str
    model: str
    backend: str
    status: str
    config: dict[str, Any]
    validation: Metrics
    test: Metrics
    out_of_sample: OutOfSample | None
    windows: dict[str, Any]
    eval_runs: int
    seeds: dict[str, Any]
    decision: dict[str, Any]
    previous: dict[str, Any]
    search: dict[str, Any]
    metadata: dict[str, Any]
    selected_from: dict[str, float] | None = None
    selection_metric: str | None = None
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        """The JSON payload (shallow: the record's dicts are plain JSON values already)."""
        out = {**vars(self), "validation": vars(self.validation), "test": vars(self.test),
               "out_of_sample": vars(self.out_of_sample) if self.out_of_sample else None}
        if self.selected_from is None:
            del out["selected_from"], out["selection_metric"]
        return {"schema_version": out.pop("schema_version"), **out}

    @classmethod
    def from_json(cls, payload: Any, where: str) -> "StoredRecord":
        version = _version(payload, where, legacy=1)
        if version == 1:
            payload = _from_v1(payload)
        try:
            fields = {f.name for f in dataclasses.fields(cls)}
            known = {k: v for k, v in payload.items() if k in fields}
            known["validation"] = _metrics(known["validation"])
            known["test"] = _metrics(known["test"])
            oos = known.get("out_of_sample")
            known["out_of_sample"] = OutOfSample(**oos) if oos else None
            return cls(**known)
        except (KeyError, TypeError) as exc:
            raise UsageError(f"not a stored config record ({type(exc).__name__}: {exc})", where) from None

    @property
    def generation(self) -> int:
        return int(self.metadata.get("generation", 0))


# What a record of the seed system (or of compiled-opt 0.1) may lack: unknown spreads are NaN, not 0.
LEGACY_METRICS = {"metric": "pct_return_mae", "std": math.nan, "sem": math.nan, "window_sd": math.nan,
                  "per_run": [], "exact": False, "seeds": []}


def _metrics(raw: dict[str, Any]) -> Metrics:
    names = {f.name for f in dataclasses.fields(Metrics)}
    return Metrics(**{**LEGACY_METRICS, **{k: v for k, v in raw.items() if k in names}})


def _version(payload: Any, where: str, legacy: int | None = None) -> int:
    if not isinstance(payload, dict):
        raise UsageError("not a compiled-opt file (expected a JSON object)", where)
    version = payload.get("schema_version", legacy)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SCHEMA_VERSION:
        raise UsageError(f"schema_version {version!r} is not one this compiled-opt reads (1 to {SCHEMA_VERSION});"
                         " a newer compiled-opt wrote it: upgrade, or point output.directory elsewhere", where)
    return version


def _from_v1(payload: dict[str, Any]) -> dict[str, Any]:
    """A record without ``schema_version``: compiled-opt 0.1's, or the seed system's own (symbol, model,
    config, validation, test, windows, metadata). What they lack is left empty; the backend is taken
    to be the model's name."""
    forced = payload.get("decision", {}).get("forced", False)
    empty = {"windows": {}, "eval_runs": 0, "seeds": {}, "decision": {}, "previous": {}, "search": {}, "metadata": {}}
    return {**empty, "backend": payload.get("model"), **payload, "status": "forced" if forced else "tuned",
            "out_of_sample": None, "test": payload.get("test", payload.get("validation")), "schema_version": 1}


@dataclass(frozen=True)
class TrialRow:
    """One row of ``runs/<id>/trials/``: a scored (or failed) candidate of one job."""

    run_id: str
    job: str
    symbol: str
    model: str
    stage: str  # "search", or "pooled" for the pooled stage
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


def trial_schema() -> Any:
    """The Arrow schema of ``TrialRow``, so every part file has the same columns and types."""
    import pyarrow as pa

    types = {"run_id": pa.string(), "job": pa.string(), "symbol": pa.string(), "model": pa.string(),
             "stage": pa.string(), "trial": pa.int64(), "batch": pa.int64(), "params": pa.string(),
             "score": pa.float64(), "std": pa.float64(), "sem": pa.float64(), "per_run": pa.list_(pa.float64()),
             "price_mae": pa.float64(), "naive_mae": pa.float64(), "latency_s": pa.float64(),
             "seeds": pa.list_(pa.int64()), "cached": pa.bool_(), "error": pa.string(), "schema_version": pa.int64()}
    return pa.schema([(f.name, types[f.name]) for f in dataclasses.fields(TrialRow)])


@dataclass
class JobState:
    """A job's progress in ``run.json``: ``pending``, ``done`` or ``failed``, and its attempts."""

    state: str = "pending"
    attempts: int = 0
    error: str = ""
    status: str = ""  # the summary's status once done
    outcome: dict[str, Any] = field(default_factory=dict)  # the summary's line, stored or not


@dataclass
class RunState:
    """``runs/<id>/run.json``: everything needed to resume the run, and nothing else."""

    run_id: str
    created_at: str
    config: dict[str, Any]
    config_fingerprint: str
    data: dict[str, str]
    run_seed: int
    jobs: dict[str, JobState] = field(default_factory=dict)
    pooled: dict[str, dict[str, Any]] = field(default_factory=dict)
    engine_version: str = ""
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        return {"schema_version": out.pop("schema_version"), **out}

    @classmethod
    def from_json(cls, payload: Any, where: str) -> "RunState":
        _version(payload, where)
        try:
            names = {f.name for f in dataclasses.fields(cls)}
            known = {k: v for k, v in payload.items() if k in names}
            known["jobs"] = {k: JobState(**v) for k, v in known.get("jobs", {}).items()}
            return cls(**known)
        except TypeError as exc:
            raise UsageError(f"not a run state file ({exc})", where) from None
