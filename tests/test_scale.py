"""Many symbols and many workers: job states as parts, every symbol stored, fractional-CPU Ray workers."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from conftest import write_config
from test_resume import stored, trials

from compiled_opt.core.config import load_config
from compiled_opt.core.data import _series
from compiled_opt.run.console import Console
from compiled_opt.run.driver import Run
from compiled_opt.store.records import Progress
from compiled_opt.store.stores import RunDir

CLI = str(Path(sys.executable).parent / "compiled-opt")
ZERO = '[models.gpu]\nbackend = "latency"\noptions = { encode_ms = 0, sample_ms = 0 }\n'


def many(tmp_path: Path, market_dir: Path, count: int) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    table = pq.read_table(market_dir / "APP.parquet")
    for i in range(count):
        pq.write_table(table.slice(table.num_rows - 120), data / f"S{i:03d}.parquet")
    config = write_config(tmp_path, data, trials=4, models=ZERO, extra="[runtime]\nthreads = 1\n")
    text = config.read_text().replace('symbols = ["APP", "NU"]', 'symbols = "all"')
    config.write_text(text.replace("[output]", "[output]\nlog_flush_s = 0"))
    return config


def test_many_symbols_write_job_parts_and_run_json_only_at_start_and_end(tmp_path, market_dir, monkeypatch):
    config = load_config(many(tmp_path, market_dir, 40))
    saves = []
    original = RunDir.save_state
    monkeypatch.setattr(
        RunDir, "save_state", lambda self, state: (saves.append(len(state.jobs)), original(self, state))
    )
    run = Run(config, console=Console(level="warning"))
    results = run.execute()
    assert saves == [0, 40]  # the start (no job yet) and the end: never in between
    assert len(list(run.run_dir.jobs_path.glob("part-*.json"))) > 10  # a commit after every event
    assert {p.stem for p in (tmp_path / "hyperparams" / "best").iterdir()} == {f"S{i:03d}" for i in range(40)}
    assert all(r.status for r in results)
    loaded = RunDir(config.output.runs, run.run_dir.run_id).load_state()
    assert loaded.jobs == run.state.jobs and {s.progress for s in loaded.jobs.values()} == {Progress.DONE}


def test_job_parts_are_read_over_run_json(tmp_path, market_dir):
    """A run killed mid-way has an early run.json: its job states come from the parts written since."""
    config = load_config(many(tmp_path, market_dir, 6))
    run = Run(config, console=Console(level="warning"))
    run.execute()
    run_dir = RunDir(config.output.runs, run.run_dir.run_id)
    early = run_dir.load_state()
    early.jobs = {}
    run_dir.save_state(early)  # as the start left it
    assert run_dir.load_state().jobs == run.state.jobs


def test_ray_with_fractional_cpus_and_grouped_batches_equals_local(tmp_path, market_dir):
    pytest.importorskip("ray")
    out = {}
    ray = '[executor]\nname = "ray"\noptions = { workers = 4, cpus_per_worker = 0.25, stream_s = 0.2 }\n'
    for name, executor in (("local", ""), ("ray", ray)):
        root = tmp_path / name
        root.mkdir()
        models = ZERO.replace("sample_ms = 0", "sample_ms = 2")
        config = write_config(root, market_dir, trials=12, models=models, extra="[runtime]\nthreads = 1\n" + executor)
        config.write_text(config.read_text().replace("[search]", "[search]\nseed = 3"))
        proc = subprocess.run([CLI, "run", str(config), "-q"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        out[name] = stored(root), trials(root)
    assert out["ray"] == out["local"] and len(out["local"][1]) == 24


def test_a_series_pickles_as_numpy_arrays_and_comes_back_equal(app_series):
    payload = pickle.dumps(app_series)
    assert b"torch" not in payload  # no tensor storages: NumPy arrays
    back = pickle.loads(payload)
    assert back.symbol == app_series.symbol and back.path == app_series.path
    assert torch.equal(back.values, app_series.values) and torch.equal(back.time, app_series.time)
    read_only = app_series.values.numpy().copy()
    read_only.setflags(write=False)  # as Ray hands arrays out: copied, so torch does not warn
    assert _series("X", app_series.path, app_series.time.numpy(), read_only).values.numpy().flags.writeable
