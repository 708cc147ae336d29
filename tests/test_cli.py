"""End to end through the CLI: stored files, decisions, summaries, exit codes, bad input writes nothing."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from compiled_opt.engine.cli import main

from conftest import write_config

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "compiled-opt")


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_run_stores_configs_and_then_judges_the_incumbent(tmp_path, market_dir, capsys):
    config = write_config(tmp_path, market_dir)
    assert main(["run", str(config)]) == 0
    out = capsys.readouterr().out
    assert "Eval runs per config: 3 (Monte Carlo standard error 42% lower than one run" in out
    assert "UPDATING config: no stored config" in out and "new: 2" in out
    record = json.loads((tmp_path / "hyperparams" / "bootstrap" / "APP.json").read_text())
    assert set(record) >= {"symbol", "model", "config", "validation", "test", "windows", "eval_runs", "seeds",
                           "decision", "previous", "metadata"}
    assert len(record["validation"]["per_run"]) == 3 and record["validation"]["num_predictions"] == 90
    assert record["windows"] == {"val_window": 30, "test_window": 20, "forecast_horizon": 1,
                                 "validation_rows": record["windows"]["validation_rows"],
                                 "test_rows": record["windows"]["test_rows"]}
    assert record["metadata"]["engine_version"] and record["metadata"]["previous_mae"] is None
    best = json.loads((tmp_path / "hyperparams" / "best" / "APP.json").read_text())
    assert best["model"] == "bootstrap" and best["selected_from"] == {"bootstrap": record["validation"]["pct_return_mae"]}
    trials = pq.read_table(next((tmp_path / "runs").glob("*/trials.parquet"))).to_pylist()
    assert len(trials) == 16 and {t["symbol"] for t in trials} == {"APP", "NU"}

    # second run: the stored config is the incumbent, re-scored on the same seeds
    assert main(["run", str(config), "--symbols", "APP", "--trials", "4"]) == 0
    out = capsys.readouterr().out
    assert "Incumbent : MAE" in out
    assert ("UPDATING config: Improvement:" in out) or ("NOT updating config:" in out)


def test_force_and_thresholds(tmp_path, market_dir, capsys):
    extra = '[acceptance]\npolicy = "relative_threshold"\noptions = { threshold = 0.5 }\n'
    config = write_config(tmp_path, market_dir, trials=4, extra=extra)
    assert main(["run", str(config), "--symbols", "APP"]) == 0
    before = (tmp_path / "hyperparams" / "bootstrap" / "APP.json").read_bytes()
    capsys.readouterr()
    assert main(["run", str(config), "--symbols", "APP"]) == 0
    out = capsys.readouterr().out
    assert "NOT updating config: Insufficient improvement" in out and "no improvement: 1" in out
    assert (tmp_path / "hyperparams" / "bootstrap" / "APP.json").read_bytes() == before
    assert main(["run", str(config), "--symbols", "APP", "--force"]) == 0
    out = capsys.readouterr().out
    assert "UPDATING config: forced (--force)" in out and "forced: 1" in out
    record = json.loads((tmp_path / "hyperparams" / "bootstrap" / "APP.json").read_text())
    assert record["decision"]["forced"] is True


@pytest.mark.parametrize("edit, where", [
    (lambda c: c.replace('symbols = ["APP", "NU"]', 'symbols = ["APP", "NOPE"]'), "data.symbols"),
    (lambda c: c.replace('backend = "bootstrap"', 'backend = "bootstrp"'), "models.bootstrap.backend"),
    (lambda c: c.replace("lookback = { int = [10, 80] }", "lookbak = { int = [10, 80] }"), "models.bootstrap.space.lookbak"),
    (lambda c: c.replace("lookback = { int = [10, 80] }", "lookback = { int = [10, 5000] }"), "APP.parquet"),
    (lambda c: c.replace("lookback = { int = [10, 80] }", "lookback = { int = [1, 80] }"), "models.bootstrap.space.lookback"),
    (lambda c: c.replace('"median"', '"medain"'), "models.bootstrap.space.aggregate"),
    (lambda c: c.replace("num_samples = 64 }", "num_samples = 64, lookback = 20 }"), "models.bootstrap.fixed.lookback"),
    (lambda c: c + '[acceptance]\npolicy = "paranoid"\n', "acceptance.policy"),
    (lambda c: c.replace("batch = 4", "batch = -1"), "search.batch"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, market_dir, capsys, edit, where):
    config = write_config(tmp_path, market_dir, trials=4)
    assert main(["run", str(config), "--symbols", "APP"]) == 0
    before = snapshot(tmp_path / "hyperparams")
    runs_before = snapshot(tmp_path / "runs")
    capsys.readouterr()
    config.write_text(edit(config.read_text()))
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and where in err
    assert snapshot(tmp_path / "hyperparams") == before and snapshot(tmp_path / "runs") == runs_before


def test_bad_data_file_is_rejected_before_any_write(tmp_path, market_dir, capsys):
    data = tmp_path / "data"
    shutil.copytree(market_dir, data)
    table = pq.read_table(data / "NU.parquet")
    close = table.column("close").to_pylist()
    close[100] = -1.0
    pq.write_table(table.set_column(table.schema.get_field_index("close"), "close", [close]), data / "NU.parquet")
    config = write_config(tmp_path, data, trials=4)
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err
    assert "NU.parquet: row 100: close: non-positive price -1.0" in err
    assert not (tmp_path / "hyperparams").exists()


def test_console_script_exit_code_for_malformed_toml(tmp_path):
    bad = tmp_path / "c.toml"
    bad.write_text("[search\n")
    proc = subprocess.run([CLI, "run", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(f"error: {bad}: malformed TOML") and proc.stderr.strip().count("\n") == 0


def latest_write(directory: Path) -> int:
    return max((p.stat().st_mtime_ns for p in directory.rglob("*.json")), default=0)


def test_killed_run_leaves_every_stored_file_old_or_new(tmp_path, market_dir):
    """SIGKILL runs right after they start storing: each config is a whole old or new version."""
    config = write_config(tmp_path, market_dir, trials=6)
    config.write_text(config.read_text().replace('symbols = ["APP", "NU"]', 'symbols = "all"'))
    assert main(["run", str(config)]) == 0
    store = tmp_path / "hyperparams"
    names = set(snapshot(store))
    killed = 0
    for delay in (0.0, 0.02, 0.05, 0.1):
        before = latest_write(store)
        proc = subprocess.Popen([CLI, "run", str(config), "--force"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        while proc.poll() is None and latest_write(store) == before:
            time.sleep(0.002)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        killed += proc.wait() == -signal.SIGKILL
        now = snapshot(store)
        for name, content in now.items():
            if name.endswith(".tmp"):
                continue  # an interrupted write's temp file, never read as a config
            record = json.loads(content)
            assert record["symbol"] == Path(name).stem and set(record) >= {"config", "validation", "test"}
        assert {n for n in now if not n.endswith(".tmp")} == names
        for trials in (tmp_path / "runs").glob("*/trials.parquet"):
            pq.read_table(trials)
    assert killed >= 2


def test_data_import_command(tmp_path, capsys):
    market = Path(__file__).resolve().parents[2] / "shared" / "data" / "market"
    assert main(["data", "import", str(market / "AEM.csv"), str(market / "SUIUSDT.csv"), "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.parquet")) == ["AEM.parquet", "SUIUSDT.parquet"]
    bad = tmp_path / "BAD.csv"
    bad.write_text("Date,close,high,low,open,volume\n2024-01-02,1,1,1,1,10\n2024-01-01,1,1,1,1,10\n")
    assert main(["data", "import", str(bad), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}") and "timestamp" in err and not (tmp_path / "BAD.parquet").exists()


def test_data_context_length_fixes_each_models_context(tmp_path, market_dir, capsys):
    models = '[models.bootstrap]\nbackend = "bootstrap"\nfixed = { num_samples = 32 }\n'  # default space searches lookback
    config = write_config(tmp_path, market_dir, trials=4, models=models)
    text = config.read_text().replace('symbols = ["APP", "NU"]', 'symbols = ["APP"]\ncontext_length = 33')
    config.write_text(text)
    assert main(["run", str(config)]) == 0
    record = json.loads((tmp_path / "hyperparams" / "bootstrap" / "APP.json").read_text())
    assert record["config"]["lookback"] == 33
    searched = '[models.bootstrap]\nbackend = "bootstrap"\nspace = { lookback = { int = [10, 20] } }\n'
    config.write_text(text.replace(models, searched))
    assert main(["run", str(config), "--force"]) == 0
    record = json.loads((tmp_path / "hyperparams" / "bootstrap" / "APP.json").read_text())
    assert 10 <= record["config"]["lookback"] <= 20
