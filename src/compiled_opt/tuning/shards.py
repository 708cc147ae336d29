"""The pooled stage in shards: groups of its symbols evaluated apart, on many workers, and joined.

A pooled evaluation puts every symbol's errors side by side (``core.evaluate.joined``), each symbol's
draws keyed by its own windows, so evaluating groups of symbols apart and joining the groups in order
gives exactly the unsharded evaluation. ``ShardedRunner`` runs a pooled job's search where it is
called (an executor's driver side), sending each candidate's evaluation to every shard at once through
``evaluate`` (e.g. one call per shard on the workers); ``ShardEvaluators`` is a worker's side.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from compiled_opt.core.data import Series
from compiled_opt.core.evaluate import Evaluation, joined
from compiled_opt.core.registry import Plugins
from compiled_opt.tuning.jobs import JobResult, JobSpec, TrialBatch, WorkerSetup
from compiled_opt.tuning.search import ScoreMemo
from compiled_opt.tuning.worker import Worker, run_search


@dataclass(frozen=True)
class Shard:
    """A group of a pooled job's symbols and their windows; ``key`` names it among every run's shards."""

    key: Hashable
    model: str
    series: tuple[Series, ...]
    validation: tuple[range, ...]
    test: tuple[range, ...]
    horizon: int
    metric: str
    levels: tuple[float, ...]
    cost: float


@dataclass(frozen=True)
class ShardCall:
    """One evaluation of a shard: ``params`` with ``seeds`` on its ``which`` windows."""

    shard: int
    which: str  # "validation" or "test"
    sample_cache: bool
    params: dict[str, Any]
    seeds: tuple[int, ...]
    every_metric: bool


def split_shards(job: JobSpec) -> list[Shard]:
    """``job``'s symbols in up to ``job.shards`` groups of consecutive symbols, as equal as they come."""
    count = max(1, min(job.shards, len(job.series)))
    bounds = [len(job.series) * i // count for i in range(count + 1)]
    return [
        Shard(
            (job.run_id, str(job.job_id), i),
            job.model,
            job.series[a:b],
            job.validation[a:b],
            job.test[a:b],
            job.horizon,
            job.metric,
            job.levels,
            job.cost,
        )
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))
    ]


EvaluateShards = Callable[[Sequence[ShardCall]], list[Evaluation]]


class ShardedRunner:
    """Runs pooled jobs here, each candidate evaluated on every shard at once by ``evaluate``."""

    def __init__(self, setup: WorkerSetup, evaluate: EvaluateShards, device: str, plugins: Plugins | None = None):
        self.setup, self.evaluate, self.device = setup, evaluate, device
        self.plugins = plugins or Plugins.load()

    def run(self, job: JobSpec, emit: Callable[[TrialBatch], None]) -> JobResult:
        count = len(split_shards(job))

        def evaluators(which: str, sample_cache: bool) -> ScoreMemo:
            def evaluate(params: Mapping[str, Any], seeds: tuple[int, ...], every_metric: bool = False) -> Evaluation:
                return joined(
                    self.evaluate(
                        [
                            ShardCall(i, which, sample_cache, dict(params), tuple(seeds), every_metric)
                            for i in range(count)
                        ]
                    )
                )

            return ScoreMemo(evaluate)

        dtype = self.setup.dtypes.get(job.model, self.setup.runtime.dtype)
        return run_search(job, self.setup.models[job.model], self.plugins, evaluators, emit, self.device, dtype)


class ShardEvaluators:
    """A worker's shards: each one fetched and its evaluators made on first use, through the worker's caches."""

    def __init__(self, worker: Worker):
        self.worker = worker
        self.shards: dict[Hashable, Shard] = {}
        self.made: dict[Hashable, Callable[..., Evaluation]] = {}

    def __call__(self, key: Hashable, load: Callable[[], Shard], call: ShardCall) -> Evaluation:
        """``call`` on the shard named ``key``; ``load()`` fetches the shard the first time."""
        shard = self.shards[key] if key in self.shards else self.shards.setdefault(key, load())
        made = (key, call.which, call.sample_cache)
        if made not in self.made:
            self.made[made] = self.worker.evaluator(
                shard.model,
                shard.series,
                getattr(shard, call.which),
                shard.horizon,
                shard.metric,
                call.sample_cache,
                shard.levels,
                shard.cost,
            ).evaluate
        return self.made[made](call.params, call.seeds, call.every_metric)
