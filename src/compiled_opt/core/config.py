"""``compiled_opt.toml``: read with tomllib and checked into typed sections.

Every problem is a ``UsageError`` naming where the value came from: the file and the key
(``compiled_opt.toml: search.trials``) or, for a value given on the command line, the flag (``--trials``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from compiled_opt.core.errors import UsageError, did_you_mean
from compiled_opt.core.names import check_model_name, symbol_problem
from compiled_opt.core.space import Choices, Range, parse_space

DEVICES = ("auto", "cpu", "cuda")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")
DTYPES = ("float32", "bfloat16")
MODES = ("default", "fast")
EXHAUSTIVE = ("auto", "always", "never")
SHORT_HISTORY = ("auto", "skip", "error")


@dataclass(frozen=True)
class DataConfig:
    """Where the Parquet files are and how they are cut into windows.

    ``context_length`` (rows of history per window), when not 0, holds every model's context
    parameter fixed at that value, except in a model that fixes or searches it itself.
    ``short_history``: a symbol without the history the longest context needs is ``skip``ped with a
    warning, or an ``error``; ``auto`` skips it when ``symbols = "all"`` and refuses a listed one.
    """

    directory: Path = Path("data")
    symbols: list[str] | str = "all"
    val_window: int = 250  # chosen by benchmarks/generalization.py (README)
    test_window: int = 20
    horizon: int = 1
    context_length: int = 0
    short_history: str = "auto"

    @property
    def skip_short(self) -> bool:
        """Whether a symbol with too little history is skipped (else the run is refused)."""
        return self.short_history == "skip" or (self.short_history == "auto" and self.symbols == "all")

    def checks(self) -> dict[str, str | None]:
        return {
            "symbols": _symbols_problem(self.symbols),
            "val_window": None if self.val_window >= 2 else "must be at least 2",
            "test_window": None if self.test_window >= 2 else "must be at least 2",
            "horizon": None if self.horizon >= 1 else "must be at least 1",
            "context_length": None if self.context_length >= 0 else "must be 0 (each model's own) or positive",
            "short_history": _one_of(self.short_history, SHORT_HISTORY),
        }


@dataclass(frozen=True)
class EvaluationConfig:
    """How each config is scored: ``eval_runs`` stochastic runs from ``seed``, on ``metric`` (a registered
    metric: ``compiled-opt plugins``); ``cost`` is the sign strategy's cost per unit of position change
    (``strategy_return``: 0.0005 is 5 basis points)."""

    eval_runs: int = 3
    seed: int = 0
    metric: str = "pct_return_mae"
    cost: float = 0.0005

    def checks(self) -> dict[str, str | None]:
        return {
            "eval_runs": None if self.eval_runs >= 1 else "must be at least 1",
            "cost": None if 0 <= self.cost < 1 else "must be at least 0 and below 1 (a fraction of the price)",
        }


@dataclass(frozen=True)
class SearchConfig:
    """The Nevergrad search: optimizer name, total ``trials``, candidates asked per ``batch``.

    ``seed`` ``"auto"`` draws a new optimizer seed for every invocation (recorded in the run), so
    reruns search anew; an integer makes the whole run reproducible. ``exhaustive``: score every
    point of a small discrete space instead (``auto``: when that costs fewer evaluations than the trials).
    ``racing`` gives candidates more runs (up to ``racing_max_runs``) while they may be the best and
    stops them once a sequential test says they are worse (docs/acceptance.md).
    """

    optimizer: str = "TwoPointsDE"
    trials: int = 100
    batch: int = 4
    seed: int | str = "auto"
    exhaustive: str = "auto"
    racing: bool = False
    racing_max_runs: int = 12

    def checks(self) -> dict[str, str | None]:
        # the optimizer's name is checked by the run, and only when a model is searched with Nevergrad:
        # importing Nevergrad (it imports SciPy and scikit-learn) costs 0.4-0.7 s of start-up
        return {
            "trials": None if self.trials >= 1 else "must be at least 1",
            "batch": None if self.batch >= 1 else "must be at least 1",
            "seed": None
            if self.seed == "auto" or (isinstance(self.seed, int) and self.seed >= 0)
            else 'must be "auto" or a non-negative integer',
            "exhaustive": _one_of(self.exhaustive, EXHAUSTIVE),
            "racing_max_runs": None if self.racing_max_runs >= 2 else "must be at least 2",
        }


@dataclass(frozen=True)
class ForecastConfig:
    """``compiled-opt forecast``: the ``quantiles`` it reports beside the point forecast, and its ``runs``
    (independent seeds; the point forecast is the mean of the runs' aggregates; 0: ``evaluation.eval_runs``)."""

    quantiles: list[float] = field(default_factory=lambda: [0.1, 0.5, 0.9])
    runs: int = 0

    def checks(self) -> dict[str, str | None]:
        q = self.quantiles
        return {
            "quantiles": None
            if q and all(0 < x < 1 for x in q) and q == sorted(set(q))
            else "must be increasing probabilities between 0 and 1, e.g. [0.1, 0.5, 0.9]",
            "runs": None if self.runs >= 0 else "must be 0 (evaluation.eval_runs) or positive",
        }


@dataclass(frozen=True)
class PooledConfig:
    """The pooled stage: one config per model tuned on every symbol's windows together, then used as
    each symbol's reference; a symbol's own winner replaces it only when a one-sided paired t-test
    over the symbol's validation windows says it is better at level ``alpha``. An executor with many
    workers evaluates it in up to ``shards`` groups of symbols at once (``tuning.shards``)."""

    enabled: bool = True
    alpha: float = 0.05
    shards: int = 64

    def checks(self) -> dict[str, str | None]:
        return {
            "alpha": None if 0 < self.alpha < 0.5 else "must be between 0 and 0.5",
            "shards": None if 1 <= self.shards <= 100_000 else "must be between 1 and 100000",
        }


@dataclass(frozen=True)
class AcceptanceConfig:
    """The acceptance policy's registered name and its options."""

    policy: str = "any_improvement"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutputConfig:
    """Where stored configs (``directory``) and per-run logs (``runs``) go. Finished trial batches
    and jobs are written in one group every ``log_flush_s`` seconds (0: each as it finishes)."""

    directory: Path = Path("hyperparams")
    runs: Path = Path("runs")
    log_flush_s: float = 1.0

    def checks(self) -> dict[str, str | None]:
        return {"log_flush_s": None if self.log_flush_s >= 0 else "must be 0 or positive"}


@dataclass(frozen=True)
class RuntimeConfig:
    """Device, ``torch.compile`` mode and dtype of every worker.

    ``mode = "fast"`` picks what is measured fastest on one GPU (see README); ``threads`` (0: torch's
    default) is the torch thread count per worker: equal thread counts give bit-identical results.
    """

    device: str = "auto"
    compile: str = "none"
    dtype: str = "float32"
    mode: str = "default"
    threads: int = 0

    def checks(self) -> dict[str, str | None]:
        return {
            "device": _one_of(self.device, DEVICES),
            "compile": _one_of(self.compile, COMPILE_MODES),
            "dtype": _one_of(self.dtype, DTYPES),
            "mode": _one_of(self.mode, MODES),
            "threads": None if self.threads >= 0 else "must be 0 (torch's default) or positive",
        }


@dataclass(frozen=True)
class ExecutorConfig:
    """Who runs the jobs: a registered executor (``local``, ``ray``, or a plugin's) and its own options."""

    name: str = "local"
    options: dict[str, Any] = field(default_factory=dict)


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
    pooled: PooledConfig
    acceptance: AcceptanceConfig
    output: OutputConfig
    runtime: RuntimeConfig
    executor: ExecutorConfig
    forecast: ForecastConfig
    models: dict[str, ModelConfig]
    force: bool = False
    text: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)
    flags: dict[str, str] = field(default_factory=dict)

    def where(self, key: str) -> str:
        """Where ``key`` (``section.field``) was set: its command-line flag, else the file and key."""
        return self.flags.get(key) or f"{self.path}: {key}"

    def snapshot(self) -> dict[str, Any]:
        """What reproduces this config: the file's (absolute) path and text, and the command-line overrides."""
        return {"path": str(self.path.resolve()), "text": self.text, "overrides": self.overrides}

    def changed_key(self, snapshot: Mapping[str, Any]) -> str | None:
        """The first key (``section.field``) or flag whose value differs from the config in ``snapshot``."""

        def flat(text: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
            out: dict[str, Any] = {}

            def walk(prefix: str, table: Mapping[str, Any]) -> None:
                for k, v in table.items():
                    if isinstance(v, Mapping):
                        walk(f"{prefix}{k}.", v)
                    else:
                        out[f"{prefix}{k}"] = v

            walk("", tomllib.loads(text))
            return {**out, **{f"flag {k}": v for k, v in overrides.items()}}

        try:
            before = flat(snapshot["text"], snapshot["overrides"])
        except (KeyError, tomllib.TOMLDecodeError):
            return None
        now = flat(self.text, self.overrides)
        return next((k for k in sorted(before.keys() | now.keys()) if before.get(k) != now.get(k)), None)

    def fingerprint(self) -> str:
        """A hash of ``snapshot()`` without the path, for refusing to resume a changed config."""
        body = json.dumps({"text": self.text, "overrides": self.overrides}, sort_keys=True, default=str)
        return hashlib.sha256(body.encode()).hexdigest()[:16]


SECTIONS = {
    "data": DataConfig,
    "evaluation": EvaluationConfig,
    "search": SearchConfig,
    "pooled": PooledConfig,
    "acceptance": AcceptanceConfig,
    "output": OutputConfig,
    "runtime": RuntimeConfig,
    "executor": ExecutorConfig,
    "forecast": ForecastConfig,
}
# Keys of earlier releases, and where they live now.
MOVED = {
    "runtime.executor": "executor.name",
    "runtime.workers": "executor.options.workers",
    "runtime.gpus_per_worker": "executor.options.gpus_per_worker",
    "ray": "executor.options (executor = ray)",
    "ray.address": "executor.options.address",
    "ray.max_retries": "executor.options.max_retries",
}


@dataclass(frozen=True)
class Override:
    """A value given on the command line for ``section.field``, with the ``flag`` it came from."""

    value: Any
    flag: str


def _unknown(full: str, key: str, allowed: Any) -> str:
    """The message for an unknown key: where it moved to, else a suggestion."""
    if full in MOVED:
        return f"moved to {MOVED[full]}"
    return f"unknown key {key!r}; {did_you_mean(key, allowed)}"


def output_overrides(root: Path | str | None, flag: str = "--output") -> dict[str, Override]:
    """The overrides of ``--output DIR``: stored configs in DIR/hyperparams, run logs in DIR/runs."""
    if root is None:
        return {}
    root = Path(root).resolve()
    return {
        "output.directory": Override(str(root / "hyperparams"), flag),
        "output.runs": Override(str(root / "runs"), flag),
    }


def _symbols_problem(symbols: list[str] | str) -> str | None:
    """``"all"``, or a non-empty list of distinct symbols (``core.names``)."""
    if symbols == "all":
        return None
    if not isinstance(symbols, list) or not symbols:
        return 'must be "all" or a non-empty list of symbols'
    twice = next((s for i, s in enumerate(symbols) if s in symbols[:i]), None)
    if twice is not None:
        return f"lists {twice!r} twice"
    return next(filter(None, map(symbol_problem, symbols)), None)


def _one_of(value: str, allowed: tuple[str, ...]) -> str | None:
    return None if value in allowed else f"unknown value {value!r}; {did_you_mean(value, allowed)}"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


CHECKS = {
    int: _is_int,
    float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    str: lambda v: isinstance(v, str),
    bool: lambda v: isinstance(v, bool),
    Path: lambda v: isinstance(v, str),
    dict[str, Any]: lambda v: isinstance(v, dict),
    int | str: lambda v: _is_int(v) or isinstance(v, str),
    list[str] | str: lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v)),
    list[float]: lambda v: isinstance(v, list) and all(CHECKS[float](x) for x in v),
}


