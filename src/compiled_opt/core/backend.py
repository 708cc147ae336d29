"""The model-backend interface: a deterministic, cached ``encode`` and a cheap, batched ``sample``."""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from compiled_opt.core.aggregate import Aggregator
from compiled_opt.core.randomness import Draws

FEATURES = ("open", "high", "low", "close", "volume", "amount")


@dataclass(frozen=True)
class Runtime:
    """Where and how models run: ``device`` (cpu / cuda), ``compile`` mode, ``dtype``."""

    device: str = "cpu"
    compile: str = "none"
    dtype: torch.dtype = torch.float32

    def maybe_compile(self, module: torch.nn.Module) -> Any:
        """``module`` under ``torch.compile`` with this runtime's mode, or as it is for ``none``."""
        if self.compile == "none":
            return module
        return torch.compile(module, mode=None if self.compile == "default" else self.compile)


@dataclass(frozen=True)
class WindowBatch:
    """All windows of one symbol and split, stacked on the batch axis.

    Window ``i`` forecasts rows ``target_rows[i] .. + horizon - 1`` from the ``context`` rows
    just before them; it never sees its own targets.

    - ``context``: ``[W, L, 6]`` float64, columns ``FEATURES`` (amount = close * volume if absent)
    - ``context_time`` / ``target_time``: ``[W, L]`` / ``[W, H]`` int64 epoch seconds
    - ``target``: ``[W, H]`` float64 closes to forecast; ``last_close``: ``[W]``
    - ``target_rows``: ``[W]`` int64 absolute row numbers of the first target
    - ``window_ids``: ``[W]`` int64 keys of the windows' random draws: the symbol and the row, so a
      window draws the same numbers whichever windows it is evaluated with, and symbols never share

    ``stack`` puts several symbols' batches on one batch axis (``ids`` then keeps each window's key).
    """

    symbol: str
    context: torch.Tensor
    context_time: torch.Tensor
    target: torch.Tensor
    target_time: torch.Tensor
    target_rows: torch.Tensor
    ids: torch.Tensor | None = None

    @classmethod
    def stack(cls, batches: Sequence[WindowBatch]) -> WindowBatch:
        """The windows of ``batches`` (equal context length and horizon) as one batch, each keeping its key."""

        def cat(name: str) -> torch.Tensor:
            return torch.cat([getattr(b, name) for b in batches])

        return cls(
            ",".join(b.symbol for b in batches),
            cat("context"),
            cat("context_time"),
            cat("target"),
            cat("target_time"),
            cat("target_rows"),
            cat("window_ids"),
        )

    @property
    def last_close(self) -> torch.Tensor:
        return self.context[:, -1, FEATURES.index("close")]

    @property
    def horizon(self) -> int:
        return self.target.shape[1]

    @property
    def window_ids(self) -> torch.Tensor:
        if self.ids is not None:
            return self.ids
        return self.target_rows + ((zlib.crc32(self.symbol.encode()) & 0x7FFFFFFF) << 32)

    def __len__(self) -> int:
        return self.context.shape[0]


