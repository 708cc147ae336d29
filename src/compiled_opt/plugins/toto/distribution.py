"""A mixture of Student-T distributions per window and step: keyed sampling and exact aggregates.

Toto's predictive distribution for one future step is ``sum_k w_k * t(df_k, loc_k, scale_k)``
(its scaler's affine map already folded into ``loc`` and ``scale``); Toto's heads make every
``df_k = 2 + softplus(.) >= 2``, so the gamma shapes below are >= 1 and the means finite.

Sampling uses only ``Draws`` (common random numbers, per-run seeds), on the tensors' device:

- the component by inverting the categorical CDF at one uniform;
- the Student-T variate as ``Z / sqrt(G / a)`` with ``Z`` normal and ``G ~ Gamma(a = df/2)``;
- ``G`` by one Marsaglia-Tsang proposal (accepted with probability >= 0.95 for a >= 1), and for
  the rejected few by inverting the gamma CDF at a uniform recycled from the rejection: exact,
  with four keyed numbers per sample in all.

Exact aggregates work on float64 NumPy copies (SciPy's ``stdtr`` / ``stdtrit``, as gluonts does
for its Student-T CDF): quantiles by safeguarded Newton on the mixture CDF, bracketed by the
components' own quantiles; interval means (``mean``, trimmed means) in closed form from the
Student-T partial expectation ``E[T; T <= z] = -(df + z^2) / (df - 1) * pdf(z)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import special

from compiled_opt.engine.aggregate import Aggregator
from compiled_opt.engine.randomness import Draws

NEWTON_STEPS = 100


@dataclass(frozen=True)
class StudentTMixture:
    """``weights``, ``df``, ``loc``, ``scale``: ``[windows, horizon, components]`` float64 tensors."""

    weights: torch.Tensor
    df: torch.Tensor
    loc: torch.Tensor
    scale: torch.Tensor

    def mean(self) -> torch.Tensor:
        """``[windows, horizon]``: the mean in closed form (finite, since every df > 1)."""
        return (self.weights * self.loc).sum(-1)

    def sample(self, draws: Draws, num_samples: int) -> torch.Tensor:
        """``[runs, windows, num_samples, horizon]`` independent draws per step, keyed by ``draws``."""
        windows, horizon, k = self.weights.shape
        u = draws.uniform("toto.component", num_samples, horizon)
        runs = u.shape[0]
        flat = u.permute(1, 3, 0, 2).reshape(windows, horizon, -1).contiguous()
        pick = torch.searchsorted(self.weights.cumsum(-1).contiguous(), flat).clamp_max(k - 1)
        pick = pick.view(windows, horizon, runs, num_samples).permute(2, 0, 3, 1)
        w = torch.arange(windows, device=pick.device)[None, :, None, None]
        h = torch.arange(horizon, device=pick.device)[None, None, None, :]
        df, loc, scale = self.df[w, h, pick], self.loc[w, h, pick], self.scale[w, h, pick]
        shape = df / 2
        z = draws.normal("toto.student", num_samples, horizon)
        return loc + scale * z * torch.sqrt(shape / _gamma(draws, shape, num_samples, horizon))

    def aggregate(self, aggregator: Aggregator) -> torch.Tensor:
        """``[windows, horizon]``: ``aggregator`` applied to the distribution itself."""
        if aggregator.atoms or aggregator.winsorize:
            return aggregator.exact(self.quantile)
        return self.interval_mean(aggregator.lo, aggregator.hi)

    def quantile(self, u: torch.Tensor) -> torch.Tensor:
        """``[windows, horizon, len(u)]``: the quantiles at probabilities ``u`` (``[M]``, in (0, 1))."""
        return torch.from_numpy(_Exact(self).quantile(u.cpu().numpy().astype(np.float64)))

    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        """``[windows, horizon, M]``: P(X <= x) for ``x`` of shape ``[windows, horizon, M]``."""
        return torch.from_numpy(_Exact(self).cdf(x.cpu().numpy().astype(np.float64)))

    def interval_mean(self, lo: float, hi: float) -> torch.Tensor:
        """``[windows, horizon]``: the mean of the quantile function over [lo, hi], in closed form."""
        exact = _Exact(self)
        inner = [p for p in (lo, hi) if 0.0 < p < 1.0]
        q = exact.quantile(np.array(inner)) if inner else None
        mean = self.mean().cpu().numpy()

        def below(p: float) -> np.ndarray:
            if p <= 0.0:
                return np.zeros_like(mean)
            if p >= 1.0:
                return mean
            return exact.partial_expectation(q[..., inner.index(p)])

        return torch.from_numpy((below(hi) - below(lo)) / (hi - lo))


def _gamma(draws: Draws, shape: torch.Tensor, num_samples: int, horizon: int) -> torch.Tensor:
    """Gamma(shape, 1) draws, shape >= 1: one Marsaglia-Tsang proposal, inversion where it is rejected.

    Given the proposal ``x`` and its rejection, the uniform ``u`` is uniform above the acceptance
    threshold, so ``(u - threshold) / (1 - threshold)`` is a fresh uniform: its gamma quantile is
    an exact draw too, and no further random numbers are needed.
    """
    d = shape - 1.0 / 3.0
    x = draws.normal("toto.gamma.normal", num_samples, horizon)
    u = draws.uniform("toto.gamma.uniform", num_samples, horizon)
    v = (1.0 + x / torch.sqrt(9.0 * d)) ** 3
    positive = v > 0
    log_v = torch.log(torch.where(positive, v, 1.0))
    threshold = torch.where(positive, torch.exp(0.5 * x * x + d - d * v + d * log_v).clamp_max(1.0), 0.0)
    gamma = d * v
    rejected = u >= threshold
    if rejected.any():
        fresh = (u[rejected] - threshold[rejected]) / (1.0 - threshold[rejected])
        gamma[rejected] = gamma_quantile(shape[rejected], fresh.clamp_min(torch.finfo(u.dtype).tiny))
    return gamma


def gamma_quantile(shape: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The Gamma(shape, 1) quantile at ``u``: bracketed Newton in log space on the log of the
    regularised incomplete gamma (its complement above the median), which is nearly linear in both
    tails; started at the larger of the Wilson-Hilferty and the lower-tail approximations."""
    wilson_hilferty = shape * (1 - 1 / (9 * shape) + torch.special.ndtri(u) / (3 * torch.sqrt(shape))) ** 3
    lower_tail = torch.exp((torch.log(u) + torch.lgamma(shape + 1)) / shape)
    y = torch.log(torch.maximum(wilson_hilferty, lower_tail))
    upper = u > 0.5
    sign = torch.where(upper, -1.0, 1.0)
    target = torch.where(upper, torch.log1p(-u), torch.log(u))
    lo, hi = torch.full_like(y, -torch.inf), torch.full_like(y, torch.inf)
    log_norm = torch.lgamma(shape)
    for _ in range(NEWTON_STEPS):
        g = torch.exp(y)
        tail = torch.where(upper, torch.special.gammaincc(shape, g), torch.special.gammainc(shape, g))
        excess = sign * (torch.log(tail) - target)
        lo = torch.where(excess <= 0, y, lo)
        hi = torch.where(excess >= 0, y, hi)
        newton = y - excess * tail / torch.exp(shape * y - g - log_norm)
        bisect = torch.where(torch.isinf(lo), y - 1, torch.where(torch.isinf(hi), y + 1, (lo + hi) / 2))
        step = torch.where((newton >= lo) & (newton <= hi), newton, bisect)
        if bool(((step - y).abs() <= 1e-13).all()):
            return torch.exp(step)
        y = step
    return torch.exp(y)


