"""Config validation: one-line errors naming the file and the key, with what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_config

from compiled_opt.core.config import Override, load_config
from compiled_opt.core.errors import UsageError
from compiled_opt.core.space import Choices, Range

ROOT = Path(__file__).resolve().parents[1]


def test_bundled_config_loads_with_typed_sections():
    cfg = load_config(ROOT / "compiled_opt.toml")
    assert cfg.evaluation.eval_runs == 3 and cfg.acceptance.policy == "any_improvement"
    assert cfg.acceptance.options == {"threshold": 0.0}
    assert (
        cfg.data.directory == ROOT / "data"
        and cfg.data.val_window == 250
        and cfg.data.test_window == 20
        and cfg.pooled.enabled
    )
    space = cfg.models["bootstrap"].space
    assert space["lookback"] == Range(10, 250, integer=True, log=True)
    assert isinstance(space["aggregate"], Choices) and not space["aggregate"].ordered


def test_defaults_fill_missing_sections(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[models.m]\nbackend = "bootstrap"\n')
    cfg = load_config(path)
    assert cfg.search.optimizer == "TwoPointsDE" and cfg.runtime.device == "auto" and cfg.models["m"].space is None
    assert cfg.search.seed == "auto" and cfg.executor.name == "local" and cfg.pooled.enabled
    assert cfg.data.val_window == 250 and cfg.search.trials == 100  # the defaults benchmarks/generalization.py chose


@pytest.mark.parametrize(
    "text, where, words",
    [
        ("[search]\ntrails = 3", "search.trails", "did you mean 'trials'"),
        ("[search]\ntrials = 'x'", "search.trials", "expected int"),
        ("[search]\ntrials = 0", "search.trials", "at least 1"),
        ("[runtime]\ndevice = 'gpu'", "runtime.device", "allowed: auto, cpu, cuda"),
        ("[runtime]\nmode = 'turbo'", "runtime.mode", "allowed: default, fast"),
        ("[search]\nseed = -1", "search.seed", '"auto" or a non-negative integer'),
        ("[search]\nexhaustive = 'yes'", "search.exhaustive", "allowed: always, auto, never"),
        ("[pooled]\nalpha = 0.7", "pooled.alpha", "between 0 and 0.5"),
        ("[ray]\nmax_retries = 1", "ray", "moved to executor.options"),
        ("[runtime]\nworkers = 2", "runtime.workers", "moved to executor.options.workers"),
        ("[executor]\nname = 3", "executor.name", "expected str"),
        ("[runtime]\ncompile = 'fast'", "runtime.compile", "reduce-overhead"),
        ("[evaluation]\ncost = -0.001", "evaluation.cost", "at least 0 and below 1"),
        ("[forecast]\nquantiles = [0.9, 0.1]", "forecast.quantiles", "increasing probabilities"),
        ("[evaluation]\neval_runs = true", "evaluation.eval_runs", "expected int"),
        ("[dat]\nx = 1", "dat", "did you mean 'data'"),
        (
            "[models.m]\nbackend = 'bootstrap'\nspace = { a = { float = [2, 1] } }",
            "models.m.space.a.float",
            "empty range",
        ),
        ("[models.m]\nbackend = 'bootstrap'\nspace = { a = { int = [1.5, 3] } }", "models.m.space.a.int", "integers"),
        (
            "[models.m]\nbackend = 'bootstrap'\nspace = { a = { float = [0, 1], log = true } }",
            "models.m.space.a.float",
            "low > 0",
        ),
        ("[models.m]\nbackend = 'bootstrap'\nspace = { a = { choice = [] } }", "models.m.space.a.choice", "non-empty"),
        (
            "[models.m]\nbackend = 'bootstrap'\nspace = { a = { range = [1, 2] } }",
            "models.m.space.a",
            "unknown key 'range'",
        ),
        ("[models.m]\nbackend = 'bootstrap'\nopts = {}", "models.m.opts", "did you mean 'options'"),
        ("[models.m]\nfixed = {}", "models.m.backend", "backend ="),
        ("x = ", "", "malformed TOML"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path, text, where, words):
    path = tmp_path / "bad.toml"
    path.write_text(
        text + ("\n[models.ok]\nbackend = 'bootstrap'\n" if "models" not in text and "x =" not in text else "")
    )
    with pytest.raises(UsageError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {where}") and words in message and "\n" not in message


def test_cli_overrides(tmp_path, market_dir):
    path = write_config(tmp_path, market_dir, trials=8)
    cfg = load_config(
        path,
        {
            "search.trials": 3,
            "evaluation.eval_runs": 5,
            "data.symbols": ["NU"],
            "models": ["bootstrap"],
            "force": True,
            "output.directory": str(tmp_path / "o"),
        },
    )
    assert (cfg.search.trials, cfg.evaluation.eval_runs, cfg.data.symbols, cfg.force) == (3, 5, ["NU"], True)
    assert cfg.output.directory == tmp_path / "o"
    with pytest.raises(UsageError, match=r"^--model: unknown model 'toto'"):
        load_config(path, {"models": ["toto"]})


def test_a_bad_flag_value_names_the_flag_not_the_file(tmp_path, market_dir):
    path = write_config(tmp_path, market_dir)
    with pytest.raises(UsageError, match=r"^--trials: must be at least 1$"):
        load_config(path, {"search.trials": Override(0, "--trials")})
    with pytest.raises(UsageError, match=rf"^{path}: search.trials: must be at least 1$"):
        load_config(path, {"search.trials": 0})


def test_fingerprint_follows_the_text_and_the_flags(tmp_path, market_dir):
    path = write_config(tmp_path, market_dir)
    a = load_config(path)
    assert load_config(path).fingerprint() == a.fingerprint()
    assert load_config(path, {"search.trials": Override(3, "--trials")}).fingerprint() != a.fingerprint()
    assert load_config(path, text=a.text + "\n# a comment\n").fingerprint() != a.fingerprint()


@pytest.mark.parametrize("doc", ["toto.md", "kronos.md"])
def test_documented_model_tables_are_valid(tmp_path, doc):
    """The config shown in a backend's docs loads, and names only that backend's parameters."""
    from compiled_opt.core.registry import Plugins

    path = tmp_path / "doc.toml"
    path.write_text((ROOT / "docs" / doc).read_text().split("```toml\n")[1].split("```")[0])
    cfg = load_config(path)
    backends = Plugins.load().backends
    for model in cfg.models.values():
        assert set(model.fixed) | set(model.space or {}) <= set(backends.get(model.backend).defaults)
