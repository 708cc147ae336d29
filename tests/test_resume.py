"""Resume: a run SIGKILLed at several points and resumed stores exactly what an uninterrupted run stores."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import write_config

from compiled_opt.commands.cli import main
from compiled_opt.store.stores import read_trials

CLI = str(Path(sys.executable).parent / "compiled-opt")
VOLATILE = {"created_at", "run_id", "latency_s"}  # timestamps, run ids and timings may differ


def scrub(value):
    """A stored JSON value without timestamps, run ids and timings."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def stored(root: Path) -> dict[str, object]:
    return {
        str(p.relative_to(root)): scrub(json.loads(p.read_text()))
        for p in sorted((root / "hyperparams").rglob("*.json"))
    }


def trials(root: Path) -> list[dict]:
    run = next((root / "runs").iterdir())
    return [scrub({**vars(row), "run_id": None}) for row in read_trials(run)]


def make_config(root: Path, market_dir: Path, extra: str = "") -> Path:
    root.mkdir()
    config = write_config(root, market_dir, trials=24, extra=extra)
    text = config.read_text().replace('symbols = ["APP", "NU"]', 'symbols = ["APP", "NU", "ARM"]')
    text = text.replace("[output]", "[output]\nlog_flush_s = 0  # a part file per batch: kills land mid-job")
    config.write_text(text.replace("[search]", "[search]\nseed = 7"))
    return config


def inodes(root: Path) -> dict[str, int]:
    """The logged batches' files: a batch that is logged again gets a new file (atomic rename)."""
    return {p.name: p.stat().st_ino for p in (root / "runs").glob("*/trials/*.parquet")}


def parts(root: Path) -> int:
    return len(list((root / "runs").glob("*/trials/*.parquet")))


def kill_after(config: Path, root: Path, batches: int, *flags: str) -> None:
    """Start the run and SIGKILL it once ``batches`` trial batches are logged."""
    proc = subprocess.Popen(
        [CLI, "run", str(config), "-q", *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    while proc.poll() is None and parts(root) < batches:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, market_dir):
    root = tmp_path_factory.mktemp("whole") / "run"
    assert main(["run", str(make_config(root, market_dir)), "-q"]) == 0
    return stored(root), trials(root)


def test_resume_after_kills_at_several_points_equals_an_uninterrupted_run(tmp_path, market_dir, uninterrupted):
    root = tmp_path / "killed"
    config = make_config(root, market_dir)
    kill_after(config, root, 3)  # inside the first job (6 batches of 4 per job)
    before = inodes(root)
    kill_after(config, root, 9, "--resume")  # inside the second job, after a resume
    assert main(["run", str(config), "--resume", "latest", "-q"]) == 0
    after = inodes(root)
    assert len(before) < 18 and all(after[name] == inode for name, inode in before.items())  # continued, not redone
    assert len(list((root / "runs").iterdir())) == 1  # one run, continued: no new run id
    assert stored(root) == uninterrupted[0]
    assert trials(root) == uninterrupted[1]  # every trial logged once, none twice, none lost


def test_resume_skips_finished_jobs(tmp_path, market_dir, uninterrupted, capsys):
    root = tmp_path / "done"
    config = make_config(root, market_dir)
    assert main(["run", str(config), "-q"]) == 0
    capsys.readouterr()
    assert main(["run", str(config), "--resume"]) == 0
    out = capsys.readouterr().out
    assert out.count("finished in an earlier attempt, skipped") == 3
    assert stored(root) == uninterrupted[0]


def test_resume_refuses_a_changed_config_or_changed_data(tmp_path, market_dir, capsys):
    root = tmp_path / "changed"
    config = make_config(root, market_dir)
    kill_after(config, root, 2)
    assert main(["run", str(config), "--resume", "--trials", "30"]) == 2
    assert "--resume: the config changed since run" in capsys.readouterr().err
    config.write_text(config.read_text().replace("trials = 24", "trials = 25"))
    assert main(["run", str(config), "--resume"]) == 2
    assert "--resume: the config changed since run" in capsys.readouterr().err
    config.write_text(config.read_text().replace("trials = 25", "trials = 24"))
    assert main(["run", str(config), "--resume", "-q"]) == 0  # the same config again: resumed


def test_resume_refuses_changed_data(tmp_path, market_dir, capsys):
    import pyarrow.parquet as pq

    root = tmp_path / "data-changed"
    data = tmp_path / "data"
    data.mkdir()
    for name in ("APP", "NU", "ARM"):
        (data / f"{name}.parquet").write_bytes((market_dir / f"{name}.parquet").read_bytes())
    config = make_config(root, data)
    kill_after(config, root, 2)
    table = pq.read_table(data / "NU.parquet")
    pq.write_table(table.slice(0, table.num_rows - 1), data / "NU.parquet")  # a row less
    assert main(["run", str(config), "--resume"]) == 2
    assert capsys.readouterr().err.strip().endswith("(NU); start a new run")


def test_resume_leaves_out_a_damaged_trial_part_and_scores_its_trials_again(
    tmp_path, market_dir, uninterrupted, capsys
):
    """Trial parts are not fsynced: one cut short (a power cut) is left out with a notice, the unfinished job it
    logged replays the trials before it and scores the rest again, and the result is an uninterrupted run's."""
    root = tmp_path / "damaged"
    config = make_config(root, market_dir)
    kill_after(config, root, 9)
    run = next((root / "runs").iterdir())
    finished = {o["job"]["symbol"] for p in run.glob("outcomes/*.json") for o in json.loads(p.read_text())["outcomes"]}
    parts = sorted(run.glob("trials/*.parquet"))
    open_parts = [p for p in parts if pq.read_table(p).column("symbol")[0].as_py() not in finished]
    assert len(open_parts) >= 2, "killed too late: no job left with two logged parts"
    damaged = open_parts[0]  # the unfinished job's first part: every later one follows a gap
    damaged.write_bytes(damaged.read_bytes()[:100])
    assert main(["run", str(config), "--resume", "latest"]) == 0
    out = capsys.readouterr().out
    assert f"{damaged}: a damaged trial-log part (" in out
    assert "left out; the jobs it logged are scored again from their last trial before it" in out
    assert stored(root) == uninterrupted[0]
    assert [scrub({**vars(r), "run_id": None}) for r in read_trials(run, lambda problem: None)] == uninterrupted[1]
