"""A run: plan the jobs, hand them to an executor, and store what each job's outcome says.

The driver is the only writer: ``hyperparams/`` (stored configs) and ``runs/<id>/`` (``run.json``,
``trials/``, ``outcomes/``, ``errors.log``). Every input is checked (``Plan``) before the first
write, and a failing job is reported and logged while every other job still runs. Finished work
is written in a group commit about once a second (``_commit``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import shlex
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import compiled_opt
from compiled_opt.core.config import Config
from compiled_opt.core.data import fingerprint
from compiled_opt.core.errors import UsageError
from compiled_opt.core.registry import Plugins
from compiled_opt.run.console import Console
from compiled_opt.run.executor import Event, Executor, JobDone
from compiled_opt.run.fast import fast_settings
from compiled_opt.run.outcome import outcome
from compiled_opt.run.plan import Plan, replays
from compiled_opt.store.lock import LOCK_NAME, Lock
from compiled_opt.store.records import (
    JobId,
    JobOutcome,
    JobState,
    Progress,
    RunState,
    Snapshot,
    Stage,
    Status,
    StoredRecord,
)
from compiled_opt.store.stores import ConfigStore, RunDir, find_run, read_trials
from compiled_opt.tuning.jobs import JobSpec, TrialBatch, WorkerSetup

WRITERS = 8  # threads writing a group commit's files


def new_run_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def next_steps(config: Config, run_id: str) -> str:
    """The commands that look at a run's results, as a user can paste them."""
    where = shlex.quote(str(config.path))
    out = (
        f" --output {shlex.quote(str(Path(config.output.directory).parent))}"
        if config.flags.get("output.directory") == "--output"
        else ""
    )
    return (
        f"compiled-opt report {where} {run_id}{out} | compiled-opt show {where}{out} | "
        f"compiled-opt evaluate {where}{out}"
    )


