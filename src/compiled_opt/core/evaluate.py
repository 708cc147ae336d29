"""Batched evaluation: every run and every window of a config in one call of the backend."""

from __future__ import annotations

import dataclasses
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np
import torch

from compiled_opt.core.aggregate import Aggregator, aggregate_all, is_l_statistic, quantile
from compiled_opt.core.backend import ModelBackend, WindowBatch, check_output
from compiled_opt.core.data import Series, windows
from compiled_opt.core.metrics import Forecasts, Metric, builtin_metrics
from compiled_opt.core.randomness import Draws

CACHE_BYTES = 4 * 2**30  # encode states (Kronos-base, 250 windows of 320 tokens: ~1.2 GB each) or draws
SAMPLE_CACHE_BYTES = 512 * 2**20  # the draws of an evaluator that shares no caches


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

    An evaluation of every metric (``Evaluator(..., every_metric=True)``) also has ``losses``, each
    registered metric's ``[run, window]``, and ``naive_losses``, the naive forecast's ``[window]``.
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
    losses: Mapping[str, np.ndarray] | None = None
    naive_losses: Mapping[str, np.ndarray] | None = None

    @property
    def nbytes(self) -> int:
        """The bytes of its arrays (window ids counted as int64), for memory-bounded caches."""
        arrays = [
            self.errors,
            self.price_errors,
            self.return_errors,
            self.naive_errors,
            *(self.losses or {}).values(),
            *(self.naive_losses or {}).values(),
        ]
        return sum(a.nbytes for a in arrays if a is not None) + 8 * len(self.window_ids)

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


def naive_forecasts(batch: WindowBatch, levels: Sequence[float] = (), cost: float = 0.0) -> Forecasts:
    """The persistence forecast of ``batch``'s windows (the last close: a predicted return of 0), one run."""
    last, target = batch.last_close.numpy(), batch.target.numpy()
    return Forecasts(
        np.broadcast_to(last[None, :, None], (1, *target.shape)), target, last, levels=tuple(levels), cost=cost
    )


def naive_errors(batch: WindowBatch, metric: Metric) -> np.ndarray:
    """``[windows]``: the persistence forecast's losses in ``metric``."""
    return metric.loss(naive_forecasts(batch))[0]


def forecast_errors(point: torch.Tensor, batch: WindowBatch) -> tuple[np.ndarray, np.ndarray]:
    """The return and price errors ``[..., runs, windows]`` of forecasts ``point`` ``[..., runs, windows,
    horizon]``, averaged over the horizon."""
    point = point.to("cpu", torch.float64).numpy()  # NumPy: ~1 us an operation on these small arrays, torch ~5
    last, target = batch.last_close.numpy()[:, None], batch.target.numpy()
    returns = np.abs((point - last) / last - (target - last) / last).mean(-1)
    return returns, np.abs(point - target).mean(-1)


def tensor_bytes(obj: Any) -> int:
    """The bytes of the tensors and arrays in ``obj``, found through dataclasses, mappings and sequences."""
    if isinstance(obj, (torch.Tensor, np.ndarray, CachedDraw, Evaluation)):
        return obj.nbytes
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    elif isinstance(obj, Mapping):
        obj = list(obj.values())
    return sum(map(tensor_bytes, obj)) if isinstance(obj, (list, tuple)) else 0


