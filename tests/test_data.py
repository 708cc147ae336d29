"""Data: CSV import, Parquet checks, splits, leakage, and the synthetic sample data."""

from __future__ import annotations

import csv
import runpy
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from scipy import stats

from compiled_opt.commands.importer import import_csv, import_csvs
from compiled_opt.core.backend import FEATURES
from compiled_opt.core.data import Series, list_symbols, read_series, splits, windows
from compiled_opt.core.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
MARKET = ROOT.parent / "shared" / "data" / "market"
CLOSE = FEATURES.index("close")


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def column(rows: list[dict[str, str]], name: str) -> np.ndarray:
    return np.array([float(r[name]) for r in rows])


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


def old_layout_csv(path: Path, rows: int = 5, with_amount: bool = True) -> Path:
    header = "timestamp,open,high,low,close,volume" + (",amount" if with_amount else "")
    lines = [header]
    for i in range(rows):
        close = 10.0 + i
        lines.append(f"2024-03-{i + 1:02d}T00:00:00Z,{close - 0.5},{close + 1},{close - 1},{close},{100 + i}")
        lines[-1] += f",{close * (100 + i) + 0.25}" if with_amount else ""
    return write_csv(path, "\n".join(lines))


# --- import ---------------------------------------------------------------------------------------


def test_import_yahoo_round_trips_the_csv(tmp_path: Path) -> None:
    out = import_csv(MARKET / "AEM.csv", tmp_path)
    assert out == tmp_path / "AEM.parquet"
    assert pq.read_table(out).column_names == ["timestamp", "open", "high", "low", "close", "volume"]
    series = read_series(out)
    rows = csv_rows(MARKET / "AEM.csv")
    assert len(series) == len(rows)
    for name in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(series.values[:, FEATURES.index(name)].numpy(), column(rows, name))
    midnight = [datetime.combine(date.fromisoformat(r["Date"]), datetime.min.time(), UTC).timestamp() for r in rows]
    np.testing.assert_array_equal(series.time.numpy(), np.array(midnight, dtype=np.int64))
    amount = series.values[:, FEATURES.index("amount")].numpy()
    np.testing.assert_allclose(amount, column(rows, "close") * column(rows, "volume"))


def test_import_binance_names_the_file_after_the_symbol_column(tmp_path: Path) -> None:
    renamed = tmp_path / "sui_daily.csv"
    renamed.write_bytes((MARKET / "SUIUSDT.csv").read_bytes())
    out = import_csv(renamed, tmp_path / "out")
    assert out.name == "SUIUSDT.parquet"
    rows = csv_rows(MARKET / "SUIUSDT.csv")
    series = read_series(out)
    for name in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(series.values[:, FEATURES.index(name)].numpy(), column(rows, name))
    amount = series.values[:, FEATURES.index("amount")].numpy()
    np.testing.assert_allclose(amount, column(rows, "vwap") * column(rows, "volume"), rtol=1e-12)
    times = [datetime.fromisoformat(r["timestamp"]).timestamp() for r in rows]
    np.testing.assert_array_equal(series.time.numpy(), np.array(times, dtype=np.int64))


def test_import_old_layout_keeps_amount_and_upper_cases_the_stem(tmp_path: Path) -> None:
    out = import_csv(old_layout_csv(tmp_path / "abc.csv"), tmp_path)
    assert out.name == "ABC.parquet"
    series = read_series(out)
    assert series.values[:, CLOSE].tolist() == [10.0, 11.0, 12.0, 13.0, 14.0]
    expected = [close * volume + 0.25 for close, volume in zip(range(10, 15), range(100, 105), strict=True)]
    assert series.values[:, FEATURES.index("amount")].tolist() == expected
    assert series.time[0].item() == int(datetime(2024, 3, 1, tzinfo=UTC).timestamp())
    assert torch.all(series.time.diff() == 86400)
    assert pq.read_table(out).schema.field("timestamp").type.tz == "UTC"


def test_import_matches_columns_in_any_order_and_case(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "xyz.csv",
        """
VOLUME,Low,DATE,High,Close,Open
1000,9,2024-01-02,12,11,10
2000,10,2024-01-03,13,12,11
2000,10,2024-01-04,13,12,11
2000,10,2024-01-05,13,12,11
2000,10,2024-01-06,13,12,11
""",
    )
    series = read_series(import_csv(path, tmp_path, symbol="mine"))
    assert series.symbol == "MINE"
    assert series.values[:2, :5].tolist() == [[10, 12, 9, 11, 1000], [11, 13, 10, 12, 2000]]


