"""The ray executor: runs the default config, matches the local executor bit for bit, survives a killed worker."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")

from conftest import write_config  # noqa: E402
from test_resume import stored, trials  # noqa: E402

from compiled_opt.core.config import load_config  # noqa: E402
from compiled_opt.plugins.executors.ray import RayExecutor  # noqa: E402
from compiled_opt.run.console import Console  # noqa: E402
from compiled_opt.run.driver import Run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "compiled-opt")
# Equal torch thread counts give bit-identical floats; Ray's workers get one core each.
EXTRA = "[runtime]\nthreads = 1\n"
RAY = '[executor]\nname = "ray"\noptions = { workers = 2 }\n'


def config_in(root: Path, market_dir: Path, executor: str = "") -> Path:
    root.mkdir()
    config = write_config(root, market_dir, trials=16, extra=EXTRA + executor)
    text = config.read_text().replace('symbols = ["APP", "NU"]', 'symbols = ["APP", "NU", "ARM"]')
    config.write_text(text.replace("[search]", "[search]\nseed = 11"))
    return config


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, market_dir):
    root = tmp_path_factory.mktemp("local") / "run"
    proc = subprocess.run([CLI, "run", str(config_in(root, market_dir)), "-q"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return stored(root), trials(root)


def test_ray_runs_the_bundled_default_config(tmp_path):
    shutil.copy(ROOT / "compiled_opt.toml", tmp_path)
    config = tmp_path / "compiled_opt.toml"
    config.write_text(config.read_text().replace('directory = "data"', f'directory = "{ROOT / "data"}"'))
    proc = subprocess.run([CLI, "run", str(config), "--executor", "ray"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "executor ray (" in proc.stdout and "0 failed" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "hyperparams" / "bootstrap").iterdir()) == [
        "SYNTH_A.json",
        "SYNTH_B.json",
        "SYNTH_C.json",
    ]


def test_local_and_ray_write_identical_configs_and_trial_logs(tmp_path, market_dir, local_run):
    root = tmp_path / "ray"
    proc = subprocess.run([CLI, "run", str(config_in(root, market_dir, RAY)), "-q"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert stored(root) == local_run[0]
    assert trials(root) == local_run[1]


def test_a_worker_killed_mid_job_is_retried_and_the_result_is_unchanged(tmp_path, market_dir, local_run, monkeypatch):
    root = tmp_path / "killed"
    config = load_config(config_in(root, market_dir, RAY.replace("workers = 2", "workers = 2, stream_s = 0")))
    started = {}
    original_start = RayExecutor.start

    def start(self, setup):
        original_start(self, setup)
        started["pids"] = self.pids()

    monkeypatch.setattr(RayExecutor, "start", start)
    run = Run(config, console=Console(level="warning"))
    original_batch = run._on_batch
    batches = []

    def on_batch(event):
        original_batch(event)
        batches.append(event)
        if len(batches) == 2:  # both workers are inside their first job: kill one of them
            os.kill(started["pids"][0], signal.SIGKILL)

    run._on_batch = on_batch
    outcomes = run.execute()
    assert [o.status for o in outcomes if o.status == "failed"] == []
    assert max(state.attempts for state in run.state.jobs.values()) == 2
    assert stored(root) == local_run[0]
    assert trials(root) == local_run[1]


def test_ray_runs_a_toto_config(tmp_path, market_dir):
    pytest.importorskip("toto")
    from compiled_opt.commands.checkpoint import options_toml, write_random

    options = options_toml(write_random("toto", tmp_path / "toto", "tiny"))
    models = (
        f'[models.toto]\nbackend = "toto"\n{options}\nspace = {{ aggregate = {{ choice = ["mean", "median"] }} }}\n'
    )
    config = write_config(tmp_path, market_dir, trials=4, extra=EXTRA + RAY, models=models)
    proc = subprocess.run([CLI, "run", str(config)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "executor ray (2 workers on cpu)" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "hyperparams" / "toto").iterdir()) == ["APP.json", "NU.json"]
