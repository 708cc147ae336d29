"""Every ```toml block of docs/toto.md and docs/kronos.md runs as written: against real market data from
../shared, with tiny random checkpoints standing in for the released weights in a Hugging Face cache
(the blocks name the real model ids, which the backends look up offline), and few trials."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from compiled_opt.engine.cli import main

pytest.importorskip("toto", reason="the toto backend needs toto-ts")
pytest.importorskip("kronos_finance", reason="the kronos backend needs kronos-finance")

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("docs/toto.md", "docs/kronos.md")
BLOCKS = [(doc, i, text) for doc in DOCS
          for i, text in enumerate(re.findall(r"```toml\n(.*?)```", (ROOT / doc).read_text(), re.S))]
# The released weights the docs name, and the tiny checkpoint part standing in for each.
RELEASED = {"Datadog/Toto-Open-Base-1.0": ("toto", ""), "NeoQuasar/Kronos-small": ("kronos", "model"),
            "NeoQuasar/Kronos-base": ("kronos", "model"), "NeoQuasar/Kronos-Tokenizer-base": ("kronos", "tokenizer")}


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


def test_every_doc_has_runnable_blocks_and_none_needs_a_gpu():
    for doc in DOCS:
        blocks = [text for d, _, text in BLOCKS if d == doc]
        assert blocks, f"{doc} has no ```toml block"
        assert not any('device = "cuda"' in text for text in blocks), doc


@pytest.mark.parametrize(("doc", "index", "text"), BLOCKS, ids=[f"{d}:{i}" for d, i, _ in BLOCKS])
def test_config_block_runs(doc, index, text, hf_cache, market_dir, tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_cache))
    (tmp_path / "data").symlink_to(market_dir)  # the blocks' data.directory = "data", next to the config
    config = tmp_path / "compiled_opt.toml"
    config.write_text(text)
    code = main(["run", str(config), "--trials", "3", "--symbols", "APP", "NU", "--output", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    assert list((tmp_path / "out" / "hyperparams").rglob("*.json")), "the run stored nothing"
