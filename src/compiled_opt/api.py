"""The public API for plugin authors: everything a backend, policy, aggregator or executor plugin needs.

    from compiled_opt.api import ModelBackend, hookimpl

Names here are stable; the packages beside it (``core``, ``tuning``, ``run``, ``store``,
``commands``) are the implementation.
"""

from compiled_opt.core.aggregate import Aggregator
from compiled_opt.core.backend import FEATURES, ContractError, ModelBackend, Runtime, WindowBatch
from compiled_opt.core.errors import UsageError
from compiled_opt.core.evaluate import Evaluation
from compiled_opt.core.hookspecs import Register, hookimpl
from compiled_opt.core.randomness import Draws
from compiled_opt.run.executor import Event, Executor, JobDone, run_job
from compiled_opt.tuning.acceptance import Decision, Policy, improvement_text, relative_improvement
from compiled_opt.tuning.jobs import JobResult, JobSpec, TrialBatch, WorkerSetup
from compiled_opt.tuning.worker import Worker

__all__ = [
    "FEATURES", "Aggregator", "ContractError", "Decision", "Draws", "Evaluation", "Event", "Executor", "JobDone",
    "JobResult", "JobSpec", "ModelBackend", "Policy", "Register", "Runtime", "TrialBatch", "UsageError",
    "WindowBatch", "Worker", "WorkerSetup", "hookimpl", "improvement_text", "relative_improvement", "run_job",
]
