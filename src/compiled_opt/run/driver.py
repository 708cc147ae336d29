"""A run: check every input, build the jobs, hand them to an executor, store what they find.

The driver is the only writer: ``hyperparams/`` (stored configs) and ``runs/<id>/`` (``run.json``,
``trials/``, ``errors.log``). Everything is checked before the first write, and a failing job is
reported and logged while every other job still runs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import time
import traceback
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import compiled_opt
from compiled_opt.core.config import Config
from compiled_opt.core.data import Series, check_history, fingerprint, list_symbols, read_series, splits, symbol_path
from compiled_opt.core.errors import UsageError, did_you_mean
from compiled_opt.core.randomness import derive_seeds
from compiled_opt.core.registry import Plugins, build
from compiled_opt.run.console import Console, Outcome
from compiled_opt.run.executor import Event, Executor, JobDone
from compiled_opt.run.fast import fast_settings
from compiled_opt.store.records import JobState, Metrics, OutOfSample, RunState, StoredRecord, TrialRow
from compiled_opt.store.stores import ConfigStore, RunDir, find_run, read_trials
from compiled_opt.tuning.jobs import JobResult, JobSpec, SearchSpec, Seeds, TrialBatch, WorkerSetup, logged_trials
from compiled_opt.tuning.models import ModelSpec, make_model_spec, resolve_runtime
from compiled_opt.tuning.search import check_optimizer, exhaustive_cost

WRITERS = 8  # threads writing a group commit's files


def load_symbols(config: Config) -> list[Series]:
    """Every configured symbol's data, read and checked before any work starts."""
    directory = config.data.directory
    available = list_symbols(directory)
    wanted = available if config.data.symbols == "all" else config.data.symbols
    if not wanted:
        raise UsageError(f"no .parquet files in {directory} (convert CSVs with `compiled-opt data import`)",
                         config.where("data.directory"))
    for symbol in wanted:
        if symbol not in available:
            raise UsageError(f"unknown symbol {symbol!r}: no {symbol_path(directory, symbol)}; "
                             f"{did_you_mean(symbol, available)}", config.where("data.symbols"))
    return [read_series(symbol_path(directory, s), s) for s in wanted]


def new_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


