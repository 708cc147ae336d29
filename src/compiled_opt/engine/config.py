"""``compiled_opt.toml``: read with tomllib and checked into typed sections.

Every problem is a ``UsageError`` naming the file and the key (``compiled_opt.toml: search.trials``).
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from compiled_opt.engine.errors import UsageError, did_you_mean
from compiled_opt.engine.space import Choices, Range, parse_space

METRICS = ("pct_return_mae", "price_mae")
DEVICES = ("auto", "cpu", "cuda")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")
DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class DataConfig:
    """Where the Parquet files are and how they are cut into windows.

    ``context_length`` (rows of history per window), when not 0, holds every model's context
    parameter fixed at that value, except in a model that fixes or searches it itself.
    """

    directory: Path = Path("data")
    symbols: list[str] | str = "all"
    val_window: int = 30
    test_window: int = 20
    horizon: int = 1
    context_length: int = 0

    def checks(self) -> dict[str, str | None]:
        return {
            "symbols": None if self.symbols == "all" or (isinstance(self.symbols, list) and self.symbols)
            else 'must be "all" or a non-empty list of symbols',
            "val_window": None if self.val_window >= 2 else "must be at least 2",
            "test_window": None if self.test_window >= 1 else "must be at least 1",
            "horizon": None if self.horizon >= 1 else "must be at least 1",
            "context_length": None if self.context_length >= 0 else "must be 0 (each model's own) or positive",
        }


@dataclass(frozen=True)
class EvaluationConfig:
    """How each config is scored: ``eval_runs`` stochastic runs from ``seed``, on ``metric``."""

    eval_runs: int = 3
    seed: int = 0
    metric: str = "pct_return_mae"

    def checks(self) -> dict[str, str | None]:
        return {"eval_runs": None if self.eval_runs >= 1 else "must be at least 1",
                "metric": _one_of(self.metric, METRICS)}


@dataclass(frozen=True)
class SearchConfig:
    """The Nevergrad search: optimizer name, total ``trials``, candidates asked per ``batch``."""

    optimizer: str = "NGOpt"
    trials: int = 40
    batch: int = 4
    seed: int = 0

    def checks(self) -> dict[str, str | None]:
        import nevergrad as ng

        known = ng.optimizers.registry
        return {
            "optimizer": None if self.optimizer in known else f"unknown optimizer {self.optimizer!r}; "
            + did_you_mean(self.optimizer, known).split("allowed:")[0] + "see nevergrad.optimizers.registry",
            "trials": None if self.trials >= 1 else "must be at least 1",
            "batch": None if self.batch >= 1 else "must be at least 1",
        }


@dataclass(frozen=True)
class AcceptanceConfig:
    """The acceptance policy's registered name and its options."""

    policy: str = "any_improvement"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutputConfig:
    """Where stored configs (``directory``) and per-run trial logs (``runs``) go."""

    directory: Path = Path("hyperparams")
    runs: Path = Path("runs")


@dataclass(frozen=True)
class RuntimeConfig:
    """Device, ``torch.compile`` mode and dtype for the models."""

    device: str = "auto"
    compile: str = "none"
    dtype: str = "float32"

    def checks(self) -> dict[str, str | None]:
        return {"device": _one_of(self.device, DEVICES), "compile": _one_of(self.compile, COMPILE_MODES),
                "dtype": _one_of(self.dtype, DTYPES)}


@dataclass(frozen=True)
class ModelConfig:
    """One tuned model: its backend plugin, the backend's options, fixed parameters and search space."""

    name: str
    backend: str
    options: dict[str, Any] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    space: dict[str, Range | Choices] | None = None


@dataclass(frozen=True)
class Config:
    path: Path
    data: DataConfig
    evaluation: EvaluationConfig
    search: SearchConfig
    acceptance: AcceptanceConfig
    output: OutputConfig
    runtime: RuntimeConfig
    models: dict[str, ModelConfig]
    force: bool = False

    def where(self, key: str) -> str:
        return f"{self.path}: {key}"


