"""``compiled-opt checkpoint random``: random-initialised checkpoints that the backends' own loaders read."""

from __future__ import annotations

import pytest
import torch

from compiled_opt.commands.cli import main
from compiled_opt.core.backend import Runtime

pytest.importorskip("toto", reason="the toto backend needs toto-ts")
pytest.importorskip("kronos_finance", reason="the kronos backend needs kronos-finance")

from compiled_opt.plugins.backends.kronos import KronosBackend  # noqa: E402
from compiled_opt.plugins.backends.kronos import checkpoint as kronos_checkpoint  # noqa: E402
from compiled_opt.plugins.backends.toto import TotoBackend  # noqa: E402
from compiled_opt.plugins.backends.toto import checkpoint as toto_checkpoint  # noqa: E402


def weights(backend) -> dict[str, torch.Tensor]:
    modules = [backend.model] if isinstance(backend, TotoBackend) else [backend.tokenizer, backend.model]
    return {f"{i}.{k}": v for i, m in enumerate(modules) for k, v in m.state_dict().items()}


@pytest.mark.parametrize(
    ("name", "cls", "options"),
    [("toto", TotoBackend, ["checkpoint"]), ("kronos", KronosBackend, ["model", "tokenizer"])],
)
def test_command_writes_what_the_backend_loads(name, cls, options, tmp_path, capsys):
    for seed, directory in ((3, tmp_path / "a"), (3, tmp_path / "b"), (4, tmp_path / "c")):
        assert main(["checkpoint", "random", name, str(directory), "--size", "tiny", "--seed", str(seed)]) == 0
    printed = capsys.readouterr().out
    for key in options:
        assert f'{key} = "{tmp_path / "a"}' in printed  # the config line to paste, absolute paths
    a, b, c = (weights(cls(Runtime(), **dict(_options(name, tmp_path / d)))) for d in "abc")
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)  # a seed makes the same checkpoint
    assert not all(torch.equal(a[k], c[k]) for k in a)


def _options(name: str, directory):
    if name == "toto":
        return {"checkpoint": str(directory)}
    return {"model": str(directory / "model"), "tokenizer": str(directory / "tokenizer")}


def test_defaults_to_tiny_and_seed_zero(tmp_path):
    assert main(["checkpoint", "random", "toto", str(tmp_path)]) == 0
    loaded = TotoBackend(Runtime(), checkpoint=str(tmp_path)).model.state_dict()
    again = toto_checkpoint.random_model("tiny", seed=0).model.state_dict()
    assert all(torch.equal(loaded[k], again[k]) for k in again)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["totto"], "unknown backend 'totto'; did you mean 'toto'?"),
        (["bootstrap"], "backend 'bootstrap' offers no random checkpoints; allowed: kronos, toto"),
    ],
)
def test_unknown_or_unable_backend_is_a_usage_error(argv, message, tmp_path, capsys):
    assert main(["checkpoint", "random", *argv, str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("argv", [["--size", "huge"], ["--seed", "-1"], ["--seed", "x"]])
def test_bad_flags_exit_2_naming_the_flag(argv, tmp_path, capsys):
    assert main(["checkpoint", "random", "toto", str(tmp_path), *argv]) == 2
    assert argv[0] in capsys.readouterr().err


def test_sizes_are_the_released_architectures():
    """Parameter counts of the released models (built on the meta device: no memory, no time)."""

    def count(*modules) -> float:
        return round(sum(p.numel() for m in modules for p in m.parameters()) / 1e6, 1)

    with torch.device("meta"):
        assert count(toto_checkpoint.random_model("base")) == 151.3  # Toto-Open-Base-1.0: 151M
        tokenizer, small = kronos_checkpoint.random_modules("small")
        assert count(small) == 24.7 and count(tokenizer) == 4.0  # Kronos-small, Kronos-Tokenizer-base
        assert count(kronos_checkpoint.random_modules("base")[1]) == 102.3  # Kronos-base
        assert count(toto_checkpoint.random_model("tiny")) <= 0.1 and count(*kronos_checkpoint.random_modules()) <= 0.1


def test_random_checkpoints_are_readable_by_other_users(tmp_path):
    """Trading code and workers often run as another user: the umask's mode, not safetensors' 0600."""
    import os

    from compiled_opt.commands.checkpoint import write_random

    old = os.umask(0o022)
    try:
        write_random("toto", tmp_path / "toto", "tiny")
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "toto").rglob("*") if p.is_file()]
    assert files and all(p.stat().st_mode & 0o777 == 0o644 for p in files)
