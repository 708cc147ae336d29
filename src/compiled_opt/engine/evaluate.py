"""Batched evaluation: every run and every window of a config in one call of the backend."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch

from compiled_opt.engine.aggregate import Aggregator
from compiled_opt.engine.backend import ModelBackend
from compiled_opt.engine.data import Series, windows
from compiled_opt.engine.randomness import Draws


@dataclass(frozen=True)
class Evaluation:
    """Errors of one config, ``[run, window]``, averaged over the horizon: ``return_errors`` of the
    predicted return ``(forecast - last_close) / last_close``, ``price_errors`` of the price, and
    ``errors``, those of the scored ``metric`` (``return_errors`` may be left out when that is the metric).

    ``mean`` is the score. ``std`` and ``sem`` are over the per-run means: the Monte
    Carlo spread that more runs reduce. ``window_sd`` / ``window_sem`` are over the run-averaged
    window errors: the spread that more runs do not reduce. ``exact`` evaluations have one run and
    no Monte Carlo spread.
    """

    errors: np.ndarray
    price_errors: np.ndarray
    seeds: tuple[int, ...]
    window_rows: tuple[int, ...]
    latency_s: float
    exact: bool = False
    metric: str = "pct_return_mae"
    return_errors: np.ndarray | None = None

    @property
    def runs(self) -> int:
        return self.errors.shape[0]

    @cached_property
    def per_run(self) -> np.ndarray:
        return self.errors.mean(axis=1)

    @property
    def mean(self) -> float:
        return float(self.errors.mean())

    @property
    def std(self) -> float:
        return float(self.per_run.std(ddof=1)) if self.runs > 1 else 0.0

    @property
    def sem(self) -> float:
        return self.std / np.sqrt(self.runs)

    @property
    def window_sd(self) -> float:
        return float(self.errors.mean(axis=0).std(ddof=1)) if self.errors.shape[1] > 1 else 0.0

    @property
    def window_sem(self) -> float:
        return self.window_sd / np.sqrt(self.errors.shape[1])

    @property
    def price_mae(self) -> float:
        return float(self.price_errors.mean())

    @property
    def pct_return_mae(self) -> float:
        return float((self.errors if self.return_errors is None else self.return_errors).mean())

    def to_dict(self) -> dict[str, Any]:
        """The stored form of this evaluation."""
        return {
            "metric": self.metric,
            "pct_return_mae": self.pct_return_mae,
            "price_mae": self.price_mae,
            "std": self.std,
            "sem": self.sem,
            "window_sd": self.window_sd,
            "per_run": [float(x) for x in self.per_run],
            "num_predictions": int(self.errors.size),
            "latency_s": self.latency_s,
            "exact": self.exact,
            "seeds": list(self.seeds),
        }


class Evaluator:
    """Scores configs of one backend on one symbol's windows, caching ``encode`` by its parameters."""

    def __init__(self, backend: ModelBackend, aggregators: Mapping[str, Aggregator], series: Series,
                 rows: range, horizon: int, metric: str = "pct_return_mae", cache_size: int = 4):
        self.backend = backend
        self.aggregators = aggregators
        self.series = series
        self.rows = rows
        self.horizon = horizon
        self.metric = metric
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple, tuple[Any, Any]] = OrderedDict()

    def _encoded(self, params: Mapping[str, Any]) -> tuple[Any, Any]:
        key = tuple(params[k] for k in self.backend.encode_keys)
        if key not in self._cache:
            batch = windows(self.series, self.rows, self.backend.context_length(params), self.horizon)
            with torch.inference_mode():
                self._cache[key] = (batch, self.backend.encode(batch, params))
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key]

    def __call__(self, params: Mapping[str, Any], seeds: tuple[int, ...]) -> Evaluation:
        """Evaluate ``params`` with one run per seed, all runs in one backend call."""
        start = time.perf_counter()
        batch, state = self._encoded(params)
        aggregator = self.aggregators[params["aggregate"]]
        with torch.inference_mode():
            point = self.backend.exact(state, params, aggregator)
            if point is not None:
                seeds, point = (), point.unsqueeze(0)
            else:
                draws = Draws(tuple(seeds), batch.target_rows, device=self.backend.runtime.device)
                point = aggregator(self.backend.sample(state, params, draws), dim=2)
            point = point.to("cpu", torch.float64)
        last = batch.last_close[None, :, None]
        target = batch.target[None]
        return_errors = ((point - last) / last - (target - last) / last).abs().mean(-1).numpy()
        price_errors = (point - target).abs().mean(-1).numpy()
        return Evaluation(
            errors=return_errors if self.metric == "pct_return_mae" else price_errors,
            price_errors=price_errors,
            seeds=tuple(seeds),
            window_rows=tuple(batch.target_rows.tolist()),
            latency_s=time.perf_counter() - start,
            exact=not seeds,
            metric=self.metric,
            return_errors=return_errors,
        )
