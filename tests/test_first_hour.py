"""What a new user meets in the first hour: hints that work, reports that keep what their run decided,
summaries that do not mislead, progress, warnings, and errors that blame the right thing."""

from __future__ import annotations

import io
import json
import re
import shlex
import shutil

import numpy as np
import pytest
from conftest import write_config
from scipy import stats as st

from compiled_opt.commands.cli import main
from compiled_opt.core.config import load_config
from compiled_opt.core.stats import Across
from compiled_opt.run.console import Console, counts_line, out_of_sample_line, warnings_of
from compiled_opt.run.driver import Run


def hint(out: str) -> list[list[str]]:
    """The commands of the run's last line, as argument lists."""
    line = next(line for line in out.splitlines() if line.startswith("Look at the results: "))
    return [shlex.split(c)[1:] for c in line.removeprefix("Look at the results: ").split(" | ")]


@pytest.mark.parametrize("output", [False, True])
def test_the_runs_last_line_names_commands_that_work(tmp_path, market_dir, capsys, output):
    config = write_config(tmp_path, market_dir, trials=4)
    extra = ["--output", str(tmp_path / "elsewhere")] if output else []
    assert main(["run", str(config), *extra]) == 0
    commands = hint(capsys.readouterr().out)
    assert [c[0] for c in commands] == ["report", "show", "evaluate"]
    for command in commands:
        assert main(command) == 0, command
        assert ("--output" in command) == output
    out = capsys.readouterr().out
    assert "APP" in out and "report: " in out


def test_a_runs_report_keeps_what_the_run_decided_after_later_runs(tmp_path, market_dir, capsys):
    config = write_config(tmp_path, market_dir, trials=4)
    assert main(["run", str(config), "-q"]) == 0
    first = next((tmp_path / "runs").iterdir()).name
    assert main(["report", str(config), first, "--out", str(tmp_path / "before.html")]) == 0
    assert main(["run", str(config), "-q", "--force", "--trials", "8"]) == 0  # stores other configs
    assert main(["report", str(config), first, "--out", str(tmp_path / "after.html")]) == 0
    before, after = ((tmp_path / f"{n}.html").read_text() for n in ("before", "after"))
    assert before == after


def test_show_and_report_keep_to_their_config(tmp_path, market_dir, capsys):
    """Two configs sharing hyperparams/ and runs/: show lists the config's models only, report latest its runs."""
    one = write_config(tmp_path, market_dir, trials=4)
    other = tmp_path / "other.toml"
    other.write_text(one.read_text().replace("[models.bootstrap]", "[models.second]"))
    assert main(["run", str(one), "-q"]) == 0
    assert main(["run", str(other), "-q"]) == 0  # the newest run
    capsys.readouterr()
    assert main(["show", str(one)]) == 0
    out = capsys.readouterr().out
    assert " second " not in out and "not shown: stored configs of models not in this config (second)" in out
    assert main(["report", str(one), "--out", str(tmp_path / "r.html")]) == 0
    assert (
        "Search trace: APP/bootstrap" in (tmp_path / "r.html").read_text()
        or "APP/bootstrap" in (tmp_path / "r.html").read_text()
    )
    assert "APP/second" not in (tmp_path / "r.html").read_text()
    assert main(["show", str(one), "--model", "second"]) == 2
    assert "--model: model 'second' is not in the config" in capsys.readouterr().err


def test_report_writes_into_the_run_folder_by_default(tmp_path, market_dir, capsys, monkeypatch):
    config = write_config(tmp_path, market_dir, trials=4)
    assert main(["run", str(config), "-q"]) == 0
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(config)]) == 0
    run = next((tmp_path / "runs").iterdir())
    assert (run / "report.html").is_file() and not (tmp_path / "report.html").exists()


def test_the_summary_counts_every_status_and_shows_the_kept_configs_validation(tmp_path, market_dir, capsys):
    extra = '[acceptance]\npolicy = "relative_threshold"\noptions = { threshold = 0.9 }\n'
    config = write_config(tmp_path, market_dir, trials=8, extra=extra)
    assert main(["run", str(config), "--json", "-q"]) == 0
    summary = json.loads(capsys.readouterr().out)
    for job in summary["jobs"]:  # nothing passes a 90% threshold: the defaults stay, and their MAE is shown
        rec = json.loads((tmp_path / "hyperparams" / "bootstrap" / f"{job['symbol']}.json").read_text())
        assert job["status"] == "kept defaults" and job["validation_mae"] == rec["validation"]["pct_return_mae"]
    assert any(job["validation_mae"] != job["challenger_mae"] for job in summary["jobs"])
    assert (
        counts_line(["tuned", "pooled", "pooled", "kept", "failed"], 1)
        == "5 jobs: 3 stored (tuned 1, pooled 2), 1 kept, 1 failed; 1 symbol skipped"
    )