def test_import_accepts_epoch_seconds_and_mixed_offsets(tmp_path: Path) -> None:
    later = "".join(f"\n{1700086400 + 86400 * i},1,2,1,1,5" for i in range(1, 4))  # a file needs 5 rows
    epoch = write_csv(
        tmp_path / "e.csv", "timestamp,open,high,low,close,volume\n1700000000,1,2,1,1,5\n1700086400,1,2,1,1,5" + later
    )
    assert read_series(import_csv(epoch, tmp_path)).time.tolist()[:2] == [1700000000, 1700086400]
    mixed = write_csv(
        tmp_path / "m.csv",
        "timestamp,open,high,low,close,volume\n2024-01-01 00:00:00,1,2,1,1,5\n2024-01-02T01:00:00+01:00,1,2,1,1,5"
        + "".join(f"\n2024-01-0{d}T00:00:00Z,1,2,1,1,5" for d in (3, 4, 5)),
    )
    day = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())
    assert read_series(import_csv(mixed, tmp_path)).time.tolist()[:2] == [day, day + 86400]


@pytest.mark.parametrize(
    ("header", "missing"),
    [("Date,close,high,open,volume", "low"), ("time,open,high,low,close,volume", "timestamp")],
)
def test_import_names_the_missing_column(tmp_path: Path, header: str, missing: str) -> None:
    path = write_csv(tmp_path / "bad.csv", f"{header}\n" + ",".join(["1"] * len(header.split(","))))
    with pytest.raises(UsageError, match=f"missing column.*{missing}") as err:
        import_csv(path, tmp_path / "out")
    assert str(path) in str(err.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("field", "cell", "message"),
    [
        (4, "-3", "line 4: close: non-positive price -3.0"),  # line 4 in an editor: the header is line 1
        (4, "", "line 4: close: value is NaN"),
        (4, "abc", "line 4: close: not a number: 'abc'"),
        (2, "9.0", r"line 4: high: high below low \(open 11.5, high 9, low 11, close 12\)"),
        (4, "13.5", "line 4: close: close outside the bar's low..high"),
        (0, "2024-13-45", "line 4: timestamp: not a date"),
    ],
)
def test_import_rejects_bad_data_and_writes_nothing(tmp_path: Path, field: int, cell: str, message: str) -> None:
    path = old_layout_csv(tmp_path / "abc.csv", with_amount=False)
    lines = path.read_text().splitlines()
    fields = lines[3].split(",")  # data row 2
    fields[field] = cell
    lines[3] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "ABC.parquet").write_bytes(b"previous good file")
    with pytest.raises(UsageError, match=message) as err:
        import_csv(path, out)
    assert str(err.value).startswith(str(path))
    assert sorted(p.name for p in out.iterdir()) == ["ABC.parquet"]
    assert (out / "ABC.parquet").read_bytes() == b"previous good file"


def test_import_names_the_line_of_a_short_row(tmp_path: Path) -> None:
    path = old_layout_csv(tmp_path / "abc.csv", with_amount=False)
    lines = path.read_text().splitlines()
    lines[4] = ",".join(lines[4].split(",")[:4])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UsageError, match=r"abc.csv: line 5: 4 fields, the header has 6") as err:
        import_csv(path, tmp_path / "out")
    assert "\n" not in str(err.value)


def test_import_rejects_unsorted_rows(tmp_path: Path) -> None:
    path = old_layout_csv(tmp_path / "abc.csv")
    header, *rows = path.read_text().splitlines()
    rows[1], rows[2] = rows[2], rows[1]
    path.write_text("\n".join([header, *rows]) + "\n")
    with pytest.raises(UsageError, match=r"line 4: timestamp: unsorted"):
        import_csv(path, tmp_path / "out")
    assert list_symbols(tmp_path / "out") == []