class Run:
    """One ``compiled-opt run``: every check happens in the constructor, before anything is written."""

    def __init__(
        self,
        config: Config,
        plugins: Plugins | None = None,
        console: Console | None = None,
        resume: str | None = None,
        debug: bool = False,
        allow_large: bool = False,
    ):
        self.config, self.plugins = config, plugins or Plugins.load()
        self.metrics = {name: self.plugins.metrics.get(name) for name in self.plugins.metrics}
        self.console, self.debug = console or Console(), debug
        self.locks: list[Lock] = []
        try:
            self._check(resume, allow_large)
        except BaseException:
            self._unlock()
            raise

    def _check(self, resume: str | None, allow_large: bool) -> None:
        """Every check, holding the output folder's lock (and, to resume, the run's) from before the stored
        configs are read: a refusal writes nothing."""
        config = self.config
        acc, ex = config.acceptance, config.executor
        self.plugins.policies.get(acc.policy, config.where("acceptance.policy"))
        self.plugins.policies.build(acc.policy, acc.options, config.where("acceptance.options"))
        self.plugins.executors.get(ex.name, config.where("executor.name"))
        self.executor: Executor = self.plugins.executors.build(ex.name, ex.options, config.where("executor.options"))
        earlier, outcomes = self._resumed(resume) if resume else (None, {})
        self.resuming = earlier is not None
        run_id = earlier.run_id if earlier else new_run_id()
        run_seed = (
            earlier.run_seed
            if earlier
            else (config.search.seed if isinstance(config.search.seed, int) else secrets.randbits(31))
        )
        out = config.output.directory
        self._lock(out / LOCK_NAME, run_id, f"the output folder {out}", config.where("output.directory"))
        self.plan = Plan(config, self.plugins, run_id, run_seed, allow_large)
        self.store: ConfigStore = self.plan.store
        self.run_dir = RunDir(config.output.runs, run_id)
        fingerprints = {s.symbol: fingerprint(s.path) for s in self.plan.series}
        if earlier:
            self._check_resumable(earlier, fingerprints)
        self.state = earlier or RunState(
            run_id,
            dt.datetime.now(dt.UTC).isoformat(),
            Snapshot(**config.snapshot()),
            config.fingerprint(),
            fingerprints,
            run_seed,
            {name: m.defaults for name, m in self.plan.models.items()},
            engine_version=compiled_opt.__version__,
        )
        self.outcomes: dict[JobId, JobOutcome] = outcomes
        self.jobs: dict[JobId, JobSpec] = {}
        self.logged = set(self.outcomes)  # outcomes already in outcomes/
        # finished jobs to commit; on resume, those whose record an earlier attempt logged but did not store
        self.pending: list[JobOutcome] = [
            o for o in self.outcomes.values() if o.record is not None and self._stored_run(o.job) != run_id
        ]
        self.best_updated: set[str] = set()
        self._saved_at = 0.0
        self._saved_jobs: dict[JobId, JobState] = {}  # as last written (jobs/)

    def _resumed(self, which: str) -> tuple[RunState, dict[JobId, JobOutcome]]:
        """The run ``--resume`` continues, locked (a run still going is refused), with its finished jobs."""
        run = find_run(self.config.output.runs, which, "--resume", self.config.path)
        self._lock(run.path / LOCK_NAME, run.run_id, f"the run folder {run.path}", "--resume")
        try:
            return run.load_state(), run.load_outcomes()
        except UsageError as exc:
            if not run.state_path.is_file():  # it says so itself
                raise
            raise UsageError(
                f"{exc}; run {run.run_id} cannot be resumed from it (stored configs are unaffected): start a new run"
            ) from None

    def _lock(self, path: Path, run_id: str, what: str, where: str) -> None:
        lock = Lock.acquire(path, run_id, what, where)
        self.locks.append(lock)
        if lock.previous:
            self.console.line(
                f"took over the lock of {what}, left by {lock.previous}, which stopped without letting it go",
                level="warning",
            )

    def _unlock(self) -> None:
        while self.locks:
            self.locks.pop().release()

    def _check_resumable(self, state: RunState, fingerprints: dict[str, str]) -> None:
        if state.config_fingerprint != self.config.fingerprint():
            key = self.config.changed_key(dataclasses.asdict(state.config)) or "the file or flags"
            raise UsageError(
                f"the config changed since run {state.run_id} started ({key}); resume with the"
                " same config, or start a new run without --resume",
                "--resume",
            )
        changed = [s for s, f in fingerprints.items() if state.data.get(s) != f]
        if changed or set(state.data) != set(fingerprints):
            what = changed[0] if changed else "the symbol list"
            raise UsageError(f"the data changed since run {state.run_id} started ({what}); start a new run", "--resume")

    def _stored_run(self, job: JobId) -> str | None:
        """The run that wrote the record stored for ``job`` before this one started."""
        reference = self.plan.references.get(job)
        return reference.stored.metadata.run_id if reference and reference.stored else None

    # --- the run --------------------------------------------------------------------------------

    def execute(self) -> list[JobOutcome | JobId]:
        """Run every unfinished job; the outcomes in job order (a failed job: its id). Lets the locks go."""
        try:
            return self._execute()
        finally:
            self._unlock()

    def _execute(self) -> list[JobOutcome | JobId]:
        classes = {name: self.plugins.backends.get(m.backend) for name, m in self.plan.models.items()}
        cuda = self.executor.has_cuda() if self.config.runtime.mode == "fast" else None  # where the workers run
        fast = fast_settings(self.config.runtime, classes, cuda)
        if fast.notice:
            self.console.line(fast.notice)
        setup = WorkerSetup(
            self.plan.models, fast.runtime, str(self.config.path), self.config.data.horizon, fast.dtypes
        )
        self.executor.start(setup)  # loads every model: missing weights stop the run here, before any write
        if not self.resuming:  # a new run: its folder's lock, so that --resume can tell it still runs
            self._lock(
                self.run_dir.path / LOCK_NAME, self.run_dir.run_id, f"the run folder {self.run_dir.path}", "--resume"
            )
        logged = replays(read_trials(self.run_dir.path, self._left_out))  # an interrupted attempt's trials
        self.console.run_header(self.run_dir, self.config, self.executor.describe(), resumed=bool(self.state.jobs))
        for symbol, why in self.plan.skipped.items():
            self.console.line(f"skipped {symbol}: {why}", level="warning")
        self._commit(force=True)
        try:
            pooled = self._stage("Pooled stage", self.plan.pooled_jobs(logged)) if self.config.pooled.enabled else []
            configs = {o.job.model: o.config for o in pooled}
            self._stage("Per-symbol searches", self.plan.search_jobs(configs, logged))
        finally:
            self.executor.close()
            self.console.stop_jobs()
            self._commit(force=True)
        for symbol in {s.symbol for s in self.plan.series} - self.best_updated:  # e.g. stored by an earlier attempt
            self._update_best(symbol)
        self.store.sync()
        order = [JobId(m, s.symbol) for s in self.plan.series for m in self.plan.models]
        results = [self.outcomes.get(job, job) for job in order]
        if not self.jobs:
            self.console.line(f"nothing to do: every job of run {self.run_dir.run_id} finished in an earlier attempt")
        self.console.summary(
            results,
            self.state,
            self.run_dir,
            next_steps(self.config, self.run_dir.run_id),
            self.plan.skipped,
            self.metrics,
        )
        return results

    def _left_out(self, problem: str) -> None:
        self.console.line(
            f"{problem}: left out; the jobs it logged are scored again from their last trial before it", level="warning"
        )

    def _stage(self, name: str, jobs: list[JobSpec]) -> list[JobOutcome]:
        """Run ``jobs`` (skipping those an earlier attempt finished); the outcomes of those that finished."""
        todo = []
        for job in jobs:
            if job.job_id in self.outcomes:  # finished by an earlier attempt at this run
                self.console.line(f"{job.job_id}: finished in an earlier attempt, skipped")
                continue
            self.state.job(job.job_id).progress = Progress.PENDING
            todo.append(job)
        self.jobs.update({j.job_id: j for j in todo})
        self.console.stage(name, todo)
        self.console.start_jobs(todo)
        self.executor.run(todo, self._on_event)
        self.console.stop_jobs()
        return [self.outcomes[j.job_id] for j in jobs if j.job_id in self.outcomes]

    def _on_event(self, event: Event) -> None:
        if isinstance(event, TrialBatch):
            self._on_batch(event)
        else:
            self._on_done(event)

    def _on_batch(self, event: TrialBatch) -> None:
        self.run_dir.trials.append(event.rows)
        try:
            for text in event.tracebacks:
                self.run_dir.log_error(f"{event.job}: a failed trial", text)
        except OSError as exc:
            self.console.line(f"cannot write {self.run_dir.errors_path}: {exc}", level="warning")
        self.console.batch(event)
        self._commit()

    def _on_done(self, event: JobDone) -> None:
        job = self.jobs[event.job]
        state = self.state.job(job.job_id)
        state.attempts += event.attempts
        error, trace = event.error, event.traceback
        if not error:
            reference = self.plan.references.get(job.job_id)
            try:
                done = outcome(job, event.result, reference.stored if reference else None, self.plan.context())
                if done.record:  # nothing is stored that would not read back (e.g. a backend's NaN forecasts)
                    StoredRecord.from_json(done.record.to_json(), str(self.store.path(job.model, job.symbol)))
            except Exception as exc:
                error, trace = f"{type(exc).__name__}: {exc}", traceback.format_exc()
        if error:
            self._fail(job.job_id, error, trace)
        else:
            state.progress, state.status = Progress.DONE, done.status
            self.outcomes[job.job_id] = done
            self.pending.append(done)
            self.console.job_done(job, done, self.metrics)
        self._commit()

    def _fail(self, job: JobId, error: str, trace: str) -> None:
        """Mark a job failed (its stored file stays as it was) and log why."""
        state = self.state.job(job)
        state.progress, state.error, state.status = Progress.FAILED, error, Status.FAILED
        self.outcomes.pop(job, None)
        self.console.job_failed(job, error, trace if self.debug else "")
        if job.stage is Stage.POOLED:
            self.console.line(f"the symbols run without a pooled config for {job.model}", level="warning")
        try:
            self.run_dir.log_error(str(job), trace or error)
        except OSError as exc:
            self.console.line(f"{job}: cannot write {self.run_dir.errors_path}: {exc}", level="warning")

    def _commit(self, force: bool = False) -> None:
        """The group commit, every ``output.log_flush_s`` seconds (or now): the trial log's finished
        batches, the finished jobs' outcomes (with the records they decided), then the records and
        ``best/``, then the changed job states (``jobs/``; and ``run.json``, when forced: at the start and
        the end), in that order: nothing is on disk before what it was computed from.
        A run killed in between loses at most the batches and jobs since the last commit (resuming
        recomputes them), and a record whose outcome is logged is stored when the run resumes."""
        now = time.monotonic()
        if not force and now - self._saved_at < self.config.output.log_flush_s:
            return
        self._saved_at = now
        pending, self.pending = self.pending, []
        try:
            self.run_dir.trials.flush()
            self.run_dir.save_outcomes([o for o in pending if o.job not in self.logged])
            self.logged.update(o.job for o in pending)
        except OSError as exc:
            for done in pending:
                self._fail(done.job, f"cannot write the run log: {exc}", traceback.format_exc())
            pending = []
        with ThreadPoolExecutor(WRITERS) as writers:  # concurrent fsyncs share the file system's journal commits
            saved = [(done, writers.submit(self.store.save, done.record)) for done in pending if done.record]
            fresh: dict[str, StoredRecord] = {}
            for done, future in saved:
                try:
                    future.result()
                except Exception as exc:  # e.g. an output folder that cannot be written
                    self._fail(done.job, f"{type(exc).__name__}: {exc}", "".join(traceback.format_exception(exc)))
                    continue
                fresh[done.record.symbol] = done.record
            for future in [writers.submit(self._update_best, symbol, record) for symbol, record in fresh.items()]:
                future.result()
        try:
            self.store.sync()
            changed = [dataclasses.replace(s) for s in self.state.jobs.values() if self._saved_jobs.get(s.job) != s]
            self.run_dir.save_jobs(changed)  # before run.json: each job's last part is its state in run.json
            self._saved_jobs.update((s.job, s) for s in changed)
            if force:
                self.run_dir.save_state(self.state)
        except OSError as exc:
            self.console.line(f"cannot write {self.run_dir.state_path}: {exc}", level="warning")

    def _update_best(self, symbol: str, fresh: StoredRecord | None = None) -> None:
        try:
            self.store.update_best(symbol, self.config.evaluation.metric, fresh)
            self.best_updated.add(symbol)
        except OSError as exc:
            self.console.line(f"{symbol}: cannot update best/: {exc}")