class Run:
    """One ``compiled-opt run``: every check happens in the constructor, before anything is written."""

    def __init__(self, config: Config, plugins: Plugins | None = None, console: Console | None = None,
                 resume: str | None = None, debug: bool = False):
        self.plugins = plugins or Plugins.load()
        self.console = console or Console()
        self.debug = debug
        acc = config.acceptance
        build(self.plugins.policies.get(acc.policy, config.where("acceptance.policy")), acc.options,
              config.where("acceptance.options"))
        self.executor_cls: type[Executor] = self.plugins.executors.get(config.runtime.executor,
                                                                       config.where("runtime.executor"))
        self.series = load_symbols(config)
        self.models = {name: make_model_spec(mc, self.plugins, config) for name, mc in config.models.items()}
        self.exhaustive = {name: self._exhaustive(model, config) for name, model in self.models.items()}
        if not all(self.exhaustive.values()):  # only a Nevergrad search imports Nevergrad
            check_optimizer(config.search.optimizer, config.where("search.optimizer"))
        self.store = ConfigStore(config.output.directory)
        self.state = self._resume_state(config, resume) if resume else None
        self.config = config
        self.run_dir = RunDir(config.output.runs, self.state.run_id if self.state else new_run_id())
        self.references = self._check_inputs()
        if self.state is None:
            seed = config.search.seed if isinstance(config.search.seed, int) else secrets.randbits(31)
            self.state = RunState(self.run_dir.run_id, dt.datetime.now(dt.timezone.utc).isoformat(),
                                  config.snapshot(), config.fingerprint(), self._fingerprints(), seed,
                                  engine_version=compiled_opt.__version__)
        self._saved_at = 0.0
        self.pending: list[tuple[JobSpec, StoredRecord]] = []
        self.best_updated: set[str] = set()

    # --- checks ---------------------------------------------------------------------------------

    def _fingerprints(self) -> dict[str, str]:
        return {s.symbol: fingerprint(s.path) for s in self.series}

    def _resume_state(self, config: Config, which: str) -> RunState:
        run = find_run(config.output.runs, which, "--resume")
        state = run.load_state()
        if state.config_fingerprint != config.fingerprint():
            raise UsageError(f"the config changed since run {state.run_id} started (file or flags); resume with the"
                             " same config, or start a new run without --resume", "--resume")
        changed = [s for s, f in self._fingerprints().items() if state.data.get(s) != f]
        if changed or set(state.data) != {s.symbol for s in self.series}:
            what = changed[0] if changed else "the symbol list"
            raise UsageError(f"the data changed since run {state.run_id} started ({what}); start a new run",
                             "--resume")
        return state

    def _check_inputs(self) -> dict[tuple[str, str], tuple[dict[str, Any], str, StoredRecord | None]]:
        """Every symbol has the history for the longest context; every stored file reads. Returns each
        job's reference: the stored config if it is comparable, else the model's defaults."""
        d, references = self.config.data, {}
        for series in self.series:
            split = splits(len(series), d.val_window, d.test_window, d.horizon)
            for model in self.models.values():
                check_history(series, split.validation, model.max_context(self.plugins.backends.get(model.backend)))
                stored = self.store.load(model.name, series.symbol)
                params = model.params(stored)
                references[(series.symbol, model.name)] = ((params, "stored", stored) if params is not None
                                                           else (model.defaults, "defaults", stored))
        return references

    # --- jobs -----------------------------------------------------------------------------------

    def _seeds(self, *key: str) -> Seeds:
        e = self.config.evaluation
        return Seeds(tuple(derive_seeds(e.seed, "search", e.eval_runs)),
                     tuple(derive_seeds(e.seed, "decision", e.eval_runs, self.state.run_seed, *key)),
                     tuple(derive_seeds(e.seed, "gate", e.eval_runs, self.state.run_seed, *key)))

    def _exhaustive(self, model: ModelSpec, config: Config) -> bool:
        """Whether ``model``'s space is scored point by point (``search.exhaustive``)."""
        s = config.search
        cost = exhaustive_cost(model.space, self.plugins.backends.get(model.backend).samples_param
                               if model.max_samples else None)
        if s.exhaustive == "always" and cost is None:
            raise UsageError(f"model {model.name!r}: exhaustive search needs a space of choices only",
                             config.where("search.exhaustive"))
        return cost is not None and (s.exhaustive == "always" or (s.exhaustive == "auto" and cost <= s.trials))

    def _search_spec(self, model: ModelSpec, job_id: str) -> SearchSpec:
        """The search of one job: its own optimizer seed, derived from the run's (symbols explore differently)."""
        s = self.config.search
        seed = derive_seeds(self.state.run_seed, "optimizer", 1, *job_id.split("/"))[0]
        return SearchSpec(s.optimizer, s.trials, s.batch, seed, self.exhaustive[model.name],
                          s.racing_max_runs if s.racing else None)

    def _job(self, model: ModelSpec, series: Sequence[Series], stage: str, reference: dict[str, Any], kind: str,
             pooled: dict[str, Any] | None, logged: dict[tuple[str, str], list[TrialRow]]) -> JobSpec:
        d, cfg = self.config.data, self.config
        cuts = [splits(len(s), d.val_window, d.test_window, d.horizon) for s in series]
        job_id = f"{series[0].symbol}/{model.name}" if stage == "search" else f"pooled/{model.name}"
        return JobSpec(
            job_id=job_id, run_id=self.run_dir.run_id, model=model.name, backend=model.backend, stage=stage,
            series=tuple(series),
            validation=tuple(c.validation for c in cuts), test=tuple(c.test for c in cuts), horizon=d.horizon,
            metric=cfg.evaluation.metric, seeds=self._seeds(*job_id.split("/")), search=self._search_spec(model, job_id),
            policy=cfg.acceptance.policy, policy_options=dict(cfg.acceptance.options), reference=reference,
            reference_kind=kind, pooled=pooled, pooled_alpha=cfg.pooled.alpha,
            replay=logged_trials(logged.get((job_id, stage), [])),
        )

    def _finished(self, job_id: str) -> bool:
        """Done in an earlier attempt at this run (resume): by the state, or by a record it stored."""
        if self.state.jobs.get(job_id, JobState()).state == "done":
            return True
        symbol, model = job_id.split("/")
        stored = self.references.get((symbol, model), (None, None, None))[2]
        return stored is not None and stored.metadata.get("run_id") == self.run_dir.run_id

    # --- the run --------------------------------------------------------------------------------

    def execute(self) -> list[Outcome]:
        classes = {name: self.plugins.backends.get(m.backend) for name, m in self.models.items()}
        self.fast = fast_settings(self.config.runtime, classes)
        if self.fast.notice:
            self.console.line(self.fast.notice)
        setup = WorkerSetup(self.models, self.fast.runtime, str(self.config.path), self.config.data.horizon,
                            self.fast.dtypes)
        executor = self.executor_cls(setup, self.config)
        executor.start()  # loads every model: missing weights stop the run here, before any write
        logged: dict[tuple[str, str], list[TrialRow]] = defaultdict(list)  # an interrupted attempt's trials
        for row in read_trials(self.run_dir.path):
            logged[(row.job, row.stage)].append(row)
        self.outcomes: dict[str, Outcome] = {}
        self.console.run_header(self.run_dir, self.config, executor.describe(), resumed=bool(self.state.jobs))
        self._commit(force=True)
        try:
            pooled = self._pooled_stage(executor, logged) if self.config.pooled.enabled else {}
            jobs = []
            for series in self.series:
                for model in self.models.values():
                    params, kind, _ = self.references[(series.symbol, model.name)]
                    job = self._job(model, [series], "search", params, kind, pooled.get(model.name), logged)
                    if self._finished(job.job_id):
                        self.console.line(f"{job.job_id}: finished in an earlier attempt, skipped")
                        continue
                    earlier = self.state.jobs.get(job.job_id, JobState())
                    self.state.jobs[job.job_id] = JobState(attempts=earlier.attempts)
                    jobs.append(job)
            self.console.start_jobs(jobs)
            self.jobs = {j.job_id: j for j in jobs}
            executor.run(jobs, self._on_event)
        finally:
            executor.close()
            self.console.stop_jobs()
            self._commit(force=True)
        for symbol in {s.symbol for s in self.series} - self.best_updated:  # e.g. stored by an earlier attempt
            self._update_best(symbol)
        self.store.sync()
        outcomes = list(self.outcomes.values())
        self.console.summary(outcomes, self.run_dir)
        return outcomes

    def _pooled_stage(self, executor: Executor,
                      logged: dict[tuple[str, str], list[TrialRow]]) -> dict[str, dict[str, Any]]:
        """One config per model, tuned on every symbol's validation windows together."""
        pending = []
        for model in self.models.values():
            if model.name not in self.state.pooled:
                pending.append(self._job(model, self.series, "pooled", model.defaults, "defaults", None, logged))
        self.jobs = {j.job_id: j for j in pending}
        self.console.start_jobs(pending)

        def on_event(event: Event) -> None:
            if isinstance(event, TrialBatch):
                return self._on_batch(event)
            model = event.job_id.split("/")[1]
            if event.result is None:  # its symbols go on without a pooled config
                self.console.line(f"FAILED {event.job_id}: {event.error}; the symbols run without a pooled config",
                                  level="warning")
                self._fail(event.job_id, event.error, event.traceback)
                return
            result = event.result
            chosen = result.challenger if result.decision.accept else self.models[model].defaults
            self.state.pooled[model] = {"config": chosen, "accepted": result.decision.accept,
                                        "reason": result.decision.reason}
            self.console.pooled_done(result, chosen)
            self._commit(force=True)

        executor.run(pending, on_event)
        self.console.stop_jobs()
        return {name: p["config"] for name, p in self.state.pooled.items()}

    def _on_event(self, event: Event) -> None:
        if isinstance(event, TrialBatch):
            self._on_batch(event)
        else:
            self._on_done(event)

    def _on_batch(self, event: TrialBatch) -> None:
        self.run_dir.trials.append(event.rows)
        try:
            for text in event.tracebacks:
                self.run_dir.log_error(f"{event.job_id}: a failed trial", text)
        except OSError as exc:
            self.console.line(f"cannot write {self.run_dir.errors_path}: {exc}", level="warning")
        self.console.batch(event)
        self._commit()

    def _on_done(self, event: JobDone) -> None:
        job = self.jobs[event.job_id]
        state = self.state.jobs.setdefault(job.job_id, JobState())
        state.attempts += event.attempts
        error, trace = event.error, event.traceback
        if not error:
            try:
                outcome, record = self._decide(job, event.result)
            except Exception as exc:
                error, trace = f"{type(exc).__name__}: {exc}", traceback.format_exc()
        if error:
            outcome = self._fail(job.job_id, error, trace)
        else:
            state.state, state.status, state.outcome = "done", outcome.status, dataclasses.asdict(outcome)
            self.outcomes[job.job_id] = outcome
            if record is not None:
                self.pending.append((job, record))
        self.console.job_done(job, event.result, outcome, error, trace if self.debug else "")
        self._commit()

    def _fail(self, job_id: str, error: str, trace: str) -> Outcome:
        """Mark a job failed (its stored file stays as it was) and log why."""
        job = self.jobs[job_id]
        outcome = Outcome(job.symbol, job.model, "failed", detail=error)
        state = self.state.jobs.setdefault(job_id, JobState())
        state.state, state.error, state.status, state.outcome = "failed", error, "failed", dataclasses.asdict(outcome)
        self.outcomes[job_id] = outcome
        try:
            self.run_dir.log_error(job_id, trace or error)
        except OSError as exc:
            self.console.line(f"{job_id}: cannot write {self.run_dir.errors_path}: {exc}", level="warning")
        return outcome

    def _commit(self, force: bool = False) -> None:
        """The group commit, every ``output.log_flush_s`` seconds (or now): the trial log's finished
        batches, then the finished jobs' records and ``best/``, then ``run.json``, in that order, so
        that no record is on disk before its trials and ``run.json`` never before its records. A run
        killed in between loses at most those jobs' results, and resuming recomputes them."""
        now = time.monotonic()
        if not force and now - self._saved_at < self.config.output.log_flush_s:
            return
        self._saved_at = now
        pending, self.pending = self.pending, []
        try:
            self.run_dir.trials.flush()
        except OSError as exc:
            for job, _ in pending:
                self._fail(job.job_id, f"cannot write the trial log: {exc}", traceback.format_exc())
                self.console.line(f"FAILED {job.job_id}: cannot write the trial log: {exc}", level="warning")
            pending = []
        with ThreadPoolExecutor(WRITERS) as writers:  # concurrent fsyncs share the file system's journal commits
            saved = [(job, record, writers.submit(self.store.save, record)) for job, record in pending]
            fresh = {}
            for job, record, future in saved:
                try:
                    future.result()
                except Exception as exc:  # e.g. an output folder that cannot be written
                    error = f"{type(exc).__name__}: {exc}"
                    self._fail(job.job_id, error, "".join(traceback.format_exception(exc)))
                    self.console.line(f"FAILED {job.job_id}: {error}", level="warning")
                    continue
                fresh.setdefault(job.symbol, []).append(record)
            for future in [writers.submit(self._update_best, symbol, records[-1]) for symbol, records in fresh.items()]:
                future.result()
        try:
            self.store.sync()
            self.run_dir.save_state(self.state)
        except OSError as exc:
            self.console.line(f"cannot write {self.run_dir.state_path}: {exc}", level="warning")

    def _update_best(self, symbol: str, fresh: StoredRecord | None = None) -> None:
        try:
            self.store.update_best(symbol, self.config.evaluation.metric, fresh)
            self.best_updated.add(symbol)
        except OSError as exc:
            self.console.line(f"{symbol}: cannot update best/: {exc}")

    # --- records --------------------------------------------------------------------------------

    def _decide(self, job: JobSpec, result: JobResult) -> tuple[Outcome, StoredRecord | None]:
        """What happened, and the record to store when it changes anything."""
        forced = self.config.force and not result.decision.accept
        accept = result.decision.accept or forced
        which = "challenger" if accept else "reference"
        kept = result.challenger if accept else job.reference
        oos = OutOfSample.of(result.test[which], result.test["defaults"])
        stored = self.references[(job.symbol, job.model)][2]
        if accept:
            is_pooled = job.pooled is not None and result.challenger == job.pooled
            status = "forced" if forced else "pooled" if is_pooled else "tuned"
            shown = {"forced": "forced", "pooled": "pooled"}.get(status, "improved" if job.reference_kind == "stored"
                                                                 else "new")
        elif job.reference_kind == "defaults":
            status = shown = "kept defaults"
        else:
            status, shown = "", "no improvement"
        record = self._record(job, result, status, kept, which, oos, stored) if status else None
        return Outcome(job.symbol, job.model, shown, result.challenger_val.mean, result.reference_val.mean,
                       test_mae=oos.config_mae, test_change=oos.change, test_se=oos.se / oos.defaults_mae,
                       skill=oos.skill, below_resolution=bool(result.decision.stats.get("below_resolution")),
                       detail=result.decision.reason), record

    def _record(self, job: JobSpec, result: JobResult, status: str, config: dict[str, Any], which: str,
                oos: OutOfSample, stored: StoredRecord | None) -> StoredRecord:
        cfg, d = self.config, self.config.data
        val = result.challenger_val if which == "challenger" else result.reference_val
        decision = result.decision
        series = job.series[0]
        return StoredRecord(
            symbol=job.symbol, model=job.model, backend=self.models[job.model].backend, status=status,
            config=config, validation=Metrics.of(val), test=Metrics.of(result.test[which]), out_of_sample=oos,
            windows={"val_window": d.val_window, "test_window": d.test_window, "forecast_horizon": d.horizon,
                     "validation_rows": [job.validation[0].start, job.validation[0].stop - 1],
                     "test_rows": [job.test[0].start, job.test[0].stop - 1]},
            eval_runs=cfg.evaluation.eval_runs,
            seeds={"search": list(job.seeds.search), "decision": list(job.seeds.decision), "run_seed": self.state.run_seed,
                   "optimizer": job.search.seed},
            decision={"accepted": decision.accept, "forced": status == "forced", "reason": decision.reason,
                      "policy": cfg.acceptance.policy, "options": cfg.acceptance.options, "stats": decision.stats,
                      "below_resolution": bool(decision.stats.get("below_resolution")), "pooled_gate": result.gate},
            previous={"config": job.reference if job.reference_kind == "stored" else None,
                      "kind": job.reference_kind,
                      "stored_validation_mae": stored.validation.mae if stored else None,
                      "rescored_validation": dataclasses.asdict(Metrics.of(result.reference_val))},
            search={"method": result.method, "trials": result.trials, "failed": result.failed, "cached": result.cached,
                    "incumbent_suggested": result.incumbent_suggested, "pooled_config": job.pooled,
                    "challenger": result.challenger},
            metadata=self._metadata(series, job, stored),
        )

    def _metadata(self, series: Series, job: JobSpec, stored: StoredRecord | None) -> dict[str, Any]:
        rt = self.fast.runtime
        return {"engine_version": compiled_opt.__version__, "run_id": self.run_dir.run_id,
                "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
                "previous_mae": stored.validation.mae if stored else None,
                "generation": (stored.generation if stored else 0) + 1,
                "compiled": rt.compile != "none", "compile_mode": rt.compile,
                "device": resolve_runtime(rt, "runtime.device").device,
                "dtype": self.fast.dtypes.get(job.model, rt.dtype), "mode": self.config.runtime.mode,
                "optimizer": self.config.search.optimizer, "metric": self.config.evaluation.metric,
                "data_file": str(series.path), "data_rows": len(series), "last_timestamp": int(series.time[-1])}
