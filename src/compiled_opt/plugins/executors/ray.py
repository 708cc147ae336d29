"""``ray``: jobs on Ray actors, across the GPUs of one machine or the nodes of a cluster.

Options (``[executor] options``): ``gpus_per_worker`` GPUs per actor (fractional: several actors
share a GPU) when the runtime uses CUDA; ``cpus_per_worker`` CPUs per actor (fractional: e.g. workers
that mostly wait on a GPU); ``workers`` actors (0: as many as the cluster's GPUs, or CPUs, allow);
``stream_s``: an actor sends its finished batches back together at most this often (0: each as it
finishes), so that the driver is not woken for every batch; ``address`` of a running cluster to join
(or ``--ray-address``; empty starts a local Ray); ``max_retries`` per job whose actor died; ``bind``: a
local Ray listens on ``"loopback"`` only (the default: nothing on the network can reach it), or, with
``"all"``, on every interface as Ray does by default (so that other machines can join it).

The pooled stage, in ``pooled.shards`` groups of symbols, is searched in the driver: each candidate
is evaluated on every shard at once, one call per shard on the actors, and the shards joined
(``compiled_opt.tuning.shards``).

Each actor loads every model once and runs many jobs. Finished trial batches stream back in groups
(each job is a Ray streaming generator; a job's last batches come with its result), so the driver's
progress and trial log stay live.
An actor killed mid-job is restarted by Ray; its job goes to the next free actor, which replays the
batches already streamed (the optimizer asks the same candidates again) and carries on, up to
``max_retries`` times.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from compiled_opt.api import (
    Executor,
    JobDone,
    JobSpec,
    OnEvent,
    OptionError,
    Register,
    ShardCall,
    ShardedRunner,
    ShardEvaluators,
    TrialBatch,
    TrialRow,
    UsageError,
    Worker,
    WorkerSetup,
    hookimpl,
    logged_trials,
    run_job,
    split_shards,
)

INSTALL = "pip install 'compiled-opt[ray]'"
BINDS = ("loopback", "all")
RESTART_S = 300.0  # how long a retry waits for Ray to restart a dead worker
LOCAL_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's single-machine mode, every process on 127.0.0.1


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise UsageError(f"the ray executor needs Ray: {INSTALL}", "executor.name") from exc
    return ray


@contextlib.contextmanager
def _loopback(on: bool) -> Iterator[None]:
    """While a local Ray starts: its node address 127.0.0.1, so that its GCS, raylet, object manager and
    workers listen on loopback only (Ray binds every interface of a node with a routable address). Ray reads
    the switch from the environment (its processes started meanwhile inherit it) and from a constant read
    at import, so both are set, and put back after."""
    if not on:
        yield
        return
    from ray._private import ray_constants  # tested with Ray 2.60 (tests/test_ray_network.py)

    before, constant = os.environ.get(LOCAL_ONLY), getattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    os.environ[LOCAL_ONLY], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = constant
        if before is None:
            os.environ.pop(LOCAL_ONLY, None)
        else:
            os.environ[LOCAL_ONLY] = before


class _Actor:
    """The body of a Ray actor: a ``Worker`` whose jobs stream their batches back as they finish."""

    def __init__(self, setup: WorkerSetup):
        self.worker = Worker(setup)
        self.shards = ShardEvaluators(self.worker)
        import nevergrad  # noqa: F401  (imported here, while the actor starts, not inside its first job)

    def ready(self) -> str:
        return self.worker.runtime.device

    def pid(self) -> int:
        return os.getpid()

    def evaluate(self, key: Any, shard: list, call: ShardCall) -> Any:
        """One evaluation of a pooled job's shard (``shard``: its object ref in a list, fetched the first time)."""
        return self.shards(key, lambda: _ray().get(shard[0]), call)

    def run(self, job: JobSpec, stream_s: float) -> Iterator[list[TrialBatch | JobDone]]:
        """A Ray streaming generator: ``job``'s finished batches, in groups of those that finish within
        ``stream_s`` of the group's first, the last group ending with its ``JobDone``. The job runs in a
        thread of the actor while this yields what it reports."""
        events: queue.SimpleQueue = queue.SimpleQueue()
        thread = threading.Thread(target=lambda: events.put(run_job(self.worker, job, events.put)))
        thread.start()
        group: list[TrialBatch | JobDone] = []
        while not group or not isinstance(group[-1], JobDone):
            group = [events.get()]
            until = time.monotonic() + stream_s
            while not isinstance(group[-1], JobDone) and (left := until - time.monotonic()) > 0:
                try:
                    group.append(events.get(timeout=left))
                except queue.Empty:
                    break
            yield group
        thread.join()