def test_import_of_several_files_is_all_or_nothing(tmp_path: Path) -> None:
    good = MARKET / "AEM.csv"
    bad = old_layout_csv(tmp_path / "zzz.csv")
    lines = bad.read_text().splitlines()
    lines[3] = lines[3].replace(",12.0,", ",-12.0,")  # line 4 in an editor: close of the third data row
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(UsageError, match=r"zzz.csv: line 4: close: non-positive price -12.0"):
        import_csvs([good, bad], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # AEM, though good and first, was not written
    copy = tmp_path / "again" / "AEM.csv"
    copy.parent.mkdir()
    copy.write_bytes(good.read_bytes())
    with pytest.raises(UsageError, match="symbol AEM again"):
        import_csvs([good, copy], tmp_path / "out")
    assert [p.name for p in import_csvs([good], tmp_path / "out")] == ["AEM.parquet"]


def test_import_keeps_a_numeric_symbol_as_written(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "hk.csv",
        "timestamp,open,high,low,close,volume,vwap,symbol"
        + "".join(f"\n2024-01-0{d}T00:00:00Z,1,2,1,1,5,1,0700" for d in range(1, 6)),
    )
    assert import_csv(path, tmp_path).name == "0700.parquet"


def test_import_rejects_several_symbols_in_one_file(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "two.csv",
        "timestamp,open,high,low,close,volume,vwap,symbol\n"
        "2024-01-01T00:00:00Z,1,2,1,1,5,1,AAA\n2024-01-02T00:00:00Z,1,2,1,1,5,1,BBB",
    )
    with pytest.raises(UsageError, match="exactly one symbol"):
        import_csv(path, tmp_path)


# --- read_series checks -----------------------------------------------------------------------------


def parquet(path: Path, **changes: list) -> Path:
    days = [datetime(2024, 1, d, tzinfo=UTC) for d in range(1, 6)]
    columns = {
        "timestamp": days,
        "open": [1.0] * 5,
        "high": [2.0] * 5,
        "low": [0.5] * 5,
        "close": [1.5] * 5,
        "volume": [10.0] * 5,
    }
    columns.update(changes)
    columns = {k: v for k, v in columns.items() if v is not None}
    pq.write_table(pa.table(columns), path)
    return path


@pytest.mark.parametrize(
    ("changes", "where", "reason"),
    [
        ({"close": [1.5, 1.5, float("nan"), 1.5, 1.5]}, "data row 2: close", "NaN"),
        ({"low": [0.5, 0.5, 0.5, 0.0, 0.5]}, "data row 3: low", "non-positive price"),
        ({"open": [1.0, -1.0, 1.0, 1.0, 1.0]}, "data row 1: open", "non-positive price"),
        ({"volume": [10.0, 10.0, 10.0, 10.0, -1.0]}, "data row 4: volume", "negative"),
        ({"high": [2.0, 2.0, 0.4, 2.0, 2.0]}, "data row 2: high", "high below low"),
        ({"open": [1.0, 1.0, 1.0, 2.5, 1.0]}, "data row 3: open", "open outside the bar's low..high"),
        (
            {"timestamp": [datetime(2024, 1, d, tzinfo=UTC) for d in (1, 2, 4, 3, 5)]},
            "data row 3: timestamp",
            "unsorted",
        ),
        (
            {"timestamp": [datetime(2024, 1, d, tzinfo=UTC) for d in (1, 2, 2, 3, 4)]},
            "data row 2: timestamp",
            "duplicate",
        ),
        (
            {"timestamp": [datetime(2024, 1, 1, tzinfo=UTC), None, *[datetime(2024, 1, 9, tzinfo=UTC)] * 3]},
            "data row 1: timestamp",
            "missing timestamp",
        ),
    ],
)
def test_read_series_names_file_row_and_reason(tmp_path: Path, changes: dict, where: str, reason: str) -> None:
    path = parquet(tmp_path / "BAD.parquet", **changes)
    with pytest.raises(UsageError, match=reason) as err:
        read_series(path)
    assert err.value.where == f"{path}: {where}"


def test_read_series_names_missing_columns(tmp_path: Path) -> None:
    path = parquet(tmp_path / "BAD.parquet", high=None, volume=None)
    with pytest.raises(UsageError, match="missing column.*high, volume") as err:
        read_series(path)
    assert err.value.where == str(path)


def test_read_series_rejects_text_prices_without_a_traceback(tmp_path: Path) -> None:
    path = parquet(tmp_path / "BAD.parquet", close=["1.5", "1.5", "x", "1.5", "1.5"])
    with pytest.raises(UsageError, match="not a numeric column") as err:
        read_series(path)
    assert err.value.where == f"{path}: close"


def test_too_few_rows_for_context_and_windows(tmp_path: Path) -> None:
    series = read_series(parquet(tmp_path / "FEW.parquet"))
    rows = splits(len(series), val_window=2, test_window=1, horizon=1).validation
    windows(series, rows, context=2, horizon=1)  # 2 + 2 + 1 = 5 rows: just enough
    with pytest.raises(UsageError, match="too little history: 5 rows.*need 6") as err:
        windows(series, rows, context=3, horizon=1)
    assert err.value.where == str(series.path)


# --- splits and windows -----------------------------------------------------------------------------


def synthetic_series(length: int = 200) -> Series:
    close = torch.linspace(100.0, 150.0, length, dtype=torch.float64)
    values = torch.stack([close, close + 1, close - 1, close, torch.full_like(close, 5.0), close * 5.0], dim=1)
    return Series("TEST", Path("TEST.parquet"), torch.arange(length, dtype=torch.int64) * 86400, values)


def test_splits_one_step_are_the_last_20_and_the_30_before() -> None:
    split = splits(200, val_window=30, test_window=20, horizon=1)
    assert split.validation == range(150, 180)
    assert split.test == range(180, 200)


@pytest.mark.parametrize("horizon", [2, 5])
def test_splits_keep_multi_step_targets_inside_the_data(horizon: int) -> None:
    series = synthetic_series()
    split = splits(len(series), val_window=30, test_window=20, horizon=horizon)
    assert len(split.validation) == 30 and len(split.test) == 20
    # the last validation window's targets (rows v .. v + horizon - 1) end just before the first test row
    assert split.validation[-1] + horizon - 1 == split.test.start - 1
    assert split.test[-1] + horizon - 1 == len(series) - 1
    batch = windows(series, split.test, context=16, horizon=horizon)
    assert torch.equal(batch.target[-1], series.values[-horizon:, CLOSE])


def test_windows_hold_the_rows_before_their_target() -> None:
    series = synthetic_series()
    batch = windows(series, range(150, 180), context=16, horizon=1)
    assert batch.context.shape == (30, 16, len(FEATURES))
    assert torch.equal(batch.target_rows, torch.arange(150, 180))
    assert torch.equal(batch.context[0], series.values[134:150])
    assert torch.equal(batch.target[:, 0], series.values[150:180, CLOSE])
    assert torch.all(batch.context_time.amax(dim=1) < batch.target_time[:, 0])
    assert torch.equal(batch.last_close, series.values[149:179, CLOSE])


def test_a_window_never_sees_its_own_target() -> None:
    series = synthetic_series()
    rows, i = range(150, 180), 160
    before = windows(series, rows, context=32, horizon=1)
    values = series.values.clone()
    values[i, CLOSE] *= 1.5
    after = windows(Series(series.symbol, series.path, series.time, values), rows, context=32, horizon=1)
    k = rows.index(i)
    assert torch.equal(after.context[k], before.context[k])
    assert after.target[k, 0] != before.target[k, 0]
    assert not torch.equal(after.context[k + 1], before.context[k + 1])
    assert after.context[k + 1, -1, CLOSE] == values[i, CLOSE]


# --- synthetic sample data --------------------------------------------------------------------------


SAMPLE = ("SYNTH_A", "SYNTH_B", "SYNTH_C")


def test_sample_data_is_shipped_and_named_synthetic() -> None:
    assert list_symbols(ROOT / "data") == list(SAMPLE)
    assert "synthetic" in (ROOT / "data" / "README.md").read_text().lower()


@pytest.mark.parametrize("symbol", SAMPLE)
def test_sample_data_has_fat_tails_and_volatility_clustering(symbol: str) -> None:
    series = read_series(ROOT / "data" / f"{symbol}.parquet")
    assert 950 <= len(series) <= 1050
    days = series.time.numpy().astype("datetime64[s]").astype("datetime64[D]")
    assert np.is_busday(days).all()
    o, h, lo, c, v = (series.values[:, FEATURES.index(n)].numpy() for n in ("open", "high", "low", "close", "volume"))
    assert (lo <= np.minimum(o, c)).all() and (np.maximum(o, c) <= h).all() and (v > 0).all()
    returns = np.diff(np.log(c))
    assert stats.kurtosis(returns, fisher=False) > 4.0  # normal: 3
    size = np.abs(returns - returns.mean())
    assert np.corrcoef(size[:-1], size[1:])[0, 1] > 0.1  # iid: 0 +- 0.03
    shuffled = np.random.default_rng(0).permutation(size)
    assert abs(np.corrcoef(shuffled[:-1], shuffled[1:])[0, 1]) < 0.1


def test_sample_generator_is_deterministic(tmp_path: Path) -> None:
    main = runpy.run_path(str(ROOT / "scripts" / "make_sample_data.py"))["main"]
    first, second = main(tmp_path / "one"), main(tmp_path / "two")
    assert [p.name for p in first] == [f"{s}.parquet" for s in SAMPLE]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()  # same machine, same code path: bit-identical
        new, shipped = pq.read_table(a), pq.read_table(ROOT / "data" / a.name)
        # Against the shipped files, made on another CPU: exp/log may round differently in the last
        # bits there (other SIMD paths), so prices agree to 1e-12 relative, not bit for bit.
        assert new.schema == shipped.schema and new.column("timestamp").equals(shipped.column("timestamp"))
        for name in ("open", "high", "low", "close", "volume"):
            np.testing.assert_allclose(new.column(name).to_numpy(), shipped.column(name).to_numpy(), rtol=1e-12)
