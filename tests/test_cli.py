"""End to end through the CLI: stored files, decisions, summaries, exit codes; bad input writes nothing;
failures of one job leave the others, the summary and every other stored file intact."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import write_config

from compiled_opt.commands.cli import main
from compiled_opt.store.lock import LOCK_NAME
from compiled_opt.store.stores import read_trials

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "compiled-opt")


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def record(tmp_path: Path, symbol: str, model: str = "bootstrap") -> dict:
    return json.loads((tmp_path / "hyperparams" / model / f"{symbol}.json").read_text())


def test_run_stores_configs_and_then_judges_the_incumbent(tmp_path, market_dir, capsys):
    config = write_config(tmp_path, market_dir)
    assert main(["run", str(config)]) == 0
    out = capsys.readouterr().out
    assert "Eval runs per config: 3 (Monte Carlo standard error 42% lower than one run" in out
    assert "Reference: model defaults" in out and out.count("Reference : MAE") == 2
    run_id = next((tmp_path / "runs").iterdir()).name
    assert f"Run {run_id}" in out and str(tmp_path / "runs" / run_id) in out  # the run id and paths are printed
    rec = record(tmp_path, "APP")
    assert rec["schema_version"] == 3 and rec["status"] in ("tuned", "kept defaults")
    assert len(rec["validation"]["per_run"]) == 3 and rec["validation"]["num_predictions"] == 90
    assert rec["validation"]["skill"] == pytest.approx(
        1 - rec["validation"]["pct_return_mae"] / rec["validation"]["naive_mae"]
    )
    oos = rec["out_of_sample"]
    assert oos["windows"] == 20 and oos["change"] == pytest.approx(oos["config_mae"] / oos["defaults_mae"] - 1)
    assert rec["windows"]["val_window"] == 30 and rec["metadata"]["generation"] == 1
    assert rec["previous"]["kind"] == "defaults" and rec["metadata"]["previous_mae"] is None
    best = record(tmp_path, "APP", "best")
    assert best["model"] == "bootstrap" and best["selected_from"] == {"bootstrap": rec["validation"]["pct_return_mae"]}
    trials = read_trials(tmp_path / "runs" / run_id)
    assert len(trials) == 16 and {t.symbol for t in trials} == {"APP", "NU"}
    assert "test MAE vs defaults: better on" in out and " of 2 symbols (sign test p=" in out and "median change" in out

    # second run: the stored config is the reference, re-scored on the same windows and seeds
    assert main(["run", str(config), "--symbols", "APP", "--trials", "4"]) == 0
    out = capsys.readouterr().out
    assert "Reference: stored config" in out and "Reference : MAE" in out
    summary = out[out.index("Symbol") :]
    assert "APP" in summary and " of 1 symbols" in summary
    kept = "kept " in summary
    assert kept == ("NOT updating config" in out)
    if kept:  # a kept config's test MAE and skill are in the summary all the same
        row = next(line for line in summary.splitlines() if line.startswith("APP"))
        assert row.count("-") < 6 and "%" in row


def test_first_run_is_judged_against_the_model_defaults(tmp_path, market_dir, capsys):
    """A first run passes the policy like any other: rejected, the defaults are stored as kept defaults."""
    extra = '[acceptance]\npolicy = "relative_threshold"\noptions = { threshold = 0.9 }\n'
    config = write_config(tmp_path, market_dir, trials=4, extra=extra)
    assert main(["run", str(config), "--symbols", "APP"]) == 0
    out = capsys.readouterr().out
    assert "NOT updating config: Insufficient improvement" in out and "1 stored (kept defaults 1)" in out
    rec = record(tmp_path, "APP")
    assert rec["status"] == "kept defaults" and rec["config"] == {
        "lookback": 60,
        "vol_scale": 1.0,
        "num_samples": 64,
        "aggregate": "median",
    }
    assert rec["out_of_sample"]["change"] == 0.0  # the defaults against themselves
    assert main(["run", str(config), "--symbols", "APP", "--force"]) == 0
    assert "UPDATING config: forced (--force)" in capsys.readouterr().out
    rec = record(tmp_path, "APP")
    assert rec["status"] == "forced" and rec["decision"]["accepted"] is False and rec["metadata"]["generation"] == 2


@pytest.mark.parametrize(
    "edit, where",
    [
        (lambda c: c.replace('symbols = ["APP", "NU"]', 'symbols = ["APP", "NOPE"]'), "data.symbols"),
        (lambda c: c.replace('backend = "bootstrap"', 'backend = "bootstrp"'), "models.bootstrap.backend"),
        (
            lambda c: c.replace("lookback = { int = [10, 80] }", "lookbak = { int = [10, 80] }"),
            "models.bootstrap.space.lookbak",
        ),
        (lambda c: c.replace("lookback = { int = [10, 80] }", "lookback = { int = [10, 5000] }"), "APP.parquet"),
        (
            lambda c: c.replace("lookback = { int = [10, 80] }", "lookback = { int = [1, 80] }"),
            "models.bootstrap.space.lookback",
        ),
        (lambda c: c.replace('"median"', '"medain"'), "models.bootstrap.space.aggregate"),
        (
            lambda c: c.replace("num_samples = 64 }", "num_samples = 64, lookback = 20 }"),
            "models.bootstrap.fixed.lookback",
        ),
        (lambda c: c + '[acceptance]\npolicy = "paranoid"\n', "acceptance.policy"),
        (lambda c: c.replace("batch = 4", "batch = -1"), "search.batch"),
        (lambda c: c.replace("[search]", '[executor]\nname = "dask"\n[search]'), "executor.name"),
        (lambda c: c.replace("[search]", '[evaluation]\nmetric = "crsp"\n[search]'), "evaluation.metric"),
        (
            lambda c: c.replace("[search]", '[executor]\nname = "ray"\noptions = { gpus_per_worker = 0 }\n[search]'),
            "executor.options.gpus_per_worker",
        ),
        (
            lambda c: c.replace("[search]", "[executor]\noptions = { workers = 2 }\n[search]"),
            "executor.options.workers",
        ),
        (lambda c: c.replace("[search]", '[search]\nexhaustive = "always"'), "search.exhaustive"),
        (
            lambda c: c.replace("[search]", '[search]\noptimizer = "NGopt"'),
            "search.optimizer: unknown optimizer 'NGopt'; did you mean 'NGOpt'",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, market_dir, capsys, edit, where):
    config = write_config(tmp_path, market_dir, trials=4)
    assert main(["run", str(config), "--symbols", "APP"]) == 0
    before, runs_before = snapshot(tmp_path / "hyperparams"), snapshot(tmp_path / "runs")
    capsys.readouterr()
    config.write_text(edit(config.read_text()))
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and where in err
    assert snapshot(tmp_path / "hyperparams") == before and snapshot(tmp_path / "runs") == runs_before


def test_a_horizon_a_model_cannot_serve_is_refused_before_any_work(tmp_path, market_dir, capsys, faulty_plugin):
    models = '[models.bootstrap]\nbackend = "bootstrap"\n[models.short]\nbackend = "one_step"\n'
    config = write_config(tmp_path, market_dir, trials=4, models=models)
    config.write_text(config.read_text().replace("[data]", "[data]\nhorizon = 2"))
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: {config}: data.horizon: backend 'one_step' (model 'short') forecasts at most 1 step(s) ahead, not 2"
    )
    assert not (tmp_path / "hyperparams").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--trials", "0"], "--trials must be at least 1, not 0"),
        (["--eval-runs", "0"], "--eval-runs must be at least 1, not 0"),
        (["--eval-runs", "-1"], "--eval-runs must be at least 1, not -1"),
        (["--symbols", "FOO"], "--symbols: unknown symbol 'FOO'"),
        (["--model", "toto"], "--model: unknown model 'toto'"),
        (["--executor", "dask"], "--executor: unknown executor 'dask'"),
        (["--resume", "nope"], "--resume: no run 'nope'"),
    ],
)
def test_bad_flags_are_named_and_write_nothing(tmp_path, market_dir, capsys, flags, words):
    config = write_config(tmp_path, market_dir, trials=4)
    assert main(["run", str(config), "--symbols", "APP"]) == 0
    before, runs_before = snapshot(tmp_path / "hyperparams"), snapshot(tmp_path / "runs")
    capsys.readouterr()
    assert main(["run", str(config), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and words in err and "compiled_opt.toml" not in err
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
    assert "NU.parquet: data row 100: close: non-positive price -1.0" in err
    assert not (tmp_path / "hyperparams").exists() and not (tmp_path / "runs").exists()


def test_console_script_exit_codes_and_one_line_errors(tmp_path):
    bad = tmp_path / "c.toml"
    bad.write_text("[search\n")
    proc = subprocess.run([CLI, "run", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(f"error: {bad}: malformed TOML") and proc.stderr.strip().count("\n") == 0
    version = subprocess.run([CLI, "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("compiled-opt 0.")
    helptext = subprocess.run([CLI, "--help"], capture_output=True, text=True).stdout
    assert "``" not in helptext and "Exit codes" in helptext


def test_plugins_piped_into_head_ends_quietly():
    proc = subprocess.run(f"{CLI} plugins | head -2", shell=True, capture_output=True, text=True)
    assert proc.stdout.count("\n") == 2 and proc.stderr == ""


# --- failures of one job ---------------------------------------------------------------------------


FAULTY = (
    '[models.bootstrap]\nbackend = "faulty"\noptions = {{ {options} }}\nfixed = {{ num_samples = 32 }}\n'
    'space = {{ lookback = {{ int = [10, 40] }}, aggregate = {{ choice = ["mean", "median"] }} }}\n'
)


def run_twice_with_fault(tmp_path, market_dir, capsys, options: str, *flags: str):
    """A clean run (stores every symbol), then a forced run where ``options`` makes NU fail."""
    config = write_config(tmp_path, market_dir, trials=8, models=FAULTY.format(options=""))
    config.write_text(config.read_text().replace('symbols = ["APP", "NU"]', 'symbols = ["APP", "NU", "ARM"]'))
    assert main(["run", str(config)]) == 0
    before = snapshot(tmp_path / "hyperparams")
    capsys.readouterr()
    config.write_text(config.read_text().replace("options = {  }", f"options = {{ {options} }}"))
    code = main(["run", str(config), "--force", *flags])
    out = capsys.readouterr().out
    return code, out, before


@pytest.mark.parametrize(
    "options, error",
    [
        ('fail_encode = ["NU"]', "all 8 candidates failed; the first: RuntimeError: encode failed for NU"),
        ('fail_sample = ["NU"]', "all 8 candidates failed; the first: FloatingPointError: sample failed for NU"),
    ],
)
def test_a_failing_backend_fails_only_its_symbol(tmp_path, market_dir, capsys, faulty_plugin, options, error):
    code, out, before = run_twice_with_fault(tmp_path, market_dir, capsys, options)
    assert code == 1
    after = snapshot(tmp_path / "hyperparams")
    assert after["bootstrap/NU.json"] == before["bootstrap/NU.json"]  # the failing symbol's file is untouched
    assert after["bootstrap/APP.json"] != before["bootstrap/APP.json"]  # the others were forced anew
    assert after["bootstrap/ARM.json"] != before["bootstrap/ARM.json"]
    failed_lines = [line for line in out.splitlines() if line.startswith("FAILED NU/bootstrap")]
    assert len(failed_lines) == 1 and error in failed_lines[0] and "Traceback (most recent" not in out
    summary = out[out.index("Symbol") :]
    status = {line.split()[0]: line.split()[2] for line in summary.splitlines()[1:4]}
    assert status == {"APP": status["APP"], "NU": "failed", "ARM": status["ARM"]}
    assert {status["APP"], status["ARM"]} <= {"tuned", "forced"} and "1 failed" in summary
    errors = next((tmp_path / "runs").glob("*/errors.log"))
    assert newest_run(tmp_path) == errors.parent and "Traceback" in errors.read_text()


def newest_run(tmp_path: Path) -> Path:
    return sorted((tmp_path / "runs").iterdir())[-1]


def test_debug_prints_the_traceback(tmp_path, market_dir, capsys, faulty_plugin):
    code, out, _ = run_twice_with_fault(tmp_path, market_dir, capsys, 'fail_encode = ["NU"]', "--debug")
    assert code == 1 and "Traceback (most recent call last)" in out and "encode failed for NU" in out


def test_an_optimizer_that_raises_fails_only_its_job(tmp_path, market_dir, capsys, monkeypatch):
    import compiled_opt.tuning.search as search

    original = search._Optimizer.ask
    calls = {"n": 0}

    def ask(self, n):
        calls["n"] += 1
        if calls["n"] == 4:  # the second job's second batch
            raise ValueError("optimizer state corrupted")
        return original(self, n)

    config = write_config(tmp_path, market_dir, trials=8)
    monkeypatch.setattr(search._Optimizer, "ask", ask)
    assert main(["run", str(config)]) == 1
    out = capsys.readouterr().out
    assert "FAILED NU/bootstrap: ValueError: optimizer state corrupted" in out and "1 failed" in out
    assert (tmp_path / "hyperparams" / "bootstrap" / "APP.json").exists()
    assert not (tmp_path / "hyperparams" / "bootstrap" / "NU.json").exists()


def test_an_unwritable_config_file_fails_only_its_symbol(tmp_path, market_dir, capsys):
    config = write_config(tmp_path, market_dir, trials=4)
    (tmp_path / "hyperparams" / "bootstrap" / "NU.json").mkdir(parents=True)  # in the way of the file
    assert main(["run", str(config)]) == 1
    out = capsys.readouterr().out
    assert "FAILED NU/bootstrap: IsADirectoryError" in out and "1 failed" in out
    assert (tmp_path / "hyperparams" / "bootstrap" / "APP.json").is_file()


def test_an_unwritable_model_folder_fails_every_job_but_prints_the_summary(tmp_path, market_dir, capsys):
    config = write_config(tmp_path, market_dir, trials=4)
    (tmp_path / "hyperparams").mkdir()
    (tmp_path / "hyperparams" / "bootstrap").write_text("not a folder")
    assert main(["run", str(config)]) == 1
    out = capsys.readouterr().out
    assert out.count("FAILED") == 2 and "2 failed" in out and "test MAE vs defaults" not in out
    assert (tmp_path / "hyperparams" / "bootstrap").read_text() == "not a folder"


def test_an_output_folder_that_is_a_file_is_refused_before_any_work(tmp_path, market_dir, capsys):
    config = write_config(tmp_path, market_dir, trials=4)
    (tmp_path / "hyperparams").write_text("not a folder")
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "output.directory: cannot lock the output folder" in err
    assert (tmp_path / "hyperparams").read_text() == "not a folder" and not (tmp_path / "runs").exists()


# --- atomic writes ---------------------------------------------------------------------------------


KILL_BETWEEN_WRITE_AND_RENAME = """
import os, sys
from pathlib import Path
import compiled_opt.store.stores as store
from compiled_opt.commands.cli import main

