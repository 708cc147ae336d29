"""Planning a run: every input checked, then the jobs as plain specs. Nothing here writes a file.

``Plan(config, plugins, state)`` reads and checks the data files, the models, the stored configs
(each job's reference: the stored config if the backend can run it, else the model's defaults) and
the run's seeds; ``jobs(stage, ...)`` turns them into ``JobSpec``s.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from compiled_opt.core.config import Config
from compiled_opt.core.data import Series, check_history, list_symbols, read_series, splits, symbol_path
from compiled_opt.core.errors import UsageError, did_you_mean
from compiled_opt.core.names import check_symbol
from compiled_opt.core.randomness import derive_seeds
from compiled_opt.core.registry import Plugins
from compiled_opt.run.limits import check_limits
from compiled_opt.run.outcome import Context
from compiled_opt.store.records import JobId, ReferenceKind, Stage, StoredRecord
from compiled_opt.store.stores import ConfigStore
from compiled_opt.tuning.jobs import JobSpec, SearchSpec, Seeds, logged_trials
from compiled_opt.tuning.models import ModelSpec, check_stored, make_model_spec
from compiled_opt.tuning.search import Logged, check_optimizer, exhaustive_cost


def load_symbols(config: Config) -> list[Series]:
    """Every configured symbol's data, read and checked before any work starts."""
    directory = config.data.directory
    available = list_symbols(directory)
    wanted = available if config.data.symbols == "all" else config.data.symbols
    if not wanted:
        raise UsageError(
            f"no .parquet files in {directory} (convert CSVs with `compiled-opt data import`)",
            config.where("data.directory"),
        )
    for symbol in wanted:
        if symbol not in available:
            raise UsageError(
                f"unknown symbol {symbol!r}: no {symbol_path(directory, symbol)}; {did_you_mean(symbol, available)}",
                config.where("data.symbols"),
            )
        check_symbol(symbol, str(symbol_path(directory, symbol)))  # a file's name, with data.symbols = "all"
    return [read_series(symbol_path(directory, s), s) for s in wanted]


@dataclass(frozen=True)
class Reference:
    """What a job's challenger must beat: the stored config when the backend can run it, else the defaults."""

    params: dict[str, Any]
    kind: ReferenceKind
    stored: StoredRecord | None  # the record on disk, comparable or not


