"""`compiled-opt show`: the stored configs as a table, plain text in a pipe, JSON, the best/ choice marked."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from conftest import write_config

from compiled_opt.commands.cli import main
from compiled_opt.commands.show import show
from compiled_opt.store.stores import ConfigStore

TWO_MODELS = """
[models.bootstrap]
backend = "bootstrap"
fixed = { num_samples = 64 }
space.lookback = { int = [10, 80] }
space.vol_scale = { float = [0.5, 1.5] }
space.aggregate = { choice = ["mean", "median"] }

[models.median]
backend = "bootstrap"
fixed = { num_samples = 32, aggregate = "median" }
space = { lookback = { int = [10, 80] } }
"""


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory, market_dir: Path) -> Path:
    """A config whose store holds two models for APP and NU, after one real run."""
    config = write_config(tmp_path_factory.mktemp("show"), market_dir, trials=4, models=TWO_MODELS)
    assert main(["run", str(config), "-q"]) == 0
    return config


def records(config: Path) -> dict[tuple[str, str], dict]:
    root = config.parent / "hyperparams"
    return {(p.stem, p.parent.name): json.loads(p.read_text()) for p in root.glob("*/*.json")}


def test_json_round_trips_every_stored_record_and_marks_best(stored, capsys):
    capsys.readouterr()
    assert main(["show", str(stored), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)  # one JSON object, nothing else printed
    files = records(stored)
    rows = {(r["symbol"], r["model"]): r for r in out["configs"]}
    assert (
        set(rows)
        == {k for k in files if k[1] != "best"}
        == {(s, m) for s in ("APP", "NU") for m in ("bootstrap", "median")}
    )
    for (symbol, model), row in rows.items():
        record = files[(symbol, model)]
        assert row["config"] == record["config"] and row["status"] == record["status"]
        assert row["validation_mae"] == record["validation"]["pct_return_mae"]
        assert row["test_mae"] == record["test"]["pct_return_mae"]
        assert row["test_skill"] == record["test"]["skill"]
        assert row["test_vs_defaults"] == record["out_of_sample"]["change"]
        assert row["created_at"] == record["metadata"]["created_at"]
        assert row["policy"] == record["decision"]["policy"] == "any_improvement"
        assert row["best"] is (files[(symbol, "best")]["model"] == model)
    for symbol in ("APP", "NU"):
        assert sum(rows[(symbol, m)]["best"] for m in ("bootstrap", "median")) == 1


def test_plain_table_has_one_line_per_config_and_no_ansi(stored, capsys):
    capsys.readouterr()
    assert main(["show", str(stored), "--model", "median"]) == 0
    out = capsys.readouterr().out
    assert "\x1b[" not in out
    files = records(stored)
    lines = {
        line.split()[0]: line for line in out.splitlines() if line.split()[:2] in (["APP", "median"], ["NU", "median"])
    }
    assert set(lines) == {"APP", "NU"}
    for symbol, line in lines.items():
        record = files[(symbol, "median")]
        cells = line.split()
        assert cells[2] == ("*" if files[(symbol, "best")]["model"] == "median" else record["status"].split()[0])
        assert f"{record['validation']['pct_return_mae']:.6g}" in cells
        assert f"{record['test']['pct_return_mae']:.6g}" in cells
        assert f"lookback={record['config']['lookback']}" in cells and "aggregate=median" in cells
        assert "any_improvement" in cells
    assert "bootstrap" not in out.split("\n", 2)[2].split("*:")[0]  # --model left the other model out


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_narrow_terminal_wraps_the_config_instead_of_cutting_cells(stored, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    stream = Terminal()
    show(ConfigStore(stored.parent / "hyperparams"), ["bootstrap"], None, ["APP"], as_json=False, stream=stream)
    out = stream.getvalue()
    assert "\x1b[" in out and "…" not in out  # rich styles it, and no cell is truncated
    for model, record in ((m, r) for (s, m), r in records(stored).items() if s == "APP" and m != "best"):
        for key in record["config"]:
            assert f"{key}=" in out
        assert model in out


def test_a_schema_1_record_shows_dashes_for_what_it_lacks(tmp_path, stored):
    store = tmp_path / "hyperparams"
    v2 = records(stored)[("APP", "bootstrap")]
    v1 = {k: v for k, v in v2.items() if k not in ("schema_version", "status", "out_of_sample", "search")}
    for section in ("validation", "test"):
        v1[section] = {k: v for k, v in v1[section].items() if k not in ("naive_mae", "skill")}
    (store / "bootstrap").mkdir(parents=True)
    (store / "bootstrap" / "APP.json").write_text(json.dumps(v1))
    stream = io.StringIO()
    show(ConfigStore(store), ["bootstrap"], None, None, as_json=False, stream=stream)
    row = next(line for line in stream.getvalue().splitlines() if line.startswith("APP"))
    cells = row.split()
    # symbol model status val test skill change ... (no best/ folder: nothing marked)
    assert cells[:3] == ["APP", "bootstrap", "tuned"] and cells[5:7] == ["-", "-"]
    assert f"{v1['validation']['pct_return_mae']:.6g}" == cells[3]


def test_unknown_model_or_symbol_names_the_flag(stored, capsys):
    assert main(["show", str(stored), "--model", "medain"]) == 2
    assert "--model: model 'medain' is not in the config; did you mean 'median'" in capsys.readouterr().err
    assert main(["show", str(stored), "--symbols", "APX"]) == 2
    err = capsys.readouterr().err
    assert "--symbols" in err and "did you mean 'APP'" in err


def test_an_empty_store_says_so(tmp_path, market_dir, capsys):
    config = write_config(tmp_path, market_dir)
    assert main(["show", str(config)]) == 0
    assert "no stored configs in" in capsys.readouterr().out
    assert main(["show", str(config), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["configs"] == []