class RayExecutor(Executor):
    """See the module docstring."""

    def __init__(
        self,
        workers: int = 0,
        gpus_per_worker: float = 1.0,
        address: str = "",
        max_retries: int = 2,
        bind: str = "loopback",
        cpus_per_worker: float = 1.0,
        stream_s: float = 0.5,
    ):
        if bind not in BINDS:
            raise OptionError(f"must be one of {', '.join(map(repr, BINDS))}, not {bind!r}", "bind")
        self.bind = bind
        if workers < 0:
            raise OptionError(f"must be 0 (one per GPU slot or CPU) or positive, not {workers}", "workers")
        if not 0 < gpus_per_worker <= 64:
            raise OptionError(f"must be above 0 and at most 64, not {gpus_per_worker}", "gpus_per_worker")
        if not 0 < cpus_per_worker <= 64:
            raise OptionError(f"must be above 0 and at most 64, not {cpus_per_worker}", "cpus_per_worker")
        if not 0 <= stream_s <= 60:
            raise OptionError(f"must be between 0 and 60 seconds, not {stream_s}", "stream_s")
        self.cpus_per_worker, self.stream_s = cpus_per_worker, stream_s
        if max_retries < 0:
            raise OptionError(f"must be 0 or positive, not {max_retries}", "max_retries")
        self.workers, self.gpus_per_worker, self.address = workers, gpus_per_worker, address
        self.max_retries = max_retries

    def _connect(self) -> Any:
        """Ray, joined to ``address`` or to a local cluster started here: on loopback unless ``bind = "all"``."""
        ray = _ray()
        if not ray.is_initialized():
            quiet = logging.getLogger("ray")  # its start-up notices are not the run's output
            level = quiet.level
            quiet.setLevel(logging.ERROR)
            try:
                with _loopback(not (self.address or os.environ.get("RAY_ADDRESS")) and self.bind == "loopback"):
                    ray.init(
                        address=self.address or None,
                        include_dashboard=False,
                        log_to_driver=False,
                        configure_logging=False,
                    )
            finally:
                quiet.setLevel(level)
        return ray

    def has_cuda(self) -> bool:
        return self._connect().cluster_resources().get("GPU", 0) > 0

    def start(self, setup: WorkerSetup) -> None:
        ray = self._connect()
        self.setup, rt = setup, setup.runtime
        resources = ray.cluster_resources()
        gpu = rt.device == "cuda" or (rt.device == "auto" and resources.get("GPU", 0) > 0)
        cpus = self.cpus_per_worker
        per = {"num_gpus": self.gpus_per_worker, "num_cpus": cpus} if gpu else {"num_cpus": cpus}
        slots = int(resources.get("GPU", 0) / self.gpus_per_worker if gpu else resources.get("CPU", 1) / cpus)
        count = self.workers or max(slots, 1)
        actor_cls = ray.remote(max_restarts=-1, max_task_retries=0)(_Actor)
        self.actors = [actor_cls.options(**per).remote(self.setup) for _ in range(count)]
        try:
            self.devices = ray.get([a.ready.remote() for a in self.actors])
        except ray.exceptions.RayTaskError as exc:  # e.g. missing weights: the worker's one-line error
            cause = exc.cause if isinstance(getattr(exc, "cause", None), UsageError) else None
            raise (cause or UsageError(f"a Ray worker failed to start: {exc}")) from None
        self.gpu = gpu

    def describe(self) -> str:
        shared = " (shared GPUs)" if self.gpu and self.gpus_per_worker < 1 else ""
        return f"ray ({len(self.actors)} workers on {self.devices[0]}{shared})"

    def pids(self) -> list[int]:
        """The actors' process ids (for tests that kill one)."""
        return _ray().get([a.pid.remote() for a in self.actors])

    def run(self, jobs: Sequence[JobSpec], on_event: OnEvent) -> None:
        for job in jobs:
            if _sharded(job):
                self._sharded(job, on_event)
        self._jobs([job for job in jobs if not _sharded(job)], on_event)

    def _sharded(self, job: JobSpec, on_event: OnEvent) -> None:
        """A pooled job searched here, each candidate evaluated on every shard at once, shard ``i`` always
        on actor ``i`` modulo their number (which keeps its encodes and draws); a shard whose actor died
        is evaluated again on it once Ray has restarted it, up to ``max_retries`` times."""
        ray = _ray()
        shards = split_shards(job)
        refs = [[ray.put(shard)] for shard in shards]

        def evaluate(calls: Sequence[ShardCall]) -> list:
            attempt = 0
            while True:
                try:
                    return ray.get(
                        [
                            self.actors[c.shard % len(self.actors)].evaluate.remote(
                                shards[c.shard].key, refs[c.shard], c
                            )
                            for c in calls
                        ]
                    )
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError):
                    attempt += 1
                    if attempt > self.max_retries:
                        raise
                    _wait_restarted(self.actors)

        on_event(run_job(ShardedRunner(self.setup, evaluate, self.devices[0]), job, on_event))

    def _jobs(self, jobs: Sequence[JobSpec], on_event: OnEvent) -> None:
        ray = _ray()
        pending = deque((job, 1) for job in jobs)
        running: dict[Any, tuple[Any, JobSpec, int]] = {}  # streaming generator -> actor, job, attempt
        free = list(self.actors)
        streamed: dict[Any, list[TrialRow]] = {}  # per job id
        while pending or running:
            while free and pending:
                job, attempt = pending.popleft()
                actor = free.pop(0)
                running[actor.run.remote(job, self.stream_s)] = (actor, job, attempt)
            ready, _ = ray.wait(list(running), num_returns=1)
            for stream in ready:
                actor, job, attempt = running[stream]
                try:
                    events = ray.get(next(stream))
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
                    del running[stream]
                    _wait_restarted([actor])
                    free.append(actor)
                    if attempt <= self.max_retries:
                        rows = streamed.pop(job.job_id, [])
                        pending.appendleft(
                            (dataclasses.replace(job, replay=job.replay + logged_trials(rows)), attempt + 1)
                        )
                        continue
                    events = [JobDone(job.job_id, None, f"its Ray worker died {attempt} times ({type(exc).__name__})")]
                for event in events:
                    if isinstance(event, TrialBatch):
                        streamed.setdefault(job.job_id, []).extend(event.rows)
                        on_event(event)
                        continue
                    del running[stream]
                    free.append(actor)
                    streamed.pop(job.job_id, None)
                    on_event(dataclasses.replace(event, attempts=attempt))

    def close(self) -> None:
        ray = _ray()
        for actor in getattr(self, "actors", []):
            ray.kill(actor)
        if ray.is_initialized() and not self.address:
            ray.shutdown()


def _wait_restarted(actors: Sequence[Any], timeout_s: float = RESTART_S) -> None:
    """Wait until Ray has restarted every one of ``actors`` that died: meanwhile their tasks fail at once
    (``ActorUnavailableError``), which a retry must not count as another death."""
    ray = _ray()
    deadline = time.monotonic() + timeout_s
    for actor in actors:
        while True:
            try:
                ray.get(actor.ready.remote())
                break
            except ray.exceptions.ActorUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def _sharded(job: JobSpec) -> bool:
    """A pooled job in more than one shard (``pooled.shards``)."""
    return job.shards > 1 and len(job.series) > 1


@hookimpl
def compiled_opt_register_executors(register: Register) -> None:
    register("ray", RayExecutor)