class _Exact:
    """The mixture as float64 NumPy arrays ``[windows, horizon, 1, components]`` for exact math."""

    def __init__(self, mixture: StudentTMixture):
        def arr(t: torch.Tensor) -> np.ndarray:
            return t.detach().to("cpu", torch.float64).numpy()[..., None, :]

        self.w, self.df, self.loc, self.scale = map(arr, (mixture.weights, mixture.df, mixture.loc, mixture.scale))
        df = self.df
        self.log_norm = special.gammaln((df + 1) / 2) - special.gammaln(df / 2) - 0.5 * np.log(df * np.pi)

    def _z(self, x: np.ndarray) -> np.ndarray:
        return (x[..., None] - self.loc) / self.scale

    def _t_pdf(self, z: np.ndarray) -> np.ndarray:
        return np.exp(self.log_norm - (self.df + 1) / 2 * np.log1p(z * z / self.df))

    def cdf(self, x: np.ndarray) -> np.ndarray:
        return (self.w * special.stdtr(self.df, self._z(x))).sum(-1)

    def pdf(self, x: np.ndarray) -> np.ndarray:
        return (self.w * self._t_pdf(self._z(x)) / self.scale).sum(-1)

    def partial_expectation(self, x: np.ndarray) -> np.ndarray:
        """E[X; X <= x] for ``x`` of shape ``[windows, horizon]``."""
        z = self._z(x[..., None])
        tail = -(self.df + z * z) / (self.df - 1) * self._t_pdf(z)
        return (self.w * (self.loc * special.stdtr(self.df, z) + self.scale * tail)).sum(-1)[..., 0]

    def quantile(self, u: np.ndarray) -> np.ndarray:
        """``[windows, horizon, M]``; the root of cdf(x) = u lies between the components' quantiles."""
        u = np.broadcast_to(u, self.w.shape[:2] + u.shape)
        per_component = self.loc + self.scale * special.stdtrit(self.df, u[..., None])
        lo, hi = per_component.min(-1), per_component.max(-1)
        x = (self.w * per_component).sum(-1)
        for _ in range(NEWTON_STEPS):
            excess = self.cdf(x) - u
            lo = np.where(excess <= 0, x, lo)
            hi = np.where(excess >= 0, x, hi)
            with np.errstate(divide="ignore", invalid="ignore"):
                newton = x - excess / self.pdf(x)
            inside = (newton >= lo) & (newton <= hi)
            step = np.where(inside, newton, (lo + hi) / 2)
            done = np.abs(step - x) <= 4 * np.finfo(np.float64).eps * np.maximum(np.abs(x), self.scale.min(-1))
            x = step
            if done.all():
                break
        return x