def test_the_line_across_symbols_is_robust_and_right():
    changes = [-0.01, -0.02, -0.005, 0.01, -0.03, 1.18]  # one symbol far off
    line = out_of_sample_line(changes)
    a = Across.of(changes)
    assert a.median == pytest.approx(np.median(changes)) and a.trimmed == pytest.approx(st.trim_mean(changes, 0.1))
    assert a.sem == pytest.approx(st.sem(changes)) and a.sign_p == pytest.approx(st.binomtest(4, 6).pvalue)
    assert f"better on 4 of 6 symbols (sign test p={a.sign_p:.2g}), median change {100 * a.median:+.2f}%" in line
    assert "one symbol: no sem" in out_of_sample_line([0.01]) and "nan" not in out_of_sample_line([0.01])
    warnings = warnings_of(
        [
            {"symbol": f"S{i}", "model": "m", "test_change": c, "test_se": 0.001, "skill": 0.01}
            for i, c in enumerate(changes)
        ]
    )
    assert any("S5/m: worse than the model's defaults on test by +118.00%" in w for w in warnings)
    assert any("disagree: a few symbols drive the mean" in w for w in warnings)


def test_the_sign_test_holds_its_level_by_simulation():
    """Symmetric changes (tuning does nothing): the printed p-value is at most 0.05 in at most 5% of runs."""
    rng = np.random.default_rng(5)
    p = np.array([Across.of(rng.normal(0, 0.01, 41)).sign_p for _ in range(4000)])
    assert np.mean(p <= 0.05) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 4000)
    assert np.mean(p <= 0.05) > 0.02  # and the test is not far too conservative at n = 41


def test_configs_worse_than_the_naive_forecast_are_flagged():
    rows = [{"symbol": "A", "model": "m", "test_change": -0.01, "test_se": 0.01, "skill": -0.02}]
    assert warnings_of(rows) == ["A/m: worse than the naive forecast on test (skill -0.0200)"]


def test_progress_lines_in_a_log_while_a_stage_runs(tmp_path, market_dir):
    stream = io.StringIO()
    config = load_config(write_config(tmp_path, market_dir, trials=8))
    Run(config, console=Console(stream=stream, progress_s=0.0)).execute()
    lines = [line for line in stream.getvalue().splitlines() if line.strip().startswith("progress: ")]
    assert len(lines) >= 4
    assert re.fullmatch(
        r"  progress: 4/16 trials \(25%\), 0 of 2 jobs done, \d+:\d\d elapsed, about \d+:\d\d left", lines[0]
    )
    assert "16/16 trials (100%), 2 of 2 jobs done" in lines[-1]


def test_a_symbol_without_the_history_is_skipped_for_all_and_refused_when_listed(tmp_path, market_dir, capsys):
    data = tmp_path / "data"
    shutil.copytree(market_dir, data)
    config = write_config(tmp_path, data, trials=4)
    long = "lookback = { int = [10, 500] }"
    config.write_text(
        config.read_text()
        .replace('symbols = ["APP", "NU"]', 'symbols = "all"')
        .replace("lookback = { int = [10, 80] }", long)
        .replace("val_window = 30", "val_window = 150")
    )
    assert main(["run", str(config)]) == 0
    out = capsys.readouterr().out
    assert "skipped ARM: " in out and "too little history" in out and "1 symbol skipped" in out
    assert not (tmp_path / "hyperparams" / "bootstrap" / "ARM.json").exists()
    assert main(["run", str(config), "--symbols", "APP", "ARM"]) == 2
    assert "ARM.parquet: too little history" in capsys.readouterr().err


def test_evaluate_prints_its_seeds_dates_and_overlap(tmp_path, market_dir, capsys):
    config = write_config(tmp_path, market_dir, trials=4)
    assert main(["run", str(config), "-q"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(config), "--last", "40", "--seed", "7", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["seeds"]) == 3 and all(r["validation_windows"] == 20 for r in out["results"])
    assert any("20 of the 40 windows were validation windows" in w for w in out["warnings"])
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d", d) for r in out["results"] for d in r["dates"])
    assert main(["evaluate", str(config), "--since", "2026-01-02"]) == 0
    text = capsys.readouterr().out
    assert "seeds: [" in text and "2026-01-02.." in text
    assert main(["evaluate", str(config), "--rows", "0:50"]) == 2
    err = capsys.readouterr().err
    assert "choose later rows (--rows)" in err and "val_window" not in err
    assert main(["evaluate", str(config), "--since", "soon"]) == 2
    assert "--since: expected a date" in capsys.readouterr().err


def test_resume_names_the_changed_key_and_a_finished_run_has_nothing_to_do(tmp_path, market_dir, capsys):
    config = write_config(tmp_path, market_dir, trials=4)
    assert main(["run", str(config), "-q"]) == 0
    capsys.readouterr()
    assert main(["run", str(config), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "nothing to do: every job of run" in out and "2 jobs: " in out  # the summary of the jobs done earlier
    assert main(["run", str(config), "--resume", "--trials", "5"]) == 2
    assert "the config changed since run" in (err := capsys.readouterr().err) and "(flag search.trials)" in err
    config.write_text(config.read_text().replace("batch = 4", "batch = 2"))
    assert main(["run", str(config), "--resume"]) == 2
    assert "(search.batch)" in capsys.readouterr().err
