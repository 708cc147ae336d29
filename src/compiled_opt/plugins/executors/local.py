"""``local``: every job in this process, one after another, on one worker (the default executor)."""

from __future__ import annotations

from collections.abc import Sequence

from compiled_opt.api import Executor, JobSpec, OnEvent, Register, Worker, WorkerSetup, hookimpl, run_job


class LocalExecutor(Executor):
    """No options: the worker uses the run's ``[runtime]`` settings."""

    def start(self, setup: WorkerSetup) -> None:
        self.worker = Worker(setup)

    def run(self, jobs: Sequence[JobSpec], on_event: OnEvent) -> None:
        for job in jobs:
            on_event(run_job(self.worker, job, on_event))

    def describe(self) -> str:
        return f"local (this process, device {self.worker.runtime.device})"


@hookimpl
def compiled_opt_register_executors(register: Register) -> None:
    register("local", LocalExecutor)
