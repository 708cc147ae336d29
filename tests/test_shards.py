"""The pooled stage in shards: groups of symbols evaluated apart and joined give the unsharded result."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_config
from test_resume import stored, trials

from compiled_opt.core.config import load_config
from compiled_opt.core.registry import Plugins
from compiled_opt.run.plan import Plan
from compiled_opt.tuning.jobs import WorkerSetup
from compiled_opt.tuning.shards import ShardedRunner, ShardEvaluators, split_shards
from compiled_opt.tuning.worker import Worker

CLI = str(Path(sys.executable).parent / "compiled-opt")
POOLED = "[pooled]\nenabled = true\nshards = {shards}\n[runtime]\nthreads = 1\n"


def three_symbols(config: Path) -> Path:
    text = config.read_text().replace('symbols = ["APP", "NU"]', 'symbols = ["APP", "NU", "ARM"]')
    config.write_text(text.replace("[search]", "[search]\nseed = 5"))
    return config


@pytest.fixture(scope="module")
def pooled_job(tmp_path_factory, market_dir):
    root = tmp_path_factory.mktemp("shards")
    config = load_config(three_symbols(write_config(root, market_dir, trials=12, extra=POOLED.format(shards=2))))
    plugins = Plugins.load()
    plan = Plan(config, plugins, "run", 7)
    setup = WorkerSetup(plan.models, config.runtime, str(config.path), config.data.horizon)
    return plan.pooled_jobs({})[0], setup


def test_split_covers_every_symbol_once_in_order(pooled_job):
    job, _ = pooled_job
    for count in (1, 2, 3, 10):
        shards = split_shards(dataclasses.replace(job, shards=count))
        assert len(shards) == min(count, 3)
        assert [s.symbol for shard in shards for s in shard.series] == ["APP", "NU", "ARM"]
        assert [r for shard in shards for r in shard.validation] == list(job.validation)
        assert max(len(s.series) for s in shards) - min(len(s.series) for s in shards) <= 1


@pytest.mark.parametrize("count", [2, 3])
def test_sharded_search_equals_the_unsharded_pooled_job(pooled_job, count):
    job, setup = pooled_job
    job = dataclasses.replace(job, shards=count)
    whole = Worker(setup).run(job, lambda batch: None)
    shards, evaluators = split_shards(job), ShardEvaluators(Worker(setup))
    calls = []

    def evaluate(batch):
        calls.append(len(batch))
        return [evaluators(shards[c.shard].key, lambda c=c: shards[c.shard], c) for c in batch]

    batches = []
    parts = ShardedRunner(setup, evaluate, "cpu").run(job, batches.append)
    assert set(calls) == {count}  # every evaluation went to every shard at once
    assert parts.challenger == whole.challenger and parts.decision == whole.decision
    assert sum(len(b.rows) for b in batches) == whole.trials == 12
    np.testing.assert_allclose(parts.challenger_val.errors, whole.challenger_val.errors, rtol=1e-12)
    for name, evaluation in whole.test.items():
        np.testing.assert_allclose(parts.test[name].errors, evaluation.errors, rtol=1e-12)
        assert parts.test[name].window_ids == evaluation.window_ids


def test_ray_with_pooled_shards_equals_local(tmp_path, market_dir):
    pytest.importorskip("ray")
    results = {}
    for name, executor in (("local", ""), ("ray", '[executor]\nname = "ray"\noptions = { workers = 2 }\n')):
        root = tmp_path / name
        root.mkdir()
        config = three_symbols(write_config(root, market_dir, trials=8, extra=POOLED.format(shards=3) + executor))
        proc = subprocess.run([CLI, "run", str(config), "-q"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        results[name] = stored(root), trials(root)
    assert results["ray"] == results["local"]
    assert any(row["symbol"] == "(pooled)" for row in results["local"][1])


def test_a_shard_whose_worker_is_killed_is_evaluated_again_and_the_result_is_unchanged(tmp_path, market_dir):
    """A SIGKILL of a Ray worker inside the pooled stage: its shard is evaluated again once Ray has restarted
    it (before, the retries ran out while it restarted and the candidates were told as failed)."""
    pytest.importorskip("ray")
    from compiled_opt.plugins.executors.ray import RayExecutor
    from compiled_opt.run.console import Console
    from compiled_opt.run.driver import Run

    results, killed = {}, []
    for name, executor in (("local", ""), ("ray", '[executor]\nname = "ray"\noptions = { workers = 2 }\n')):
        root = tmp_path / name
        root.mkdir()
        config = three_symbols(write_config(root, market_dir, trials=8, extra=POOLED.format(shards=3) + executor))
        run = Run(load_config(config), console=Console(level="warning"))
        original = run._on_batch

        def on_batch(event, run=run, original=original):
            original(event)
            if isinstance(run.executor, RayExecutor) and not killed:  # the pooled stage's first batch
                killed.append(run.executor.pids()[0])
                os.kill(killed[0], signal.SIGKILL)

        run._on_batch = on_batch
        assert [o for o in run.execute() if o.status == "failed"] == []
        results[name] = stored(root), trials(root)
    assert killed and results["ray"] == results["local"]
