"""Names that become file names: one symbol grammar (import and run), one model-name grammar; hostile names
that reach a report by hand are escaped in its HTML (checked in Chromium) and in its figures (matplotlib)."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_config
from test_cli import snapshot
from test_report import CHROMIUM, chromium

from compiled_opt.commands.cli import main
from compiled_opt.core.errors import UsageError
from compiled_opt.core.names import check_model_name, check_symbol

TICKERS = ["BRK.B", "BTC-USD", "BTC_USDT", "^GSPC", "EURUSD=X", "GC=F", "0700", "7203.T", "aapl", "A" * 64]
NOT_SYMBOLS = [
    "",
    " ",
    "A B",
    "$x^$",
    '"><img src=x onerror=alert(1)>',
    "<b>",
    "a/b",
    "..",
    ".hidden",
    "-rf",
    "=X",
    "_A",
    "ÄPFEL",
    "A\nB",
    "A" * 65,
    "a;b",
    "a*b",
    "C:D",
    "a\\b",
    "%20",
]
NOT_MODELS = ["..", ".", "best", "Best", "BEST", "a/b", "", " x", "-x", "^m", "a b", "m=1", "x" * 65, "<i>"]


@pytest.mark.parametrize("name", TICKERS)
def test_real_tickers_are_symbols(name):
    assert check_symbol(name, "here") == name


@pytest.mark.parametrize("name", NOT_SYMBOLS)
def test_anything_else_is_not_a_symbol(name):
    with pytest.raises(UsageError, match=re.escape("is not a symbol: use at most 64 letters, digits and . - _ ^ =")):
        check_symbol(name, "here")


@pytest.mark.parametrize("name", NOT_MODELS)
def test_names_that_are_not_folders_of_their_own_cannot_name_a_model(name):
    with pytest.raises(UsageError, match="cannot name a model"):
        check_model_name(name, "here")


@pytest.mark.parametrize("name", ["..", ".", "best", "Best", "a/b", "a b", "../../etc"])
def test_a_bad_model_name_is_refused_and_nothing_is_written_anywhere(tmp_path, market_dir, capsys, name):
    root = tmp_path / "deep" / "inside"
    root.mkdir(parents=True)
    config = write_config(root, market_dir, trials=4)
    config.write_text(config.read_text().replace("[models.bootstrap]", f"[models.{json.dumps(name)}]"))
    before = snapshot(tmp_path)
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {config}: models.{name}: {name!r} cannot name a model") and err.count("\n") == 1
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "symbols, message",
    [
        ('["APP", "APP"]', "data.symbols: lists 'APP' twice"),
        ('["APP", "A B"]', "data.symbols: 'A B' is not a symbol"),
        ('["$x^$"]', "data.symbols: '$x^$' is not a symbol"),
    ],
)
def test_data_symbols_follow_the_grammar_and_name_each_symbol_once(tmp_path, market_dir, capsys, symbols, message):
    config = write_config(tmp_path, market_dir, trials=4)
    config.write_text(config.read_text().replace('symbols = ["APP", "NU"]', f"symbols = {symbols}"))
    assert main(["run", str(config)]) == 2
    assert message in capsys.readouterr().err
    assert main(["run", str(config), "--symbols", "NU", "NU"]) == 2
    assert "error: --symbols: lists 'NU' twice" in capsys.readouterr().err
    assert not (tmp_path / "hyperparams").exists() and not (tmp_path / "runs").exists()


def test_a_data_file_named_outside_the_grammar_is_refused(tmp_path, market_dir, capsys):
    data = tmp_path / "data"
    shutil.copytree(market_dir, data)
    hostile = data / '"><img src=x onerror=alert(1)>.parquet'
    shutil.copy(data / "APP.parquet", hostile)
    config = write_config(tmp_path, data, trials=4)
    config.write_text(config.read_text().replace('symbols = ["APP", "NU"]', 'symbols = "all"'))
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {hostile}: '\"><img src=x onerror=alert(1)>' is not a symbol")
    assert not (tmp_path / "hyperparams").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("symbol", ["A B", "$X", "<SCRIPT>", "../UP", ".HIDDEN"])
def test_import_refuses_a_symbol_outside_the_grammar(tmp_path, capsys, symbol):
    csv = tmp_path / "in.csv"
    csv.write_text(
        "timestamp,open,high,low,close,volume,vwap,symbol\n"
        + "".join(f"2024-01-0{d}T00:00:00Z,1,2,1,1,5,1,{symbol}\n" for d in range(1, 7))
    )
    assert main(["data", "import", str(csv), "--out", str(tmp_path / "out")]) == 2
    assert "is not a symbol" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("symbol", ["^GSPC", "EURUSD=X", "BRK.B"])
def test_import_keeps_real_tickers(tmp_path, symbol):
    csv = tmp_path / "in.csv"
    csv.write_text(
        "timestamp,open,high,low,close,volume,vwap,symbol\n"
        + "".join(f"2024-01-0{d}T00:00:00Z,1,2,1,1,5,1,{symbol}\n" for d in range(1, 7))
    )
    assert main(["data", "import", str(csv), "--out", str(tmp_path)]) == 0
    assert (tmp_path / f"{symbol}.parquet").is_file()


# --- hostile names that reach a report by hand -------------------------------------------------------------

HOSTILE = {  # what a symbol, a model and a config value are replaced with in a real run's folder
    "APP": '"><img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>$x^$',
    "bootstrap": "<svg onload=\"document.title='pwned'\">$\\frac{1}{0}$",
    "median": "</td></tr></table><iframe src=javascript:alert(1)>",
}


def hostile_run(run_config: Path, tmp_path: Path) -> Path:
    """A copy of a real run's folder (and config) with every name and value of ``HOSTILE`` replaced."""
    shutil.copytree(run_config.parent / "runs", tmp_path / "runs")
    config = tmp_path / "compiled_opt.toml"
    config.write_text(run_config.read_text().replace(str(run_config.parent), str(tmp_path)))
    for path in [*(tmp_path / "runs").rglob("*.json")]:
        text = path.read_text()
        for old, new in HOSTILE.items():
            text = text.replace(old, json.dumps(new)[1:-1])
        path.write_text(text)
    for path in (tmp_path / "runs").rglob("*.parquet"):
        table = pq.read_table(path)
        for column in ("symbol", "model", "params"):
            values = table.column(column).to_pylist()
            for old, new in HOSTILE.items():
                values = [v.replace(old, json.dumps(new)[1:-1] if column == "params" else new) for v in values]
            table = table.set_column(table.schema.get_field_index(column), column, pa.array(values, pa.string()))
        pq.write_table(table, path)
    return config