def device_memory(device: str) -> int:
    """The bytes of ``device``'s memory: the GPU's, or the machine's RAM."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_properties(torch.device(device)).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class BoundedCache:
    """Values by key, bounded by the bytes of their tensors (``tensor_bytes``, measured when a value is
    made and again by ``measure`` after it grew): the least recently used go first, the newest stays."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.entries: OrderedDict[Hashable, Any] = OrderedDict()
        self.sizes: dict[Hashable, int] = {}
        self.bytes = 0

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The value under ``key``, made by ``make()`` when it is not held."""
        if key not in self.entries:
            self.entries[key], self.sizes[key] = make(), 0
            self.measure(key)
        self.entries.move_to_end(key)
        return self.entries[key]

    def measure(self, key: Hashable) -> None:
        """Count the value under ``key`` at its present size, then drop the oldest values beyond the bound."""
        size = tensor_bytes(self.entries[key])
        self.bytes += size - self.sizes[key]
        self.sizes[key] = size
        while len(self.entries) > 1 and self.bytes > self.max_bytes:
            oldest, _ = self.entries.popitem(last=False)
            self.bytes -= self.sizes.pop(oldest)


@dataclass
class Caches:
    """Encode states and cached draws, each bounded by memory. Evaluators that share one (a worker's jobs,
    a pooled stage's symbols and the same symbols' own searches) share their bound and every state and
    draw they have in common: they must share their aggregators too."""

    states: BoundedCache
    draws: BoundedCache

    @classmethod
    def for_device(cls, device: str) -> Caches:
        """Each cache bounded by ``CACHE_BYTES`` or an eighth of the device's memory, whichever is less."""
        bound = min(CACHE_BYTES, device_memory(device) // 8)
        return cls(BoundedCache(bound), BoundedCache(bound))


class Encoded(NamedTuple):
    """What the encode cache holds for one encode key: the windows, the backend's state, the naive
    forecast's errors and the window ids as a tuple (every evaluation returns them)."""

    batch: WindowBatch
    state: Any
    naive: np.ndarray
    window_ids: tuple[int, ...]


@dataclass
class CachedDraw:
    """One draw at the sample cache's count and, per smaller count served from it, the errors of every
    L-statistic aggregator at once: that count's first samples sorted once and multiplied by the
    aggregators' weight matrix (``aggregate_all``). A point that differs only in the aggregator is a
    lookup; another aggregator (not an L-statistic) is applied to the samples themselves."""

    samples: torch.Tensor
    columns: dict[str, int]
    statistics: tuple[Aggregator, ...]
    tables: dict[int, tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, samples: torch.Tensor, aggregators: Mapping[str, Aggregator]) -> CachedDraw:
        names = [name for name, a in aggregators.items() if is_l_statistic(a)]
        return cls(samples, {name: i for i, name in enumerate(names)}, tuple(aggregators[n] for n in names))

    @property
    def nbytes(self) -> int:
        return self.samples.nbytes + sum(r.nbytes + p.nbytes for r, p in self.tables.values())

    def errors(
        self, count: int, name: str, aggregator: Aggregator, batch: WindowBatch
    ) -> tuple[np.ndarray, np.ndarray]:
        """The return and price errors ``[runs, windows]`` of ``aggregator`` (registered as ``name``) on the
        first ``count`` samples."""
        column = self.columns.get(name)
        if column is None:
            return self.errors_of(count, aggregator, batch)
        if count not in self.tables:
            table = aggregate_all(self.samples[:, :, :count], self.statistics, dim=2)  # [runs, windows, horizon, A]
            self.tables[count] = forecast_errors(table.movedim(-1, 0), batch)
            for array in self.tables[count]:
                array.setflags(write=False)  # shared by every evaluation of this count
        returns, prices = self.tables[count]
        return returns[column], prices[column]

    def errors_of(self, count: int, aggregator: Aggregator, batch: WindowBatch) -> tuple[np.ndarray, np.ndarray]:
        """The errors of ``aggregator`` applied on its own to the first ``count`` samples (a sort each time)."""
        return forecast_errors(aggregator(self.samples[:, :, :count], dim=2), batch)


MAE_METRICS = ("pct_return_mae", "price_mae")  # scored through the sample cache's tables


class Evaluator:
    """Scores configs of one backend on one symbol's windows.

    It caches ``encode`` by the backend's ``encode_keys`` and, when ``max_samples`` is given, the
    samples too: for each encode state, seeds and the other sampling parameters, the backend draws
    once at ``max_samples`` and smaller counts take the first samples of that draw (draws are keyed
    by sample index, so that is exactly a smaller draw), every L-statistic aggregator of a count
    computed at once (``CachedDraw``). Every sample tensor is drawn at the same count, so a result
    never depends on what was cached before. ``caches`` may be shared with other evaluators: entries
    are keyed by the backend, the data (symbol, file, length, rows, horizon, metric) and the parameters.

    ``metric`` (a name in ``metrics``, the registered metrics) is the score. The MAEs go through the
    sample cache's tables; another metric, or ``every_metric`` (every metric and the naive forecast's,
    for the test windows and decisions), through the samples themselves (``core.metrics``), with the
    quantile ``levels`` pinball loss scores and the ``cost`` per trade of the sign strategy.
    """

    def __init__(
        self,
        backend: ModelBackend,
        aggregators: Mapping[str, Aggregator],
        series: Series,
        rows: range,
        horizon: int,
        metric: str = "pct_return_mae",
        caches: Caches | None = None,
        name: str = "backend",
        max_samples: int | None = None,
        metrics: Mapping[str, Metric] | None = None,
        levels: Sequence[float] = (0.1, 0.5, 0.9),
        cost: float = 0.0,
    ):
        self.backend = backend
        self.aggregators = aggregators
        self.series = series
        self.rows = rows
        self.horizon = horizon
        self.metric = metric
        self.metrics = metrics if metrics is not None else {m.name: m for m in builtin_metrics()}
        self.levels, self.cost = tuple(levels), cost
        self.caches = caches or Caches(BoundedCache(CACHE_BYTES), BoundedCache(SAMPLE_CACHE_BYTES))
        self.name = name
        self.max_samples = max_samples if backend.samples_param else None
        self._data = (backend, series.symbol, str(series.path), len(series), rows, horizon, metric)

    def _encoded(self, params: Mapping[str, Any]) -> Encoded:
        def encode() -> Encoded:
            batch = windows(self.series, self.rows, self.backend.context_length(params), self.horizon)
            with torch.inference_mode():
                state = self.backend.encode(batch, params)
            naive = naive_errors(batch, self.metrics[self.metric])
            return Encoded(batch, state, naive, tuple(batch.window_ids.tolist()))

        return self.caches.states.get((*self._data, *(params[k] for k in self.backend.encode_keys)), encode)

    def _draw(
        self, batch: WindowBatch, state: Any, params: Mapping[str, Any], seeds: tuple[int, ...]
    ) -> tuple[torch.Tensor, CachedDraw | None, Hashable]:
        """``params``' samples ``[runs, windows, count, horizon]``, with the cached draw they were cut from
        and its key (``None``: drawn at the config's own count, as the sample cache does not serve it)."""
        draws = Draws(tuple(seeds), batch.window_ids, device=self.backend.runtime.device)
        count_key = self.backend.samples_param
        if self.max_samples is None or int(params[count_key]) > self.max_samples:
            return self._checked(self.backend.sample(state, params, draws), batch, seeds, params), None, None
        full = {**params, count_key: self.max_samples}
        key = (*self._data, tuple(sorted((k, v) for k, v in full.items() if k != "aggregate")), tuple(seeds))

        def draw() -> CachedDraw:
            samples = self.backend.sample(state, full, draws)
            return CachedDraw.of(self._checked(samples, batch, seeds, full), self.aggregators)

        cached = self.caches.draws.get(key, draw)
        return cached.samples[:, :, : int(params[count_key])], cached, key

    def _sampled(
        self, batch: WindowBatch, state: Any, params: Mapping[str, Any], seeds: tuple[int, ...]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The return and price errors ``[runs, windows]`` of ``params``' aggregate of its samples, through
        the sample cache's tables when it serves them."""
        name = params["aggregate"]
        samples, cached, key = self._draw(batch, state, params, seeds)
        if cached is None:
            return forecast_errors(self.aggregators[name](samples, dim=2), batch)
        errors = cached.errors(samples.shape[2], name, self.aggregators[name], batch)
        self.caches.draws.measure(key)
        return errors

    def _checked(
        self, samples: Any, batch: WindowBatch, seeds: tuple[int, ...], params: Mapping[str, Any]
    ) -> torch.Tensor:
        count = int(params[self.backend.samples_param]) if self.backend.samples_param else None
        return check_output(
            self.name,
            "sample",
            samples,
            (len(seeds), len(batch), count, batch.horizon),
            "[runs, windows, samples, horizon]",
        )

    def _forecasts(
        self, batch: WindowBatch, state: Any, params: Mapping[str, Any], seeds: tuple[int, ...]
    ) -> tuple[Forecasts, tuple[int, ...]]:
        """What the metrics see (``core.metrics.Forecasts``), and the seeds (none for exact aggregates)."""
        target, last = batch.target.numpy(), batch.last_close.numpy()
        aggregator = self.aggregators[params["aggregate"]]
        exact = self.backend.exact(state, params, aggregator)
        if exact is not None:

            def quantiles(levels: Sequence[float]) -> np.ndarray:
                values = [self.backend.exact(state, params, quantile(q)) for q in levels]
                return torch.stack(values).to("cpu", torch.float64).numpy()[None]  # [1, levels, windows, horizon]

            point = check_output(self.name, "exact", exact, (len(batch), batch.horizon), "[windows, horizon]")
            return Forecasts(
                point.to("cpu", torch.float64).numpy()[None],
                target,
                last,
                quantile=quantiles,
                levels=self.levels,
                cost=self.cost,
            ), ()
        samples = self._draw(batch, state, params, seeds)[0]
        point = aggregator(samples, dim=2).to("cpu", torch.float64).numpy()
        ordered = np.sort(samples.to("cpu", torch.float64).numpy(), axis=2)
        return Forecasts(point, target, last, samples=ordered, levels=self.levels, cost=self.cost), tuple(seeds)

    def __call__(self, params: Mapping[str, Any], seeds: tuple[int, ...], every_metric: bool = False) -> Evaluation:
        """Evaluate ``params`` with one run per seed, all runs in one backend call."""
        start = time.perf_counter()
        batch, state, naive, window_ids = self._encoded(params)
        losses = naive_losses = None
        with torch.inference_mode():
            if every_metric or self.metric not in MAE_METRICS:
                forecasts, seeds = self._forecasts(batch, state, params, tuple(seeds))
                wanted = self.metrics if every_metric else {n: self.metrics[n] for n in {*MAE_METRICS, self.metric}}
                losses = {name: metric.loss(forecasts) for name, metric in wanted.items()}
                errors, return_errors, price_errors = (losses[n] for n in (self.metric, *MAE_METRICS))
                if every_metric:
                    plain = naive_forecasts(batch, self.levels, self.cost)
                    naive_losses = {name: metric.loss(plain)[0] for name, metric in self.metrics.items()}
                else:
                    losses = None
            else:
                point = self.backend.exact(state, params, self.aggregators[params["aggregate"]])
                if point is not None:
                    point = check_output(self.name, "exact", point, (len(batch), batch.horizon), "[windows, horizon]")
                    seeds = ()
                    return_errors, price_errors = forecast_errors(point.unsqueeze(0), batch)
                else:
                    return_errors, price_errors = self._sampled(batch, state, params, tuple(seeds))
                errors = return_errors if self.metric == "pct_return_mae" else price_errors
        return Evaluation(
            errors=errors,
            price_errors=price_errors,
            seeds=tuple(seeds),
            window_ids=window_ids,
            latency_s=time.perf_counter() - start,
            exact=not seeds,
            metric=self.metric,
            return_errors=return_errors,
            naive_errors=naive,
            losses=losses,
            naive_losses=naive_losses,
        )


class PooledEvaluator:
    """Scores a config on several symbols' windows together: their errors side by side on the window axis."""

    def __init__(self, evaluators: Sequence[Evaluator]):
        self.evaluators = list(evaluators)

    def __call__(self, params: Mapping[str, Any], seeds: tuple[int, ...], every_metric: bool = False) -> Evaluation:
        return joined([evaluate(params, seeds, every_metric) for evaluate in self.evaluators])


def joined(parts: Sequence[Evaluation]) -> Evaluation:
    """Evaluations of one config on several groups of windows as one, their windows side by side in order:
    joining groups that were joined already gives what joining all their parts at once gives."""

    def join(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts], axis=-1)

    def join_losses(name: str) -> dict[str, np.ndarray] | None:
        first = getattr(parts[0], name)
        return (
            None if first is None else {k: np.concatenate([getattr(p, name)[k] for p in parts], axis=-1) for k in first}
        )

    return Evaluation(
        errors=join("errors"),
        price_errors=join("price_errors"),
        seeds=max((p.seeds for p in parts), key=len),
        window_ids=tuple(w for p in parts for w in p.window_ids),
        latency_s=sum(p.latency_s for p in parts),
        exact=all(p.exact for p in parts),
        metric=parts[0].metric,
        return_errors=join("return_errors"),
        naive_errors=join("naive_errors"),
        losses=join_losses("losses"),
        naive_losses=join_losses("naive_losses"),
    )
