"""Executors run a run's jobs: the interface and its events.

An executor is a plugin (hook ``compiled_opt_register_executors``), built as ``cls(**options)`` from
the config's ``[executor]`` table before any work, so a bad option stops the run before anything is
written. ``start(setup)`` starts its workers (each loads every model once); ``run`` runs jobs on
them and reports every finished batch of trials and every finished job through ``on_event``, in
the driver's thread. It never writes files: the driver does.
"""

from __future__ import annotations

import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from compiled_opt.store.records import JobId
from compiled_opt.tuning.jobs import JobResult, JobSpec, TrialBatch, WorkerSetup
from compiled_opt.tuning.worker import Worker


@dataclass(frozen=True)
class JobDone:
    """A job's end: its ``result``, or ``error`` (one line) and ``traceback`` when it failed."""

    job: JobId
    result: JobResult | None
    error: str = ""
    traceback: str = ""
    attempts: int = 1


Event = TrialBatch | JobDone
OnEvent = Callable[[Event], None]


class Executor(ABC):
    """Runs jobs on workers; see the module docstring. Its constructor's keyword arguments are its options."""

    @abstractmethod
    def start(self, setup: WorkerSetup) -> None:
        """Start the workers and load every model: a ``UsageError`` here (missing weights, no GPU)
        stops the run before any work."""

    @abstractmethod
    def run(self, jobs: Sequence[JobSpec], on_event: OnEvent) -> None:
        """Run every job, reporting each finished batch and job through ``on_event``."""

    def has_cuda(self) -> bool:
        """Whether the workers will have a CUDA device, which fast mode uses (without one it runs on the CPU).
        Called before ``start``; by default, whether this machine has one."""
        import torch

        return torch.cuda.is_available()

    def close(self) -> None:  # noqa: B027 (optional: nothing to stop by default)
        """Stop the workers."""

    def describe(self) -> str:
        return type(self).__name__


def run_job(worker: Worker, job: JobSpec, on_batch: Callable[[TrialBatch], None]) -> JobDone:
    """One job on ``worker``; its failure is reported, not raised, so the other jobs still run."""
    try:
        return JobDone(job.job_id, worker.run(job, on_batch))
    except Exception as exc:
        return JobDone(job.job_id, None, f"{type(exc).__name__}: {exc}", traceback.format_exc())
