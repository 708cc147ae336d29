"""The public API for plugin authors: everything a backend, policy, aggregator or executor plugin needs.

    from compiled_opt.api import ModelBackend, hookimpl

Names here are stable; modules under ``compiled_opt.engine`` are the implementation.
"""

from compiled_opt.engine.acceptance import Decision, Policy, improvement_text, relative_improvement
from compiled_opt.engine.aggregate import Aggregator
from compiled_opt.engine.backend import FEATURES, ContractError, ModelBackend, Runtime, WindowBatch
from compiled_opt.engine.errors import UsageError
from compiled_opt.engine.evaluate import Evaluation
from compiled_opt.engine.executor import Event, Executor, JobDone, run_job
from compiled_opt.engine.hookspecs import Register, hookimpl
from compiled_opt.engine.jobs import JobResult, JobSpec, TrialBatch, Worker, WorkerSetup
from compiled_opt.engine.randomness import Draws

__all__ = [
    "FEATURES", "Aggregator", "ContractError", "Decision", "Draws", "Evaluation", "Event", "Executor", "JobDone",
    "JobResult", "JobSpec", "ModelBackend", "Policy", "Register", "Runtime", "TrialBatch", "UsageError",
    "WindowBatch", "Worker", "WorkerSetup", "hookimpl", "improvement_text", "relative_improvement", "run_job",
]
