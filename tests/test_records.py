"""The on-disk formats: versioned, refused when unknown, readable by the seed system's own store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_config

from compiled_opt.commands.cli import main
from compiled_opt.core.errors import UsageError
from compiled_opt.store.records import SCHEMA_VERSION, JobId, Progress, RunState, StoredRecord
from compiled_opt.store.stores import ConfigStore, read_trials


def seed_store_read(root: Path, model: str, symbol: str) -> dict:
    """What the seed system's store does with a per-model file and with best/ (its documented access)."""
    payload = json.loads((root / model / f"{symbol}.json").read_text())
    validation = payload["validation"]
    out = {
        "config": payload["config"],
        "validation": validation,
        "test": payload.get("test", validation),
        "metadata": payload.get("metadata", {}),
    }
    best = json.loads((root / "best" / f"{symbol}.json").read_text())
    out["best"] = (best["model"], best["config"])
    return out


@pytest.fixture(scope="module")
def stored_root(tmp_path_factory, market_dir):
    tmp = tmp_path_factory.mktemp("records")
    assert main(["run", str(write_config(tmp, market_dir, trials=4)), "-q"]) == 0
    return tmp


def test_the_seed_systems_store_reads_what_we_write(stored_root):
    seen = seed_store_read(stored_root / "hyperparams", "bootstrap", "APP")
    assert set(seen["config"]) == {"lookback", "vol_scale", "num_samples", "aggregate"}
    for split in ("validation", "test"):
        metrics = seen[split]
        assert {"price_mae", "pct_return_mae", "latency_s", "num_predictions"} <= set(metrics)
        assert 0 < metrics["pct_return_mae"] < 1 and metrics["price_mae"] > 0 and metrics["num_predictions"] > 0
    assert seen["test"]["num_predictions"] == 60 and seen["validation"]["num_predictions"] == 90
    assert seen["metadata"]["previous_mae"] is None and "compiled" in seen["metadata"]
    assert seen["best"] == ("bootstrap", seen["config"])


def test_records_round_trip_through_json(stored_root):
    store = ConfigStore(stored_root / "hyperparams")
    record = store.load("bootstrap", "NU")
    payload = json.loads(json.dumps(record.to_json()))
    assert payload["schema_version"] == SCHEMA_VERSION
    assert StoredRecord.from_json(payload, "x") == record
    run = next((stored_root / "runs").iterdir())
    state = RunState.from_json(json.loads((run / "run.json").read_text()), "run.json")
    assert set(state.jobs) == {JobId("bootstrap", "APP"), JobId("bootstrap", "NU")}
    assert state.jobs[JobId("bootstrap", "NU")].progress is Progress.DONE
    assert RunState.from_json(json.loads(json.dumps(state.to_json())), "x") == state
    assert {r.schema_version for r in read_trials(run)} == {SCHEMA_VERSION}


@pytest.mark.parametrize("version", [SCHEMA_VERSION + 1, "2", 0])
def test_an_unknown_or_newer_version_is_refused(stored_root, version, capsys):
    path = stored_root / "hyperparams" / "bootstrap" / "APP.json"
    payload = json.loads(path.read_text())
    with pytest.raises(UsageError, match=rf"^x.json: schema_version {version!r} is not one this compiled-opt reads"):
        StoredRecord.from_json({**payload, "schema_version": version}, "x.json")


def test_a_newer_stored_file_stops_the_run_before_any_work(tmp_path, market_dir, capsys):
    config = write_config(tmp_path, market_dir, trials=4)
    assert main(["run", str(config), "-q"]) == 0
    path = tmp_path / "hyperparams" / "bootstrap" / "APP.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "schema_version": 99}))
    runs = sorted((tmp_path / "runs").iterdir())
    capsys.readouterr()
    assert main(["run", str(config)]) == 2
    assert f"error: {path}: schema_version 99" in capsys.readouterr().err
    assert sorted((tmp_path / "runs").iterdir()) == runs


def test_a_version_1_record_is_read(stored_root):
    """compiled-opt 0.1 wrote no schema_version, status or out-of-sample: still a usable incumbent."""
    payload = json.loads((stored_root / "hyperparams" / "bootstrap" / "APP.json").read_text())
    legacy = {k: v for k, v in payload.items() if k not in ("schema_version", "status", "out_of_sample", "search")}
    record = StoredRecord.from_json(legacy, "old.json")
    assert record.schema_version == 1 and record.status == "tuned" and record.out_of_sample is None
    assert record.config == payload["config"]