class ModelBackend(ABC):
    """A forecaster whose sampling hyperparameters compiled-opt tunes.

    Subclasses are registered with ``register(name, cls)`` from the
    ``compiled_opt_register_backends`` hook and built as ``cls(runtime, **options)``, the
    options coming from the model's ``options`` table in the config.

    Class attributes:

    - ``defaults``: every tunable parameter and its default value (``aggregate`` included);
      any other name in a config is an error. With the model's ``fixed`` table they are the
      model's own configuration: the first incumbent and the baseline of every out-of-sample report.
    - ``default_space``: the search space used when a config gives none, in config form
      (e.g. ``{"aggregate": {"choice": [...]}}``).
    - ``encode_keys``: the parameters ``encode`` depends on; the engine caches its result by them,
      so a trial that changes only sampling parameters never encodes again.
    - ``context_param``: the parameter holding the context length, which the config's
      ``data.context_length`` sets (``None``: the backend has none).
    - ``samples_param``: the parameter holding the number of samples (``None``: none). Draws are
      keyed by sample index, so the first n samples of a larger draw are an n-sample draw: the
      engine draws once at the largest count and serves smaller counts from it.
    - ``max_horizon``: the longest ``data.horizon`` the backend forecasts (``None``: any); the run
      checks it with the other inputs, before any work.

    Optional capabilities, declared here so the engine never guesses:

    - ``fast_dtype``: the lowest precision whose ``pct_return_mae`` was measured to agree with
      float32 within ``run.fast.DTYPE_TOLERANCE``; fast mode uses it (default ``"float32"``).
    - ``random_checkpoint``: ``None``, or a static method ``(directory, size, seed) -> options``
      writing a random-initialised checkpoint through the backend's own loader's format
      (``compiled-opt checkpoint random``; ``size`` is ``tiny``, ``small`` or ``base``).

    - ``for_benchmarks``: a backend that forecasts nothing real (e.g. ``latency``); ``compiled-opt plugins``
      labels it so.

    ``check`` and ``context_length`` are class methods: the run calls them on every configured
    value before any model is loaded.
    """

    defaults: Mapping[str, Any] = {}
    default_space: Mapping[str, Mapping[str, Any]] = {}
    encode_keys: tuple[str, ...] = ()
    context_param: str | None = None
    samples_param: str | None = None
    max_horizon: int | None = None
    fast_dtype: str = "float32"
    random_checkpoint: Callable[[Path, str, int], dict[str, Any]] | None = None
    for_benchmarks: bool = False

    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    @classmethod  # noqa: B027 (optional: a backend may check nothing)
    def check(cls, params: Mapping[str, Any]) -> None:
        """Raise ``ValueError("key: reason")`` for a value this backend cannot use."""

    @classmethod
    def unused(cls, params: Mapping[str, Any]) -> frozenset[str]:
        """Parameters that have no effect under ``params`` (e.g. a sample count when aggregates are exact):
        a model that fixes what decides it neither searches them nor stores them."""
        return frozenset()

    @classmethod
    @abstractmethod
    def context_length(cls, params: Mapping[str, Any]) -> int:
        """How many rows of history each window needs under ``params``."""

    @abstractmethod
    def encode(self, batch: WindowBatch, params: Mapping[str, Any]) -> Any:
        """The deterministic, expensive part: one batched pass over all windows of ``batch``."""

    @abstractmethod
    def sample(self, state: Any, params: Mapping[str, Any], draws: Draws) -> torch.Tensor:
        """Forecast samples of the closes, ``[runs, windows, samples, horizon]``, for every run at once.

        All randomness comes from ``draws`` so that runs are reproducible and configs share draws.
        """

    def exact(self, state: Any, params: Mapping[str, Any], aggregator: Aggregator) -> torch.Tensor | None:
        """The aggregate of the predictive distribution itself, ``[windows, horizon]``, or ``None``.

        A backend that returns a tensor here for some ``params`` has no Monte Carlo noise
        for them: the engine evaluates one run and reports zero spread.
        """
        return None


class ContractError(RuntimeError):
    """A backend returned something its interface does not allow (wrong shape or dtype)."""


def check_output(name: str, method: str, out: Any, shape: tuple[int | None, ...], dims: str) -> torch.Tensor:
    """``out`` if it is a floating tensor of ``shape`` (``None``: any size); else a ``ContractError``
    naming the backend, the method and the expected dimensions."""
    expected = "[" + ", ".join("any" if n is None else str(n) for n in shape) + "]"
    if not isinstance(out, torch.Tensor):
        raise ContractError(
            f"backend {name!r}: {method} returned {type(out).__name__}, expected a tensor {dims} = {expected}"
        )
    if out.dim() != len(shape) or any(n is not None and n != m for n, m in zip(shape, out.shape, strict=True)):
        raise ContractError(
            f"backend {name!r}: {method} returned shape {list(out.shape)}, expected {dims} = {expected}"
        )
    if not out.is_floating_point():
        raise ContractError(f"backend {name!r}: {method} returned dtype {out.dtype}, expected a floating dtype")
    return out