def _coerce(value: Any, kind: Any, where: str) -> Any:
    """``value`` checked against the annotated ``kind``."""
    if not CHECKS[kind](value):
        name = (
            "a path"
            if kind is Path
            else "a list of numbers"
            if kind == list[float]
            else getattr(kind, "__name__", str(kind).replace(" | ", " or "))
        )
        raise UsageError(f"expected {name}, got {type(value).__name__} {value!r}", where)
    if kind == list[float]:
        return [float(x) for x in value]
    return Path(value) if kind is Path else float(value) if kind is float else value


def _section(cls: type, raw: Any, where: str, flags: Mapping[str, str]) -> Any:
    if not isinstance(raw, Mapping):
        raise UsageError("must be a table", where)
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]

    def at(key: str) -> str:
        return flags.get(key) or f"{where}.{key}"

    for key in raw:
        if key not in names:
            raise UsageError(_unknown(f"{where.rsplit(': ', 1)[-1]}.{key}", key, names), at(key))
    obj = cls(**{k: _coerce(v, hints[k], at(k)) for k, v in raw.items()})
    for key, problem in getattr(obj, "checks", dict)().items():
        if problem:
            raise UsageError(problem, at(key))
    return obj


def _model(name: str, raw: Any, where: str) -> ModelConfig:
    check_model_name(name, where)
    if not isinstance(raw, Mapping):
        raise UsageError("must be a table", where)
    allowed = ("backend", "options", "fixed", "space")
    for key in raw:
        if key not in allowed:
            raise UsageError(f"unknown key {key!r}; {did_you_mean(key, allowed)}", f"{where}.{key}")
    if not isinstance(raw.get("backend"), str):
        raise UsageError('every model needs backend = "<plugin name>" (see `compiled-opt plugins`)', f"{where}.backend")
    for key in ("options", "fixed", "space"):
        if not isinstance(raw.get(key, {}), Mapping):
            raise UsageError("must be a table", f"{where}.{key}")
    space = parse_space(raw["space"], f"{where}.space") if "space" in raw else None
    return ModelConfig(name, raw["backend"], dict(raw.get("options", {})), dict(raw.get("fixed", {})), space)