SEED_SYSTEM_RECORD = {  # the seed system's own per-model file (see DESIGN.md: output per symbol)
    "symbol": "APP",
    "model": "bootstrap",
    "config": {"lookback": 33, "vol_scale": 1.1, "num_samples": 64, "aggregate": "mean"},
    "validation": {"price_mae": 1.2, "pct_return_mae": 0.021, "latency_s": 3.5, "num_predictions": 30},
    "test": {"price_mae": 1.4, "pct_return_mae": 0.024, "latency_s": 3.1, "num_predictions": 20},
    "windows": {"val_window": 30, "test_window": 20, "forecast_horizon": 1},
    "metadata": {"compiled": True, "compile_mode": "max-autotune", "previous_mae": 0.022},
}


def test_a_seed_system_record_is_read_and_serves_as_the_incumbent(tmp_path, market_dir, capsys):
    record = StoredRecord.from_json(SEED_SYSTEM_RECORD, "seed.json")
    assert record.schema_version == 1 and record.backend == "bootstrap" and record.validation.value == 0.021
    assert record.validation.sem != record.validation.sem  # unknown: NaN, not a made-up 0
    config = write_config(tmp_path, market_dir, trials=4)
    path = tmp_path / "hyperparams" / "bootstrap" / "APP.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(SEED_SYSTEM_RECORD))
    assert main(["run", str(config), "--symbols", "APP"]) == 0
    assert "Reference: stored config" in capsys.readouterr().out


def test_stored_files_are_readable_by_other_users(stored_root):
    """Trading code often runs as another user: files get the umask's mode, not mkstemp's 0600."""
    for path in (stored_root / "hyperparams").rglob("*.json"):
        assert path.stat().st_mode & 0o044 == 0o044, path


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda p: p["validation"]["per_run"].__setitem__(1, "abc"),
            "validation.per_run[1]: expected a number, got str 'abc'",
        ),
        (lambda p: p.__setitem__("status", "nope"), "status: unknown value 'nope'; allowed: tuned, pooled"),
        (lambda p: p.__setitem__("status", "kept"), "status: 'kept' is not the status of a stored config"),
        (lambda p: p.__setitem__("config", "x"), "config: expected an object, got str 'x'"),
        (
            lambda p: p["metadata"].__setitem__("generation", "2"),
            "metadata.generation: expected an integer, got str '2'",
        ),
        (lambda p: p["decision"].pop("reason"), "decision.reason: missing"),
        (lambda p: p.__setitem__("test", []), "test: expected an object, got list []"),
        (lambda p: p["windows"].__setitem__("test_rows", [1]), "windows.test_rows: expected 2 values, got 1"),
    ],
)
def test_a_damaged_record_is_one_line_naming_the_key(stored_root, change, message):
    payload = json.loads((stored_root / "hyperparams" / "bootstrap" / "APP.json").read_text())
    change(payload)
    with pytest.raises(UsageError) as e:
        StoredRecord.from_json(payload, "x.json")
    assert str(e.value) == f"x.json: {message}" or str(e.value).startswith(f"x.json: {message}")
    assert "\n" not in str(e.value)


def test_a_version_2_record_is_read(stored_root):
    """compiled-opt 0.2 kept the resolution in the policy's stats and a few values twice."""
    payload = json.loads((stored_root / "hyperparams" / "bootstrap" / "APP.json").read_text())
    decision = payload["decision"]
    v2 = {
        **payload,
        "schema_version": 2,
        "eval_runs": 3,
        "decision": {
            **{k: v for k, v in decision.items() if k != "resolution_se"},
            "forced": False,
            "stats": {
                **decision["stats"],
                "resolution_se": decision["resolution_se"],
                "below_resolution": decision["below_resolution"],
            },
        },
        "previous": {**payload["previous"], "stored_validation_mae": None},
    }
    record = StoredRecord.from_json(v2, "v2.json")
    current = StoredRecord.from_json(payload, "v3.json")
    assert record.decision == current.decision and record.previous == current.previous
    assert record.schema_version == 2 and record.config == current.config
