"""Batched evaluation: every run and every window of a config in one call of the backend."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch

from compiled_opt.core.aggregate import Aggregator
from compiled_opt.core.backend import ModelBackend, WindowBatch, check_output
from compiled_opt.core.data import Series, windows
from compiled_opt.core.randomness import Draws

SAMPLE_CACHE_BYTES = 512 * 2**20


@dataclass(frozen=True)
class Evaluation:
    """Errors of one config, ``[run, window]``, averaged over the horizon: ``errors`` of the scored
    ``metric``, ``price_errors`` of the price and ``return_errors`` of the predicted return
    ``(forecast - last_close) / last_close``. ``naive_errors`` ``[window]`` are the errors, in the
    metric, of the persistence forecast (return 0: tomorrow's close is today's) on the same windows.

    ``mean`` is the score. ``std`` and ``sem`` are over the per-run means: the Monte Carlo spread
    that more runs reduce. ``window_sd`` / ``window_sem`` are over the run-averaged window errors:
    the spread that more runs do not reduce. ``exact`` evaluations have one run and no Monte Carlo
    spread. ``window_ids`` name the windows (symbol and row), so two evaluations can be paired.
    """

    errors: np.ndarray
    price_errors: np.ndarray
    seeds: tuple[int, ...]
    window_ids: tuple[int, ...]
    latency_s: float
    exact: bool = False
    metric: str = "pct_return_mae"
    return_errors: np.ndarray | None = None
    naive_errors: np.ndarray | None = None

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

    @property
    def naive_mae(self) -> float | None:
        return None if self.naive_errors is None else float(self.naive_errors.mean())

    @property
    def skill(self) -> float | None:
        """``1 - MAE / naive MAE``: above 0 beats the persistence forecast, 1 is perfect."""
        naive = self.naive_mae
        return None if not naive else 1.0 - self.mean / naive


def naive_errors(batch: WindowBatch, metric: str) -> np.ndarray:
    """``[windows]``: the persistence forecast's errors (the last close, a predicted return of 0)."""
    last = batch.last_close[:, None]
    error = (batch.target - last).abs()
    return (error / last if metric == "pct_return_mae" else error).mean(-1).numpy()


class Evaluator:
    """Scores configs of one backend on one symbol's windows.

    It caches ``encode`` by the backend's ``encode_keys`` and, when ``max_samples`` is given, the
    samples too: for each encode state, seeds and the other sampling parameters, the backend draws
    once at ``max_samples`` and smaller counts take the first samples of that draw (draws are keyed
    by sample index, so that is exactly a smaller draw). Every sample tensor is drawn at the same
    count, so a result never depends on what was cached before.
    """

    def __init__(self, backend: ModelBackend, aggregators: Mapping[str, Aggregator], series: Series,
                 rows: range, horizon: int, metric: str = "pct_return_mae", cache_size: int = 4,
                 name: str = "backend", max_samples: int | None = None):
        self.backend = backend
        self.aggregators = aggregators
        self.series = series
        self.rows = rows
        self.horizon = horizon
        self.metric = metric
        self.cache_size = cache_size
        self.name = name
        self.max_samples = max_samples if backend.samples_param else None
        self._cache: OrderedDict[tuple, tuple[WindowBatch, Any, np.ndarray]] = OrderedDict()
        self._samples: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    def _encoded(self, params: Mapping[str, Any]) -> tuple[WindowBatch, Any, np.ndarray]:
        key = tuple(params[k] for k in self.backend.encode_keys)
        if key not in self._cache:
            batch = windows(self.series, self.rows, self.backend.context_length(params), self.horizon)
            with torch.inference_mode():
                self._cache[key] = (batch, self.backend.encode(batch, params), naive_errors(batch, self.metric))
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key]

    def _samples_for(self, batch: WindowBatch, state: Any, params: Mapping[str, Any],
                     seeds: tuple[int, ...]) -> torch.Tensor:
        """``[runs, windows, n, horizon]`` samples for ``params``, through the sample cache when it holds them."""
        draws = Draws(tuple(seeds), batch.window_ids, device=self.backend.runtime.device)
        count_key = self.backend.samples_param
        if self.max_samples is None or int(params[count_key]) > self.max_samples:
            return self._checked(self.backend.sample(state, params, draws), batch, seeds, params)
        others = tuple(sorted((k, v) for k, v in params.items() if k not in (count_key, "aggregate")))
        key = (others, tuple(seeds))
        if key not in self._samples:
            full = {**params, count_key: self.max_samples}
            self._samples[key] = self._checked(self.backend.sample(state, full, draws), batch, seeds, full)
            while sum(t.numel() * t.element_size() for t in self._samples.values()) > SAMPLE_CACHE_BYTES \
                    and len(self._samples) > 1:
                self._samples.popitem(last=False)
        self._samples.move_to_end(key)
        return self._samples[key][:, :, : int(params[count_key])]

    def _checked(self, samples: Any, batch: WindowBatch, seeds: tuple[int, ...],
                 params: Mapping[str, Any]) -> torch.Tensor:
        count = int(params[self.backend.samples_param]) if self.backend.samples_param else None
        return check_output(self.name, "sample", samples, (len(seeds), len(batch), count, batch.horizon),
                            "[runs, windows, samples, horizon]")

    def __call__(self, params: Mapping[str, Any], seeds: tuple[int, ...]) -> Evaluation:
        """Evaluate ``params`` with one run per seed, all runs in one backend call."""
        start = time.perf_counter()
        batch, state, naive = self._encoded(params)
        aggregator = self.aggregators[params["aggregate"]]
        with torch.inference_mode():
            point = self.backend.exact(state, params, aggregator)
            if point is not None:
                point = check_output(self.name, "exact", point, (len(batch), batch.horizon), "[windows, horizon]")
                seeds, point = (), point.unsqueeze(0)
            else:
                point = aggregator(self._samples_for(batch, state, params, tuple(seeds)), dim=2)
            point = point.to("cpu", torch.float64)
        last = batch.last_close[None, :, None]
        target = batch.target[None]
        return_errors = ((point - last) / last - (target - last) / last).abs().mean(-1).numpy()
        price_errors = (point - target).abs().mean(-1).numpy()
        return Evaluation(
            errors=return_errors if self.metric == "pct_return_mae" else price_errors,
            price_errors=price_errors,
            seeds=tuple(seeds),
            window_ids=tuple(batch.window_ids.tolist()),
            latency_s=time.perf_counter() - start,
            exact=not seeds,
            metric=self.metric,
            return_errors=return_errors,
            naive_errors=naive,
        )


class PooledEvaluator:
    """Scores a config on several symbols' windows together: their errors side by side on the window axis."""

    def __init__(self, evaluators: Sequence[Evaluator]):
        self.evaluators = list(evaluators)

    def __call__(self, params: Mapping[str, Any], seeds: tuple[int, ...]) -> Evaluation:
        parts = [evaluate(params, seeds) for evaluate in self.evaluators]

        def joined(name: str) -> np.ndarray:
            return np.concatenate([getattr(p, name) for p in parts], axis=-1)

        first = parts[0]
        return Evaluation(errors=joined("errors"), price_errors=joined("price_errors"),
                          seeds=max((p.seeds for p in parts), key=len),
                          window_ids=tuple(w for p in parts for w in p.window_ids),
                          latency_s=sum(p.latency_s for p in parts), exact=all(p.exact for p in parts),
                          metric=first.metric, return_errors=joined("return_errors"),
                          naive_errors=joined("naive_errors"))

