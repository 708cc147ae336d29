"""Every ```toml config block of README.md and docs/*.md runs as written: against real market data from
../shared, with tiny random checkpoints standing in for the released weights in a Hugging Face cache
(the blocks name the real model ids, which the backends look up offline), and few trials.

A block may be a whole config or a few tables of one (``[acceptance]``, ``[runtime]``): those run as the
bundled compiled_opt.toml with the block's tables in place of its own. The one ``toml`` block that is not a
compiled-opt config, ``pyproject.toml``'s entry-point table in docs/plugins.md, is recognised by its
``[project`` tables and checked to be valid TOML only; docs/plugins.md's model table runs with its tutorial
plugin installed."""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import pytest
from conftest import install_plugin

from compiled_opt.commands.cli import main

pytest.importorskip("toto", reason="the toto backend needs toto-ts")
pytest.importorskip("kronos_finance", reason="the kronos backend needs kronos-finance")

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")))
BLOCKS = [
    (doc, i, text)
    for doc in DOCS
    for i, text in enumerate(re.findall(r"```toml\n(.*?)```", (ROOT / doc).read_text(), re.S))
]
# The released weights the docs name, and the tiny checkpoint part standing in for each.
RELEASED = {
    "Datadog/Toto-Open-Base-1.0": ("toto", ""),
    "NeoQuasar/Kronos-small": ("kronos", "model"),
    "NeoQuasar/Kronos-base": ("kronos", "model"),
    "NeoQuasar/Kronos-Tokenizer-base": ("kronos", "tokenizer"),
}
TABLE = re.compile(r"^\[([A-Za-z0-9_.\-]+)\]", re.M)


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory) -> Path:
    """A Hugging Face cache holding tiny checkpoints (``compiled-opt checkpoint random``) under the released ids."""
    work = tmp_path_factory.mktemp("hf")
    for backend in ("toto", "kronos"):
        assert main(["checkpoint", "random", backend, str(work / backend), "--size", "tiny"]) == 0
    cache = work / "hub"
    for repo, (backend, part) in RELEASED.items():
        entry = cache / f"models--{repo.replace('/', '--')}"
        (entry / "refs").mkdir(parents=True)
        (entry / "refs" / "main").write_text("0" * 40)
        shutil.copytree(work / backend / part, entry / "snapshots" / ("0" * 40))
    return cache


def tables(text: str) -> list[tuple[str, str]]:
    """A TOML text cut into its top-level tables: (header's name, the table's text)."""
    starts = [m.start() for m in TABLE.finditer(text)]
    parts = [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)], strict=True)]
    return [(TABLE.match(part).group(1), part) for part in parts]


def completed(block: str) -> str:
    """``block`` with the bundled config's tables it does not set itself (any model table replaces all)."""
    own = {name.split(".")[0] for name, _ in tables(block)}
    base = [part for name, part in tables((ROOT / "compiled_opt.toml").read_text()) if name.split(".")[0] not in own]
    return "".join(base) + "\n" + block


def test_every_doc_block_is_toml_and_none_needs_a_gpu_or_a_cluster():
    assert {doc for doc, _, _ in BLOCKS} >= {"README.md", "docs/toto.md", "docs/kronos.md", "docs/acceptance.md"}
    for doc, _, text in BLOCKS:
        tomllib.loads(text)
        assert 'device = "cuda"' not in text and "address =" not in text, doc


@pytest.mark.parametrize(("doc", "index", "text"), BLOCKS, ids=[f"{d}:{i}" for d, i, _ in BLOCKS])
def test_config_block_runs(doc, index, text, hf_cache, market_dir, tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    if text.lstrip().startswith("[project"):
        pytest.skip("pyproject.toml's entry-point table, not a compiled-opt config (valid TOML: checked above)")
    if doc == "docs/plugins.md":
        tutorial = (ROOT / doc).read_text().split("```python\n")[1].split("```")[0]
        (tmp_path / "plugin").mkdir()
        install_plugin(tmp_path / "plugin", monkeypatch, "tutorial_plugin", tutorial)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_cache))
    (tmp_path / "data").symlink_to(market_dir)  # the blocks' data.directory = "data", next to the config
    config = tmp_path / "compiled_opt.toml"
    config.write_text(completed(text))
    code = main(["run", str(config), "--trials", "3", "--symbols", "APP", "--output", str(tmp_path / "out"), "-q"])
    assert code == 0, capsys.readouterr().err
    assert list((tmp_path / "out" / "hyperparams").rglob("*.json")), "the run stored nothing"


HISTORY = re.compile(r"a context of (\d+) rows(?: \([^)]*\))? needs (\d+) rows of\s+data")
SHORT = re.compile(r"a context of (\d+) rows.*?that is (\d+) of the (\d+) symbols", re.S)


def needed(context: int) -> int:
    """Rows of data a context needs with the default windows, by the engine's own check."""
    from compiled_opt.core.config import DataConfig
    from compiled_opt.core.data import splits

    d = DataConfig()
    length = 10_000
    return context + length - splits(length, d.val_window, d.test_window, d.horizon).validation.start


@pytest.mark.parametrize("doc", ["docs/toto.md", "docs/kronos.md"])
def test_the_history_figures_in_the_docs_are_the_engines(doc):
    """What the docs say a context needs, and how many of the shared symbols lack it, is what the code does."""
    from conftest import MARKET

    text = " ".join((ROOT / doc).read_text().split())
    claims = HISTORY.findall(text)
    assert claims, doc
    for context, rows in claims:
        assert needed(int(context)) == int(rows), (doc, context)
    lengths = [sum(1 for _ in open(p)) - 1 for p in MARKET.glob("*.csv")]
    assert SHORT.findall(text), doc
    for context, short, total in SHORT.findall(text):
        assert (int(short), int(total)) == (sum(n < needed(int(context)) for n in lengths), len(lengths)), doc