real_replace = os.replace
def replace(src, dst):
    if Path(dst).name == "APP.json":  # the new config is written and synced, not yet renamed: die now
        os._exit(9)
    real_replace(src, dst)
store.os.replace = replace
sys.exit(main(["run", sys.argv[1], "--force"]))
"""


def test_a_run_killed_between_write_and_rename_leaves_the_old_config(tmp_path, market_dir):
    config = write_config(tmp_path, market_dir, trials=4)
    assert main(["run", str(config)]) == 0
    before = snapshot(tmp_path / "hyperparams")
    proc = subprocess.run([sys.executable, "-c", KILL_BETWEEN_WRITE_AND_RENAME, str(config)], capture_output=True)
    assert proc.returncode == 9
    after = snapshot(tmp_path / "hyperparams")
    assert after["bootstrap/APP.json"] == before["bootstrap/APP.json"]
    # The group commit writes NU's file beside APP's, so NU may be old or new, never a part; what the kill
    # leaves behind are hidden temp files of the configs being written and the dead run's lock, never a config.
    assert json.loads(after["bootstrap/NU.json"])["symbol"] == "NU"
    leftovers = [name for name in after if name not in before]
    assert after.pop(LOCK_NAME) and leftovers.pop(leftovers.index(LOCK_NAME))
    assert leftovers and all(
        Path(name).name.startswith((".APP.json.", ".NU.json.")) and name.endswith(".tmp") for name in leftovers
    )
    assert any(Path(name).name.startswith(".APP.json.") for name in leftovers)
    assert main(["run", str(config)]) == 0  # a leftover temp file is never read as a config; the lock is taken over
    assert not (tmp_path / "hyperparams" / LOCK_NAME).exists()


# --- commands --------------------------------------------------------------------------------------


def test_data_import_command(tmp_path, capsys):
    market = ROOT.parent / "shared" / "data" / "market"
    assert main(["data", "import", str(market / "AEM.csv"), str(market / "SUIUSDT.csv"), "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.parquet")) == ["AEM.parquet", "SUIUSDT.parquet"]


def test_data_context_length_fixes_each_models_context(tmp_path, market_dir, capsys):
    models = (
        '[models.bootstrap]\nbackend = "bootstrap"\nfixed = { num_samples = 32 }\n'  # default space searches lookback
    )
    config = write_config(tmp_path, market_dir, trials=4, models=models)
    text = config.read_text().replace('symbols = ["APP", "NU"]', 'symbols = ["APP"]\ncontext_length = 33')
    config.write_text(text)
    assert main(["run", str(config), "--force"]) == 0
    assert record(tmp_path, "APP")["config"]["lookback"] == 33
    searched = '[models.bootstrap]\nbackend = "bootstrap"\nspace = { lookback = { int = [10, 20] } }\n'
    config.write_text(text.replace(models, searched))
    assert main(["run", str(config), "--force"]) == 0
    assert 10 <= record(tmp_path, "APP")["config"]["lookback"] <= 20


def test_output_flag_moves_configs_and_run_logs(tmp_path, market_dir, capsys):
    config = write_config(tmp_path, market_dir, trials=4)
    assert main(["run", str(config), "--symbols", "APP", "--output", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "hyperparams" / "bootstrap" / "APP.json").is_file()
    assert list((tmp_path / "elsewhere" / "runs").glob("*/run.json"))
    assert not (tmp_path / "hyperparams").exists() and not (tmp_path / "runs").exists()


def test_json_summary_and_quiet(tmp_path, market_dir, capsys):
    config = write_config(tmp_path, market_dir, trials=4)
    assert main(["run", str(config), "--json", "-q"]) == 0
    out = capsys.readouterr().out.strip()
    summary = json.loads(out)  # the whole of stdout is the JSON object
    assert {j["symbol"] for j in summary["jobs"]} == {"APP", "NU"}
    assert summary["out_of_sample"].startswith("test MAE vs defaults")
    assert "\x1b[" not in out  # no ANSI codes when the output is not a terminal


def test_evaluate_scores_stored_configs_and_defaults_on_any_rows(tmp_path, market_dir, capsys):
    config = write_config(tmp_path, market_dir, trials=4)
    assert main(["run", str(config)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(config), "--rows=-120:-60", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(r["symbol"], r["model"]) for r in out["results"]] == [("APP", "bootstrap"), ("NU", "bootstrap")]
    for r in out["results"]:
        assert r["oos"]["windows"] == 60 and r["rows"][1] - r["rows"][0] == 59
        assert r["oos"]["change"] == pytest.approx(r["oos"]["config_mae"] / r["oos"]["defaults_mae"] - 1)
    assert out["summary"].startswith("MAE vs defaults: better on")
    assert main(["evaluate", str(config), "--last", "30"]) == 0
    text = capsys.readouterr().out
    assert "APP" in text and "NU" in text and "MAE vs defaults" in text
    assert main(["evaluate", str(config), "--rows", "x"]) == 2
    assert "--rows: expected START:STOP" in capsys.readouterr().err


def test_exact_mode_says_so_instead_of_monte_carlo_runs(tmp_path, market_dir, capsys, faulty_plugin):
    models = (
        '[models.p]\nbackend = "persistence"\nfixed = { exact = true }\nspace = { lookback = { int = [10, 40] } }\n'
    )
    config = write_config(tmp_path, market_dir, trials=4, models=models)
    assert main(["run", str(config), "--symbols", "APP"]) == 0
    out = capsys.readouterr().out
    assert "Eval runs per config: 1 (exact aggregates" in out and "Monte Carlo standard error" not in out
    rec = record(tmp_path, "APP", "p")
    assert rec["validation"]["exact"] and rec["validation"]["skill"] == pytest.approx(0.0, abs=1e-12)


def test_a_change_below_the_evaluations_resolution_is_flagged(tmp_path, market_dir, capsys):
    """Two configs differing only in 1e-9 of vol_scale: 'any_improvement' may accept, but flags it."""
    models = (
        '[models.bootstrap]\nbackend = "bootstrap"\nfixed = { num_samples = 64, lookback = 60, aggregate = "mean" }\n'
        "space = { vol_scale = { float = [0.999999999, 1.000000001] } }\n"
    )
    config = write_config(tmp_path, market_dir, trials=8, models=models)
    assert main(["run", str(config)]) == 0
    out = capsys.readouterr().out
    flagged = 0
    for symbol in ("APP", "NU"):
        rec = record(tmp_path, symbol)
        if rec["status"] == "tuned":
            flagged += 1
            assert rec["decision"]["below_resolution"] is True
            assert "below the evaluation's resolution" in rec["decision"]["reason"]
            assert rec["decision"]["resolution_se"] == max(
                rec["validation"]["sem"], rec["previous"]["rescored_validation"]["sem"]
            )
    assert out.count("(below resolution)") == flagged


def test_the_summary_improvement_has_the_sign_of_the_decision_line(tmp_path, market_dir, capsys):
    config = write_config(tmp_path, market_dir, trials=8)
    assert main(["run", str(config), "--symbols", "APP"]) == 0
    out = capsys.readouterr().out
    improvement = out.split("Improvement: ")[1].split("%")[0]
    row = next(line for line in out.splitlines() if line.startswith("APP "))
    assert f"+{float(improvement):.2f}%" in row or f"{float(improvement):+.2f}%" in row


def test_confirmation_seeds_are_drawn_anew_for_every_run_unless_the_seed_is_fixed(tmp_path, market_dir):
    extra = '[acceptance]\npolicy = "paired"\n'
    config = write_config(tmp_path, market_dir, trials=4, extra=extra)
    seeds = []
    for _ in range(2):
        assert main(["run", str(config), "--symbols", "APP", "--force", "-q"]) == 0
        rec = record(tmp_path, "APP")
        seeds.append((rec["seeds"]["decision"], rec["seeds"]["run_seed"], rec["decision"]["stats"]["seeds"]))
    assert seeds[0][0] != seeds[1][0] and seeds[0][1] != seeds[1][1]
    assert seeds[0][2] == seeds[0][0]  # the policy was confirmed on exactly those recorded seeds
    config.write_text(config.read_text().replace("[search]", "[search]\nseed = 5"))
    fixed = []
    for _ in range(2):
        assert main(["run", str(config), "--symbols", "APP", "--force", "-q"]) == 0
        fixed.append(record(tmp_path, "APP")["seeds"])
    assert fixed[0] == fixed[1] and fixed[0]["run_seed"] == 5


def test_fast_mode_falls_back_on_a_cpu_machine_with_a_notice(tmp_path, market_dir, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = write_config(tmp_path, market_dir, trials=4)
    assert main(["run", str(config), "--symbols", "APP", "--fast"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("fast mode: no CUDA device here, running with the normal CPU settings")
    meta = record(tmp_path, "APP")["metadata"]
    assert (meta["mode"], meta["device"], meta["dtype"], meta["compiled"]) == ("fast", "cpu", "float32", False)


def test_the_console_script_keeps_openmp_threads_from_spinning(monkeypatch):
    """Spinning OpenMP threads cost the default run 4x on 2 loaded cores (benchmarks/bench_threads.py)."""
    from compiled_opt.commands import cli

    for given, expected in ((None, "PASSIVE"), ("ACTIVE", "ACTIVE")):
        if given is None:
            monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
        else:
            monkeypatch.setenv("OMP_WAIT_POLICY", given)
        monkeypatch.setattr(sys, "argv", ["compiled-opt", "--version"])
        with pytest.raises(SystemExit):
            cli.console()
        assert os.environ["OMP_WAIT_POLICY"] == expected


def test_a_run_scored_exhaustively_never_imports_nevergrad(tmp_path, market_dir):
    """Nevergrad (and the SciPy and scikit-learn it imports) is start-up a grid search does not need."""
    models = (
        '[models.bootstrap]\nbackend = "bootstrap"\n'
        'space = { num_samples = { ordered = [32, 64] }, aggregate = { choice = ["mean", "median"] } }\n'
    )
    config = write_config(tmp_path, market_dir, trials=8, models=models)
    script = (
        "import sys\nfrom compiled_opt.commands.cli import main\n"
        f"code = main(['run', {str(config)!r}, '-q'])\n"
        "sys.exit(code or ('nevergrad' in sys.modules and 'nevergrad was imported'))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert read_trials(next((tmp_path / "runs").iterdir()))[0].params  # it ran, exhaustively
