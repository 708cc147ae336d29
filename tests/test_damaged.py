"""Nothing on disk is trusted: damaged stored records, run folders, config paths and imports are one-line
errors naming the file and the key, checked before the first write; nothing reaches best/ that cannot run."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import MARKET, write_config
from test_cli import snapshot

from compiled_opt.commands.cli import main


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory, market_dir) -> Path:
    """A folder after one real run on APP and NU, copied by each test."""
    root = tmp_path_factory.mktemp("damaged")
    assert main(["run", str(write_config(root, market_dir, trials=4)), "-q"]) == 0
    return root


@pytest.fixture
def root(stored_run, tmp_path) -> Path:
    for name in ("hyperparams", "runs"):
        shutil.copytree(stored_run / name, tmp_path / name)
    config = stored_run / "compiled_opt.toml"
    (tmp_path / config.name).write_text(config.read_text().replace(str(stored_run), str(tmp_path)))
    return tmp_path


def edited(path: Path, change) -> None:
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


def put(key: str, value):
    def change(record):
        *parents, last = key.split(".")
        for part in parents:
            record = record[part]
        record[last] = value

    return change


# (what is done to hyperparams/bootstrap/APP.json, the error's key and reason, whether show reads it)
RECORDS = [
    (put("config.lookback", -5), "APP.json: config: lookback: must be at least 2", True),
    (put("config.aggregate", "nope"), "APP.json: config.aggregate: unknown aggregator 'nope'", True),
    (put("config.lookback", [1]), "APP.json: config: int() argument must be", True),
    (put("config.lookbak", 20), "APP.json: config.lookbak: unknown parameter 'lookbak' for backend 'bootstrap'", True),
    (put("config", "x"), "APP.json: config: expected an object, got str 'x'", False),
    (put("validation.pct_return_mae", "abc"), "APP.json: validation.pct_return_mae: expected a number", False),
    (put("validation.pct_return_mae", -1.0), "APP.json: validation.pct_return_mae: must be a finite number", False),
    (put("validation.pct_return_mae", float("nan")), "APP.json: validation.pct_return_mae: must be a finite", False),
    (put("test.per_run", [0.1, -2.0]), "APP.json: test.per_run[1]: must be a finite number of at least 0", False),
    (put("validation.metric", "mse"), "APP.json: validation.metric: unknown metric 'mse'", False),
    (put("validation.num_predictions", -3), "APP.json: validation.num_predictions: must be at least 0", False),
    (put("out_of_sample.se", -0.1), "APP.json: out_of_sample.se: must be at least 0", False),
    (put("metadata.generation", -1), "APP.json: metadata.generation: must be at least 0", False),
    (put("validation", []), "APP.json: validation: expected an object, got list []", False),
    (put("metadata", "x"), "APP.json: metadata: expected an object, got str 'x'", False),
    (put("status", "kept"), "APP.json: status: 'kept' is not the status of a stored config", False),
    (put("symbol", "NU"), "APP.json: symbol: 'NU', but the file is the record of 'APP'", False),
    (put("model", "toto"), "APP.json: model: 'toto', but the file is the record of 'bootstrap'", False),
    (lambda record: record.pop("config"), "APP.json: config: missing", False),
]
RAW = [
    (b"\xff\xfe\x00\x01garbage", "APP.json: not valid JSON (not UTF-8 text"),
    (b"", "APP.json: not valid JSON (Expecting value"),
    (b"[1, 2]", "APP.json: not a compiled-opt file (expected a JSON object)"),
    (b"[" * 100_000, "APP.json: not valid JSON (nested too deeply)"),
]


@pytest.mark.parametrize("command", ["run", "evaluate", "show"])
@pytest.mark.parametrize("change, message, shown", RECORDS + [(raw, message, False) for raw, message in RAW])
def test_a_damaged_record_is_one_line_and_changes_nothing(root, capsys, command, change, message, shown):
    path = root / "hyperparams" / "bootstrap" / "APP.json"
    if isinstance(change, bytes):
        path.write_bytes(change)
    else:
        edited(path, change)
    before = snapshot(root)
    code = main([command, str(root / "compiled_opt.toml"), *(["-q"] if command == "run" else [])])
    err = capsys.readouterr().err
    if command == "show" and shown:  # show runs nothing: a config's values are the backend's to judge
        assert code == 0
        return
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert f"hyperparams/bootstrap/{message}" in err, err
    assert snapshot(root) == before


def test_a_damaged_record_of_a_model_not_in_the_run_stops_it_before_the_first_write(root, capsys):
    other = root / "hyperparams" / "other"
    other.mkdir()
    for symbol in ("APP", "NU"):
        edited(root / "hyperparams" / "bootstrap" / f"{symbol}.json", lambda r: None)
        shutil.copy(root / "hyperparams" / "bootstrap" / f"{symbol}.json", other / f"{symbol}.json")
        edited(other / f"{symbol}.json", put("model", "other"))
    edited(other / "NU.json", put("config.aggregate", "nope"))  # best/ would copy it if it scored best
    before = snapshot(root)
    assert main(["run", str(root / "compiled_opt.toml"), "--force", "-q"]) == 2
    assert "hyperparams/other/NU.json: config.aggregate: unknown aggregator 'nope'" in capsys.readouterr().err
    assert snapshot(root) == before


def test_a_stored_config_needing_more_history_than_the_data_has_is_refused(root, capsys):
    edited(root / "hyperparams" / "bootstrap" / "NU.json", put("config.lookback", 5000))
    assert main(["run", str(root / "compiled_opt.toml")]) == 2
    err = capsys.readouterr().err
    assert "hyperparams/bootstrap/NU.json: config: needs 5001 rows of history before the first validation window" in err


def test_a_damaged_best_file_is_replaced_by_the_run(root, capsys):
    best = root / "hyperparams" / "best" / "APP.json"
    best.write_bytes(b"\x00\xff")
    assert main(["show", str(root / "compiled_opt.toml")]) == 2
    assert "best/APP.json: not valid JSON" in capsys.readouterr().err
    assert main(["run", str(root / "compiled_opt.toml"), "-q"]) == 0
    assert json.loads(best.read_text())["symbol"] == "APP"


def test_a_record_that_would_not_read_back_is_not_stored(root, capsys, monkeypatch):
    """A backend that forecasts NaN: the job fails and its stored file and best/ stay as they were."""
    from compiled_opt.plugins.backends.bootstrap import BootstrapBackend

    real = BootstrapBackend.sample
    monkeypatch.setattr(BootstrapBackend, "sample", lambda self, *a: real(self, *a) * float("nan"))
    before = snapshot(root / "hyperparams")
    assert main(["run", str(root / "compiled_opt.toml"), "--force", "-q"]) == 1
    assert "validation.pct_return_mae: must be a finite number of at least 0, not nan" in capsys.readouterr().out
    assert snapshot(root / "hyperparams") == before


# --- run folders -----------------------------------------------------------------------------------------


def state(root: Path) -> Path:
    return next((root / "runs").iterdir()) / "run.json"


def set_state(key: str, value):
    return lambda root: edited(state(root), put(key, value))


RUN_FOLDERS = [
    (lambda root: state(root).write_bytes(b"\xff\x00"), "run.json: not valid JSON (not UTF-8 text"),
    (lambda root: state(root).write_text("[]"), "run.json: not a compiled-opt file (expected a JSON object)"),
    (lambda root: state(root).write_text(state(root).read_text()[:100]), "run.json: not valid JSON"),
    (set_state("jobs", "x"), "run.json: jobs: expected a list, got str 'x'"),
    (set_state("data", [1]), "run.json: data: expected an object, got list [1]"),
    (set_state("run_seed", -4), "run.json: run_seed: must be at least 0, not -4"),
    (set_state("config", None), "run.json: config: expected an object, got NoneType None"),
    (lambda root: edited(state(root), lambda r: r["jobs"][0].update(attempts=-1)), "run.json: jobs[0].attempts"),
    (
        lambda root: edited(state(root), lambda r: r["jobs"][0].update(progress="lost")),
        "run.json: jobs[0].progress: unknown value 'lost'",
    ),
    (lambda root: next(state(root).parent.glob("outcomes/*.json")).write_bytes(b"\xff"), "outcomes/part-"),
    (
        lambda root: (lambda p: p.write_text(p.read_text()[:300]))(next(state(root).parent.glob("outcomes/*.json"))),
        "outcomes/part-",
    ),
    (
        lambda root: (lambda p: edited(p, lambda r: r["outcomes"][0]["decision"].update(accepted="yes")))(
            next(state(root).parent.glob("outcomes/*.json"))
        ),
        "outcomes[0].decision.accepted: expected true or false",
    ),
]


@pytest.mark.parametrize("command", ["report", "resume"])
@pytest.mark.parametrize("damage, message", RUN_FOLDERS)
def test_a_damaged_run_folder_is_one_line_naming_the_file(root, capsys, command, damage, message):
    damage(root)
    before = snapshot(root)
    config = str(root / "compiled_opt.toml")
    flags = ["report", config, "--out", str(root / "r.html")] if command == "report" else ["run", config, "--resume"]
    assert main(flags) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    if command == "resume":
        assert "cannot be resumed from it (stored configs are unaffected): start a new run" in err
    assert snapshot(root) == before


def test_a_truncated_trial_part_is_left_out_of_the_report_with_a_warning(root, capsys):
    part = next(state(root).parent.glob("trials/*.parquet"))
    part.write_bytes(part.read_bytes()[:200])
    assert main(["report", str(root / "compiled_opt.toml"), "--out", str(root / "r.html")]) == 0
    err = capsys.readouterr().err
    assert f"warning: {part}: a damaged trial-log part (" in err and err.strip().endswith("left out of the report")


# --- config files and imports ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.mkdir(), "is a folder, not a config file"),
        (lambda p: p.write_bytes(b"\xff\xfe[data]"), "not a text file (a config file is UTF-8 TOML)"),
        (lambda p: None, "no such config file"),
    ],
)
def test_a_config_path_that_is_no_config_file_is_one_line(tmp_path, capsys, make, message):
    path = tmp_path / "c.toml"
    make(path)
    for command in (["run"], ["show"], ["report"], ["evaluate"]):
        assert main([*command, str(path)]) == 2
        assert capsys.readouterr().err == f"error: {path}: {message}\n"


def csv_rows(path: Path, count: int) -> Path:
    path.write_text(
        "timestamp,open,high,low,close,volume\n"
        + "".join(f"{1700000000 + 86400 * i},1,2,1,1.5,10\n" for i in range(count))
    )
    return path


@pytest.mark.parametrize("count", [0, 1, 2, 4])
def test_a_csv_too_short_for_any_run_does_not_replace_a_good_file(tmp_path, capsys, count):
    out = tmp_path / "data"
    assert main(["data", "import", str(MARKET / "APP.csv"), "--out", str(out)]) == 0
    good = (out / "APP.parquet").read_bytes()
    capsys.readouterr()
    assert main(["data", "import", str(csv_rows(tmp_path / "APP.csv", count)), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'APP.csv'}: {count} data rows; a run needs at least 5"
        " (2 validation and 2 test windows, and history before them)\n"
    )
    assert (out / "APP.parquet").read_bytes() == good


def test_import_out_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "out").write_text("a file")
    assert main(["data", "import", str(MARKET / "APP.csv"), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"error: --out: {tmp_path / 'out'} is a file, not a folder\n"


def test_imported_files_get_the_umasks_mode(tmp_path):
    old = os.umask(0o022)
    try:
        assert main(["data", "import", str(MARKET / "APP.csv"), "--out", str(tmp_path)]) == 0
    finally:
        os.umask(old)
    assert (tmp_path / "APP.parquet").stat().st_mode & 0o777 == 0o644  # not mkstemp's owner-only 0600


def test_a_full_disk_during_import_changes_nothing(tmp_path, capsys, monkeypatch):
    """The third file's write fails with ENOSPC: the two before it are not renamed into place either."""
    out = tmp_path / "data"
    assert main(["data", "import", str(MARKET / "APP.csv"), "--out", str(out)]) == 0
    before = snapshot(out)
    real, calls = pq.write_table, []

    def write_table(table, where, *args, **kwargs):
        calls.append(where)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(where))
        real(table, where, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", write_table)
    files = [MARKET / f"{s}.csv" for s in ("APP", "NU", "ARM")]
    assert main(["data", "import", *map(str, files), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out: cannot write ") and "(No space left on device); nothing was imported" in err
    assert snapshot(out) == before  # no new file, no temp file, the old APP untouched


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_tmpfs_during_import_changes_nothing(tmp_path, capsys):
    out = tmp_path / "small"
    out.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(out)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        assert main(["data", "import", str(MARKET / "APP.csv"), "--out", str(out)]) == 0
        before = snapshot(out)
        files = [MARKET / f"{s}.csv" for s in ("APP", "NU", "ARM", "AEM", "ALNY")]
        assert main(["data", "import", *map(str, files), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --out: cannot write ") and err.count("\n") == 1
        assert "No space left on device" in err and err.endswith("; nothing was imported\n")
        assert snapshot(out) == before
    finally:
        subprocess.run(["umount", str(out)], check=True)