def load_config(path: Path, overrides: Mapping[str, Any] | None = None, text: str | None = None) -> Config:
    """Read ``path`` (or its recorded ``text``) and apply command-line ``overrides``.

    Keys are ``section.field`` (values plain or ``Override(value, flag)``), ``models`` (a list of
    model names) and ``force``.
    """
    path = Path(path)
    try:
        text = path.read_text() if text is None else text
        raw = tomllib.loads(text)
    except FileNotFoundError:
        raise UsageError("no such config file", str(path)) from None
    except IsADirectoryError:
        raise UsageError("is a folder, not a config file", str(path)) from None
    except OSError as exc:
        raise UsageError(f"cannot read the config file ({exc.strerror or exc})", str(path)) from None
    except UnicodeDecodeError:
        raise UsageError("not a text file (a config file is UTF-8 TOML)", str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"malformed TOML: {exc}", str(path)) from None
    plain = {k: v.value if isinstance(v, Override) else v for k, v in (overrides or {}).items()}
    flags = {k: v.flag for k, v in (overrides or {}).items() if isinstance(v, Override)}
    for key in raw:
        if key not in (*SECTIONS, "models"):
            problem = (
                f"moved to {MOVED[key]}"
                if key in MOVED
                else f"unknown section {key!r}; {did_you_mean(key, (*SECTIONS, 'models'))}"
            )
            raise UsageError(problem, f"{path}: {key}")
    for key, value in plain.items():
        if "." in key:
            *tables, name = key.split(".")
            table = raw
            for part in tables:
                table = table.setdefault(part, {})
            table[name] = value
    sections = {
        name: _section(
            cls,
            raw.get(name, {}),
            f"{path}: {name}",
            {k.split(".", 1)[1]: f for k, f in flags.items() if k.startswith(f"{name}.")},
        )
        for name, cls in SECTIONS.items()
    }
    here = path.parent  # relative paths in the file are relative to the file
    sections["data"] = dataclasses.replace(sections["data"], directory=here / sections["data"].directory)
    out = sections["output"]
    sections["output"] = dataclasses.replace(out, directory=here / out.directory, runs=here / out.runs)
    models_raw = raw.get("models", {})
    if not isinstance(models_raw, Mapping) or not models_raw:
        raise UsageError(
            'define at least one model, e.g. [models.bootstrap] with backend = "bootstrap"', f"{path}: models"
        )
    models = {name: _model(name, m, f"{path}: models.{name}") for name, m in models_raw.items()}
    if plain.get("models"):
        for name in plain["models"]:
            if name not in models:
                raise UsageError(
                    f"unknown model {name!r}; {did_you_mean(name, models)}", flags.get("models", "--model")
                )
        models = {name: models[name] for name in plain["models"]}
    return Config(
        path=path, models=models, force=bool(plain.get("force")), text=text, overrides=plain, flags=flags, **sections
    )
