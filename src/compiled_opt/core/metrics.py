"""Metrics: how good a forecast is, per run and window, from its point forecast, its distribution and the targets.

Every metric is a loss (lower is better) ``[runs, windows]``; ``shown`` turns a mean loss into the
number people read (a hit rate, a return). Returns are relative to the window's last close:
``r = price / last - 1``. The built-in metrics (``compiled_opt.plugins.metrics`` registers them):

- ``pct_return_mae``: ``mean_h |r_hat - r|``, with ``r_hat`` the point forecast's return (the default
  objective); ``price_mae``: ``mean_h |p_hat - p|``.
- ``crps``: the continuous ranked probability score of the predictive distribution of the return,
  ``E|X - r| - E|X - X'| / 2``. From ``S`` samples (the empirical distribution) it is exact from the
  sorted samples: ``mean_i |x_i - r| - sum_i (2i - S - 1) x_(i) / S^2``; from a quantile function
  (a backend with exact aggregates) it is ``2 * integral_0^1 pinball_u(r, Q(u)) du``, by the midpoint
  rule over ``CRPS_LEVELS`` levels; a point forecast is a distribution of one value: ``|r_hat - r|``.
- ``pinball``: the mean over the configured quantile levels ``q`` of
  ``max(q (r - Q(q)), (q - 1) (r - Q(q)))``.
- ``hit_rate`` (shown as the hit rate; the loss is ``1 - hit``): the next step's direction: 1 when
  the forecast and the outcome have the same sign, 0 when opposite, 1/2 when either is zero.
- ``strategy_return`` (shown as the mean return per row after costs; the loss is its negative): each
  row, hold ``sign(r_hat)`` of the asset for the next step (long, short or flat), paying ``cost`` per
  unit of position change from the previous window's (flat before the first):
  ``sign(r_hat_w) r_w - cost |sign(r_hat_w) - sign(r_hat_{w-1})|``.

Horizons beyond one step average the first three over the steps; the direction and the strategy use
the next step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

CRPS_LEVELS = 99  # levels of the quantile function when a backend gives quantiles, not samples


@dataclass(frozen=True)
class Forecasts:
    """What a metric sees, as float64 NumPy arrays (prices):

    - ``point``: ``[runs, windows, horizon]`` point forecasts;
    - ``samples``: ``[runs, windows, samples, horizon]`` sorted along the samples, or ``None``;
    - ``quantile``: for a backend that knows its predictive distribution (no samples), its quantile
      function: probabilities ``[L]`` -> ``[runs, L, windows, horizon]``; else ``None``;
    - ``target``: ``[windows, horizon]``; ``last``: ``[windows]`` the last closes;
    - ``levels``: the quantile levels ``pinball`` scores; ``cost``: per unit of position change.

    Without samples or a quantile function (the naive forecast) the distribution is the point itself.
    """

    point: np.ndarray
    target: np.ndarray
    last: np.ndarray
    samples: np.ndarray | None = None
    quantile: Callable[[Sequence[float]], np.ndarray] | None = None
    levels: tuple[float, ...] = (0.1, 0.5, 0.9)
    cost: float = 0.0

    def returns(self, prices: np.ndarray, axis_windows: int) -> np.ndarray:
        """``prices`` as returns on each window's last close (windows on ``axis_windows``)."""
        shape = [1] * prices.ndim
        shape[axis_windows] = -1
        return prices / self.last.reshape(shape) - 1

    @property
    def point_return(self) -> np.ndarray:
        return self.returns(self.point, 1)

    @property
    def target_return(self) -> np.ndarray:
        return self.target / self.last[:, None] - 1


@dataclass(frozen=True)
class Metric:
    """A loss ``[runs, windows]`` (lower is better) and how people read its mean (``shown``)."""

    name: str
    loss: Callable[[Forecasts], np.ndarray]
    label: str
    shown: Callable[[float], float] = float
    higher_is_better: bool = False