class Dom(HTMLParser):
    """What a page holds once a browser ran it: its elements, their attributes, its title."""

    def __init__(self):
        super().__init__()
        self.elements: list[tuple[str, dict]] = []
        self.title, self._in_title = "", False

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        self._in_title = tag == "title"

    def handle_data(self, data):
        if self._in_title:
            self.title += data

    def handle_endtag(self, tag):
        self._in_title = False

    def injected(self) -> list[str]:
        """Elements and attributes no compiled-opt report has."""
        ours = {
            "html",
            "head",
            "meta",
            "title",
            "style",
            "body",
            "main",
            "h1",
            "h2",
            "h3",
            "h4",
            "p",
            "code",
            "b",
            "a",
            "span",
            "div",
            "section",
            "img",
            "table",
            "thead",
            "tbody",
            "tr",
            "th",
            "td",
            "pre",
            "details",
            "summary",
        }
        found = [tag for tag, _ in self.elements if tag not in ours]
        found += [f"{tag} {key}" for tag, attrs in self.elements for key in attrs if key.startswith("on")]
        found += [
            f"img {a.get('src', '')[:30]}"
            for t, a in self.elements
            if t == "img" and not a.get("src", "").startswith("data:image/png;base64,")
        ]
        return found + (["title changed"] if "pwned" in self.title else [])


def chromium_dom(page: Path, profile: Path) -> Dom:
    out = chromium(page, profile, "--virtual-time-budget=2000", "--dump-dom", text=True)
    dom = Dom()
    dom.feed(out)
    return dom


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, market_dir) -> Path:
    config = write_config(tmp_path_factory.mktemp("names"), market_dir, trials=4)
    assert main(["run", str(config), "-q"]) == 0
    return config


def test_a_report_of_hostile_names_renders_them_as_text(real_run, tmp_path, capsys):
    config = hostile_run(real_run, tmp_path)
    out = tmp_path / "r.html"
    assert main(["report", str(config), "--out", str(out)]) == 0  # matplotlib draws "$x^$" as text
    html = out.read_text()
    for value in HOSTILE.values():
        assert value not in html  # only escaped
    dom = Dom()
    dom.feed(html)
    assert dom.injected() == [] and sum(tag == "img" for tag, _ in dom.elements) == 5


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (/usr/bin/chromium)")
def test_chromium_finds_no_injected_element_in_a_report_of_hostile_names(real_run, tmp_path):
    raw = tmp_path / "raw.html"  # the detector itself: the same names unescaped are found
    raw.write_text(f"<html><head><title>t</title></head><body>{''.join(HOSTILE.values())}</body></html>")
    assert {"script", "img onerror", "svg", "svg onload", "iframe", "title changed"} <= set(
        chromium_dom(raw, tmp_path / "p0").injected()
    )
    config = hostile_run(real_run, tmp_path)
    out = tmp_path / "r.html"
    assert main(["report", str(config), "--out", str(out)]) == 0
    dom = chromium_dom(out, tmp_path / "p1")
    assert dom.injected() == []
    assert dom.title.startswith("compiled-opt report ")
