"""What a run's report shows, gathered from the run folder and the store (no drawing, no HTML).

Per job: its trials (``read_trials``), its status in ``run.json``, and the stored record when this
run wrote it. A job whose record this run did not write (the stored config was kept, or the job
failed) is described from the trial log alone: validation scores, no test windows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiled_opt.core.config import Config
from compiled_opt.core.errors import UsageError
from compiled_opt.store.records import RunState, StoredRecord, TrialRow
from compiled_opt.store.stores import ConfigStore, find_run, read_trials


@dataclass(frozen=True)
class Comparison:
    """Mean errors of the stored (or kept) config, the model's defaults and the naive forecast;
    ``None`` where this run did not score it. ``test_change``/``test_se`` are relative to the defaults."""

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
    """One job of the run: a (symbol, model) search, or a model's pooled stage (symbol ``pooled``)."""

    job: str
    symbol: str
    model: str
    stage: str
    status: str
    error: str
    trials: list[TrialRow]
    record: StoredRecord | None  # written by this run
    earlier: StoredRecord | None  # written by an earlier run and left in place by this one
    defaults: dict[str, Any] | None  # the model's own configuration, when it could be rebuilt
    decision: dict[str, Any]

    @property
    def chosen(self) -> dict[str, Any] | None:
        """The config this job left stored (or the pooled stage chose)."""
        if self.record is not None:
            return self.record.config
        if self.earlier is not None:
            return self.earlier.config
        return self.decision.get("config")

    def comparison(self) -> Comparison:
        defaults_val = self._trial_score(self.defaults)
        if self.record is None:
            naive = next((t.naive_mae for t in self.trials if t.naive_mae is not None), None)
            return Comparison(self._trial_score(self.chosen), defaults_val, naive)
        r, oos = self.record, self.record.out_of_sample
        if r.previous.get("kind") == "defaults" and r.previous.get("rescored_validation"):
            defaults_val = r.previous["rescored_validation"]["pct_return_mae" if r.validation.metric == "pct_return_mae"
                                                             else "price_mae"]
        if oos is None:
            return Comparison(r.validation.mae, defaults_val, r.validation.naive_mae, r.test.mae, None, r.test.naive_mae)
        return Comparison(r.validation.mae, defaults_val, r.validation.naive_mae, oos.config_mae, oos.defaults_mae,
                          oos.naive_mae, oos.change, oos.se / oos.defaults_mae if oos.defaults_mae else None)

    def _trial_score(self, params: Mapping[str, Any] | None) -> float | None:
        if params is None:
            return None
        return next((t.score for t in self.trials if t.score is not None and json.loads(t.params) == dict(params)),
                    None)


@dataclass(frozen=True)
class RunReport:
    run_id: str
    state: RunState
    run_path: Path
    jobs: list[JobReport]

    @property
    def searches(self) -> list[JobReport]:
        return [j for j in self.jobs if j.stage == "search"]


def gather(config: Config, which: str, where: str) -> RunReport:
    """The run ``which`` (an id or ``latest``) under ``config.output.runs``, with what this run stored."""
    run = find_run(config.output.runs, which, where)
    state = run.load_state()
    trials = read_trials(run.path)
    defaults = model_defaults(state)
    store = ConfigStore(config.output.directory)
    jobs = [_pooled(model, info, trials, defaults) for model, info in state.pooled.items()]
    names = list(state.jobs) + sorted({t.job for t in trials if t.stage == "search"} - set(state.jobs))
    for name in names:
        symbol, model = name.split("/")
        job_state = state.jobs.get(name)
        stored = store.load(model, symbol)
        written = str(stored.metadata.get("run_id") or "") if stored else None  # run ids sort by time
        record = stored if written == state.run_id else None
        earlier = stored if written is not None and written < state.run_id else None
        jobs.append(JobReport(name, symbol, model, "search", job_state.status if job_state else "interrupted",
                              job_state.error if job_state else "",
                              [t for t in trials if t.job == name and t.stage == "search"], record, earlier,
                              defaults.get(model), dict(record.decision) if record else {}))
    return RunReport(state.run_id, state, run.path, jobs)


def _pooled(model: str, info: Mapping[str, Any], trials: list[TrialRow],
            defaults: Mapping[str, dict[str, Any]]) -> JobReport:
    name = f"pooled/{model}"
    status = "pooled config" if info.get("accepted") else "kept defaults"
    return JobReport(name, "pooled", model, "pooled", status, "",
                     [t for t in trials if t.job == name and t.stage == "pooled"], None, None, defaults.get(model),
                     {"accepted": info.get("accepted"), "reason": info.get("reason", ""), "config": info.get("config")})


def model_defaults(state: RunState) -> dict[str, dict[str, Any]]:
    """Each model's own configuration, rebuilt from the run's config snapshot; empty when that is
    no longer possible (e.g. a plugin was uninstalled): the report then leaves the defaults out."""
    from compiled_opt.core.config import load_config
    from compiled_opt.core.registry import Plugins
    from compiled_opt.tuning.models import make_model_spec

    snap = state.config
    try:
        config = load_config(Path(snap["path"]), snap.get("overrides", {}), text=snap["text"])
        plugins = Plugins.load()
        return {name: make_model_spec(mc, plugins, config).defaults for name, mc in config.models.items()}
    except (UsageError, KeyError):
        return {}