def order_quantile(sorted_samples: np.ndarray, q: float, axis: int) -> np.ndarray:
    """Quantile ``q`` of samples sorted along ``axis``, interpolating between order statistics (as
    ``numpy.quantile``'s default and ``core.aggregate``)."""
    n = sorted_samples.shape[axis]
    h = (n - 1) * q
    lo = int(np.floor(h))
    hi = min(lo + 1, n - 1)
    low, high = np.take(sorted_samples, lo, axis), np.take(sorted_samples, hi, axis)
    return low + (h - lo) * (high - low)


def pinball(target: np.ndarray, forecast: np.ndarray, q: float) -> np.ndarray:
    """The quantile (pinball) loss of ``forecast`` as quantile ``q`` of ``target``."""
    diff = target - forecast
    return np.maximum(q * diff, (q - 1) * diff)


def pct_return_mae(f: Forecasts) -> np.ndarray:
    return np.abs(f.point_return - f.target_return[None]).mean(-1)


def price_mae(f: Forecasts) -> np.ndarray:
    return np.abs(f.point - f.target[None]).mean(-1)


def crps(f: Forecasts) -> np.ndarray:
    y = f.target_return
    if f.samples is not None:
        x = f.returns(f.samples, 1)  # [runs, windows, samples, horizon], sorted
        n = x.shape[2]
        spread = ((2 * np.arange(1, n + 1) - n - 1)[None, None, :, None] * x).sum(2) / n**2
        return (np.abs(x - y[None, :, None, :]).mean(2) - spread).mean(-1)
    if f.quantile is not None:
        levels = crps_levels()
        u = np.asarray(levels)[None, :, None, None]
        return 2 * pinball(y[None, None], f.returns(f.quantile(levels), 2), u).mean(1).mean(-1)
    return pct_return_mae(f)


def pinball_loss(f: Forecasts) -> np.ndarray:
    y = f.target_return
    if f.samples is not None:
        x = f.returns(f.samples, 1)
        at = [order_quantile(x, q, 2) for q in f.levels]  # each [runs, windows, horizon]
    elif f.quantile is not None:
        at = list(np.moveaxis(f.returns(f.quantile(f.levels), 2), 1, 0))
    else:
        at = [f.point_return] * len(f.levels)  # a point forecast: every quantile is the point
    return np.mean([pinball(y[None], a, q) for a, q in zip(at, f.levels, strict=True)], axis=0).mean(-1)


def hit_loss(f: Forecasts) -> np.ndarray:
    agree = np.sign(f.point_return[..., 0]) * np.sign(f.target_return[None, :, 0])  # 1, -1 or 0
    return 1 - (agree + 1) / 2


def strategy_loss(f: Forecasts) -> np.ndarray:
    position = np.sign(f.point_return[..., 0])  # [runs, windows]
    before = np.concatenate([np.zeros_like(position[:, :1]), position[:, :-1]], axis=1)
    return -(position * f.target_return[None, :, 0] - f.cost * np.abs(position - before))


def builtin_metrics() -> list[Metric]:
    """Every built-in metric (see the module docstring)."""
    return [
        Metric("pct_return_mae", pct_return_mae, "MAE of the predicted return"),
        Metric("price_mae", price_mae, "MAE of the predicted price"),
        Metric("crps", crps, "CRPS of the predicted return's distribution"),
        Metric("pinball", pinball_loss, "pinball loss at the forecast quantiles"),
        Metric("hit_rate", hit_loss, "share of rows whose direction the forecast got right", lambda m: 1 - m, True),
        Metric(
            "strategy_return",
            strategy_loss,
            "mean return per row of a long/short sign strategy, after costs",
            lambda m: 0.0 - m,
            True,
        ),  # 0.0 - m: no -0 for the flat naive forecast
    ]


def crps_levels() -> tuple[float, ...]:
    """The midpoints of ``CRPS_LEVELS`` equal slices of (0, 1)."""
    return tuple((k + 0.5) / CRPS_LEVELS for k in range(CRPS_LEVELS))


def losses(metrics: Sequence[Metric], forecasts: Forecasts) -> dict[str, np.ndarray]:
    """Every metric's loss ``[runs, windows]``."""
    return {m.name: m.loss(forecasts) for m in metrics}