class Plan:
    """The checked inputs of a run and the job specs made from them."""

    def __init__(self, config: Config, plugins: Plugins, run_id: str, run_seed: int, allow_large: bool = False):
        self.config, self.plugins, self.run_id, self.run_seed = config, plugins, run_id, run_seed
        plugins.metrics.get(config.evaluation.metric, config.where("evaluation.metric"))
        self.models = {name: make_model_spec(mc, plugins, config) for name, mc in config.models.items()}
        self.exhaustive = {name: self._exhaustive(model) for name, model in self.models.items()}
        if not all(self.exhaustive.values()):  # only a Nevergrad search imports Nevergrad
            check_optimizer(config.search.optimizer, config.where("search.optimizer"))
        self.skipped: dict[str, str] = {}  # symbol -> why (data.short_history)
        self.series = self._with_history(load_symbols(config))
        self.store = ConfigStore(config.output.directory)
        self.references = self._references()
        self._check_other_models()
        check_limits(
            config, self.models, {n: plugins.backends.get(m.backend) for n, m in self.models.items()}, allow_large
        )

    def _exhaustive(self, model: ModelSpec) -> bool:
        """Whether ``model``'s space is scored point by point (``search.exhaustive``)."""
        s = self.config.search
        cost = exhaustive_cost(
            model.space, self.plugins.backends.get(model.backend).samples_param if model.max_samples else None
        )
        if s.exhaustive == "always" and cost is None:
            raise UsageError(
                f"model {model.name!r}: exhaustive search needs a space of choices only",
                self.config.where("search.exhaustive"),
            )
        return cost is not None and (s.exhaustive == "always" or (s.exhaustive == "auto" and cost <= s.trials))

    def _with_history(self, series: list[Series]) -> list[Series]:
        """The symbols with the history every model's longest context needs; the others are refused, or
        skipped and named in ``skipped`` (``data.short_history``)."""
        d, kept = self.config.data, []
        for s in series:
            split = splits(len(s), d.val_window, d.test_window, d.horizon)
            try:
                for model in self.models.values():
                    check_history(s, split.validation, model.max_context(self.plugins.backends.get(model.backend)))
            except UsageError as exc:
                if not d.skip_short:
                    raise
                self.skipped[s.symbol] = str(exc)
                continue
            kept.append(s)
        if not kept:
            raise UsageError(
                f"no symbol has enough history; the first: {next(iter(self.skipped.values()))}",
                self.config.where("data.symbols"),
            )
        return kept

    def _references(self) -> dict[JobId, Reference]:
        """Every stored file reads and can run, with the history it needs; each job's reference."""
        d, out = self.config.data, {}
        for series in self.series:
            split = splits(len(series), d.val_window, d.test_window, d.horizon)
            for model in self.models.values():
                cls = self.plugins.backends.get(model.backend)
                stored = self._stored(model.name, series.symbol)
                params = model.params(stored)
                if params is not None and cls.context_length(params) > split.validation.start:
                    raise UsageError(
                        f"config: needs {cls.context_length(params)} rows of history before the first"
                        f" validation window; {series.path} has {split.validation.start} (a smaller"
                        " data.val_window fits it)",
                        str(self.store.path(model.name, series.symbol)),
                    )
                out[JobId(model.name, series.symbol)] = (
                    Reference(params, ReferenceKind.STORED, stored)
                    if params is not None
                    else Reference(model.defaults, ReferenceKind.DEFAULTS, stored)
                )
        return out

    def _stored(self, model: str, symbol: str) -> StoredRecord | None:
        """The record stored for ``model`` and ``symbol``, checked: its types and ranges, and that it can run."""
        record = self.store.load(model, symbol)
        if record is not None:
            check_stored(record, self.plugins, str(self.store.path(model, symbol)))
        return record

    def _check_other_models(self) -> None:
        """The records of these symbols in the folders of models this run does not tune: ``best/`` chooses
        among them too, so they are checked before the first write."""
        for name in self.store.models():
            if name not in self.models:
                for series in self.series:
                    self._stored(name, series.symbol)

    def context(self) -> Context:
        """What each job's record needs from the run (``outcome``), at the current time."""
        cfg = self.config
        return Context(
            run_id=self.run_id,
            run_seed=self.run_seed,
            force=cfg.force,
            val_window=cfg.data.val_window,
            test_window=cfg.data.test_window,
            policy=cfg.acceptance.policy,
            policy_options=dict(cfg.acceptance.options),
            compile_mode=cfg.runtime.compile,
            mode=cfg.runtime.mode,
            optimizer=cfg.search.optimizer,
            metric=cfg.evaluation.metric,
            created_at=dt.datetime.now(dt.UTC).isoformat(),
        )

    def _seeds(self, job: JobId) -> Seeds:
        e, key = self.config.evaluation, _key(job)
        return Seeds(
            tuple(derive_seeds(e.seed, "search", e.eval_runs)),
            tuple(derive_seeds(e.seed, "decision", e.eval_runs, self.run_seed, *key)),
            tuple(derive_seeds(e.seed, "gate", e.eval_runs, self.run_seed, *key)),
        )

    def _search(self, model: ModelSpec, job: JobId) -> SearchSpec:
        """The search of one job: its own optimizer seed, derived from the run's (symbols explore differently)."""
        s = self.config.search
        seed = derive_seeds(self.run_seed, "optimizer", 1, *_key(job))[0]
        return SearchSpec(
            s.optimizer, s.trials, s.batch, seed, self.exhaustive[model.name], s.racing_max_runs if s.racing else None
        )

    def job(
        self,
        model: ModelSpec,
        series: Sequence[Series],
        job: JobId,
        reference: Reference,
        pooled: Mapping[str, Any] | None,
        logged: Sequence[Logged] = (),
    ) -> JobSpec:
        """One job on ``series`` (one symbol, or every symbol for the pooled stage)."""
        d, cfg = self.config.data, self.config
        cuts = [splits(len(s), d.val_window, d.test_window, d.horizon) for s in series]
        return JobSpec(
            job_id=job,
            run_id=self.run_id,
            backend=model.backend,
            series=tuple(series),
            validation=tuple(c.validation for c in cuts),
            test=tuple(c.test for c in cuts),
            horizon=d.horizon,
            metric=cfg.evaluation.metric,
            seeds=self._seeds(job),
            search=self._search(model, job),
            policy=cfg.acceptance.policy,
            policy_options=dict(cfg.acceptance.options),
            reference=reference.params,
            reference_kind=reference.kind,
            pooled=dict(pooled) if pooled is not None else None,
            pooled_alpha=cfg.pooled.alpha,
            replay=tuple(logged),
            unused=model.unused,
            levels=tuple(cfg.forecast.quantiles),
            cost=cfg.evaluation.cost,
            shards=cfg.pooled.shards if job.stage is Stage.POOLED else 1,
        )

    def pooled_jobs(self, logged: Mapping[JobId, Sequence[Logged]]) -> list[JobSpec]:
        """One pooled-stage job per model, against the model's defaults."""
        return [
            self.job(
                model,
                self.series,
                JobId(name),
                Reference(model.defaults, ReferenceKind.DEFAULTS, None),
                None,
                logged.get(JobId(name), ()),
            )
            for name, model in self.models.items()
        ]

    def search_jobs(
        self, pooled: Mapping[str, Mapping[str, Any]], logged: Mapping[JobId, Sequence[Logged]]
    ) -> list[JobSpec]:
        """One job per (symbol, model), in symbol order; ``pooled``: each model's pooled config, if any."""
        return [
            self.job(model, [series], job, self.references[job], pooled.get(name), logged.get(job, ()))
            for series in self.series
            for name, model in self.models.items()
            for job in [JobId(name, series.symbol)]
        ]


def _key(job: JobId) -> tuple[str, str]:
    """The seed-derivation key of a job, as it has been since compiled-opt 0.1 (``symbol/model``)."""
    return ("pooled" if job.stage is Stage.POOLED else job.symbol, job.model)


def replays(rows: Sequence[Any]) -> dict[JobId, tuple[Logged, ...]]:
    """An interrupted attempt's logged trials, per job, to replay when it resumes: trials 0, 1, 2, ... up to
    the first one missing (in a damaged part left out), as the optimizer must be told every trial in order."""
    grouped: dict[JobId, list[Any]] = {}
    for row in sorted(rows, key=lambda r: r.trial):
        kept = grouped.setdefault(row.job, [])
        if row.trial == len(kept):  # none after a missing trial is: those are scored again
            kept.append(row)
    return {job: logged_trials(rows) for job, rows in grouped.items()}