SECTIONS = {"data": DataConfig, "evaluation": EvaluationConfig, "search": SearchConfig,
            "acceptance": AcceptanceConfig, "output": OutputConfig, "runtime": RuntimeConfig}


def _one_of(value: str, allowed: tuple[str, ...]) -> str | None:
    return None if value in allowed else f"unknown value {value!r}; {did_you_mean(value, allowed)}"


def _coerce(value: Any, kind: Any, where: str) -> Any:
    """``value`` checked against the annotated ``kind`` (int, str, bool, Path, dict, list[str] | str)."""
    checks = {
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
        bool: lambda v: isinstance(v, bool),
        Path: lambda v: isinstance(v, str),
        dict[str, Any]: lambda v: isinstance(v, dict),
        list[str] | str: lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v)),
    }
    if not checks[kind](value):
        name = "a path" if kind is Path else getattr(kind, "__name__", str(kind))
        raise UsageError(f"expected {name}, got {type(value).__name__} {value!r}", where)
    return Path(value) if kind is Path else value


def _section(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, Mapping):
        raise UsageError("must be a table", where)
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            raise UsageError(f"unknown key {key!r}; {did_you_mean(key, names)}", f"{where}.{key}")
    obj = cls(**{k: _coerce(v, hints[k], f"{where}.{k}") for k, v in raw.items()})
    for key, problem in getattr(obj, "checks", dict)().items():
        if problem:
            raise UsageError(problem, f"{where}.{key}")
    return obj


def _model(name: str, raw: Any, where: str) -> ModelConfig:
    if not isinstance(raw, Mapping):
        raise UsageError("must be a table", where)
    allowed = ("backend", "options", "fixed", "space")
    for key in raw:
        if key not in allowed:
            raise UsageError(f"unknown key {key!r}; {did_you_mean(key, allowed)}", f"{where}.{key}")
    if not isinstance(raw.get("backend"), str):
        raise UsageError("every model needs backend = \"<plugin name>\" (see `compiled-opt plugins`)", f"{where}.backend")
    for key in ("options", "fixed", "space"):
        if not isinstance(raw.get(key, {}), Mapping):
            raise UsageError("must be a table", f"{where}.{key}")
    space = parse_space(raw["space"], f"{where}.space") if "space" in raw else None
    return ModelConfig(name, raw["backend"], dict(raw.get("options", {})), dict(raw.get("fixed", {})), space)


def load_config(path: Path, overrides: Mapping[str, Any] | None = None) -> Config:
    """Read ``path`` and apply CLI ``overrides`` (keys ``section.field``, plus ``models`` and ``force``)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError("no such config file", str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"malformed TOML: {exc}", str(path)) from None
    overrides = dict(overrides or {})
    for key, value in overrides.items():
        if "." in key:
            section, name = key.split(".")
            raw.setdefault(section, {})[name] = value
    for key in raw:
        if key not in (*SECTIONS, "models"):
            raise UsageError(f"unknown section {key!r}; {did_you_mean(key, (*SECTIONS, 'models'))}", f"{path}: {key}")
    sections = {name: _section(cls, raw.get(name, {}), f"{path}: {name}") for name, cls in SECTIONS.items()}
    here = path.parent  # relative paths in the file are relative to the file
    sections["data"] = dataclasses.replace(sections["data"], directory=here / sections["data"].directory)
    out = sections["output"]
    sections["output"] = dataclasses.replace(out, directory=here / out.directory, runs=here / out.runs)
    models_raw = raw.get("models", {})
    if not isinstance(models_raw, Mapping) or not models_raw:
        raise UsageError("define at least one model, e.g. [models.bootstrap] with backend = \"bootstrap\"", f"{path}: models")
    models = {name: _model(name, m, f"{path}: models.{name}") for name, m in models_raw.items()}
    if overrides.get("models"):
        for name in overrides["models"]:
            if name not in models:
                raise UsageError(f"unknown model {name!r}; {did_you_mean(name, models)}", f"{path}: --model")
        models = {name: models[name] for name in overrides["models"]}
    return Config(path=path, models=models, force=bool(overrides.get("force")), **sections)
