"""A mixture of Student-T distributions per window and step: keyed sampling and exact aggregates.

Toto's predictive distribution for one future step is ``sum_k w_k * t(df_k, loc_k, scale_k)``
(its scaler's affine map already folded into ``loc`` and ``scale``); Toto's heads make every
``df_k = 2 + softplus(.) >= 2``, so the means are finite.

Sampling uses only ``Draws`` (common random numbers, per-run seeds), on the tensors' device, and
needs no loop, no rejection and no host synchronisation, so one call is a fixed sequence of kernels:

- the component by inverting the categorical CDF at one uniform;
- the Student-T variate by Bailey's polar method without its rejection step: a point of the
  bivariate Student-T with ``df`` degrees of freedom has a uniform angle and a radius with
  ``P(R^2 > s) = (1 + s / df)^(-df / 2)``, so from uniforms ``w`` and ``a``,
  ``R^2 = df * expm1(-(2 / df) * log(w))`` and ``R * cos(2 pi a)`` is exactly Student-T(df):
  three keyed numbers per sample, monotone in ``w`` (configs with other ``df`` stay paired).

Exact aggregates work on float64 NumPy copies (SciPy's ``stdtr`` / ``stdtrit``, as gluonts does
for its Student-T CDF): quantiles by safeguarded Halley steps on the mixture CDF, bracketed by the
components' own quantiles; interval means (``mean``, trimmed means) in closed form from the
Student-T partial expectation ``E[T; T <= z] = -(df + z^2) / (df - 1) * pdf(z)``, and winsorized
means from them: ``(hi - lo) * interval mean + lo * Q(lo) + (1 - hi) * Q(hi)``. Each aggregate is
computed once per mixture (a search that varies only ``num_samples`` gets it back for free).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import special

from compiled_opt.api import Aggregator, Draws

SOLVER_STEPS = 100


@dataclass(frozen=True)
class StudentTMixture:
    """``weights``, ``df``, ``loc``, ``scale``: ``[windows, horizon, components]`` float64 tensors."""

    weights: torch.Tensor
    df: torch.Tensor
    loc: torch.Tensor
    scale: torch.Tensor
    _aggregates: dict = field(default_factory=dict, init=False, compare=False, repr=False)

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
        return loc + scale * student_t(
            df, draws.uniform("toto.radius", num_samples, horizon), draws.uniform("toto.angle", num_samples, horizon)
        )

    def aggregate(self, aggregator: Aggregator) -> torch.Tensor:
        """``[windows, horizon]``: ``aggregator`` applied to the distribution itself, in closed form
        from the quantiles at its interval's ends and atoms (one solve for all of them)."""
        if aggregator not in self._aggregates:
            self._aggregates[aggregator] = torch.from_numpy(_Exact(self).aggregate(aggregator))
        return self._aggregates[aggregator]

    def quantile(self, u: torch.Tensor) -> torch.Tensor:
        """``[windows, horizon, len(u)]``: the quantiles at probabilities ``u`` (``[M]``, in (0, 1))."""
        return torch.from_numpy(_Exact(self).quantile(u.cpu().numpy().astype(np.float64)))

    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        """``[windows, horizon, M]``: P(X <= x) for ``x`` of shape ``[windows, horizon, M]``."""
        return torch.from_numpy(_Exact(self).cdf(x.cpu().numpy().astype(np.float64)))


def student_t(df: torch.Tensor, w: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Student-T(``df``) variates from uniforms ``w`` and ``angle`` in (0, 1) (Bailey's polar method without
    its rejection step: see the module docstring)."""
    radius = torch.sqrt(df * torch.expm1(torch.log(w) * (-2.0 / df)))
    return radius * torch.cos((2 * torch.pi) * angle)


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

    def aggregate(self, a: Aggregator) -> np.ndarray:
        """``[windows, horizon]``: ``weight`` x (the interval mean over [lo, hi], winsorized: plus the
        clipped tails at the interval's ends) + the atoms, as ``Aggregator`` defines them."""
        ends = [p for p in (a.lo, a.hi) if a.weight and 0.0 < p < 1.0]
        probs = sorted({*ends, *(p for p, _ in a.atoms)})
        q = self.quantile(np.array(probs)) if probs else None
        mean = (self.w * self.loc).sum(-1)[..., 0]

        def at(p: float) -> np.ndarray:
            return q[..., probs.index(p)]

        def below(p: float) -> np.ndarray:
            """E[X; X <= Q(p)]."""
            return np.zeros_like(mean) if p <= 0.0 else mean if p >= 1.0 else self.partial_expectation(at(p))

        total = np.zeros_like(mean)
        if a.weight:
            part = below(a.hi) - below(a.lo)  # (hi - lo) x the interval mean
            if a.winsorize:
                part = part + sum(w * at(p) for p, w in ((a.lo, a.lo), (a.hi, 1.0 - a.hi)) if 0.0 < p < 1.0)
            else:
                part = part / (a.hi - a.lo)
            total = total + a.weight * part
        return total + sum((w * at(p) for p, w in a.atoms), np.zeros_like(mean))

    def partial_expectation(self, x: np.ndarray) -> np.ndarray:
        """E[X; X <= x] for ``x`` of shape ``[windows, horizon]``."""
        z = self._z(x[..., None])
        tail = -(self.df + z * z) / (self.df - 1) * self._t_pdf(z)
        return (self.w * (self.loc * special.stdtr(self.df, z) + self.scale * tail)).sum(-1)[..., 0]

    def quantile(self, u: np.ndarray) -> np.ndarray:
        """``[windows, horizon, M]``: safeguarded Halley steps on cdf(x) = u, inside the bracket of the
        components' own quantiles (the root lies between them), each step only on the unsolved points."""
        u = np.broadcast_to(u, self.w.shape[:2] + u.shape)
        per_component = self.loc + self.scale * special.stdtrit(self.df, u[..., None])
        shape, k = per_component.shape, per_component.shape[-1]

        def flat(a: np.ndarray) -> np.ndarray:
            return np.broadcast_to(a, shape).reshape(-1, k)

        w, df, loc, scale, log_norm = map(flat, (self.w, self.df, self.loc, self.scale, self.log_norm))
        lo, hi = per_component.min(-1).ravel(), per_component.max(-1).ravel()
        x, target = (flat(self.w) * per_component.reshape(-1, k)).sum(-1), u.ravel()
        tol = 4 * np.finfo(np.float64).eps * scale.min(-1)
        todo = np.arange(x.size)
        for _ in range(SOLVER_STEPS):
            i = todo
            z = (x[i, None] - loc[i]) / scale[i]
            density = w[i] * np.exp(log_norm[i] - (df[i] + 1) / 2 * np.log1p(z * z / df[i])) / scale[i]
            excess = (w[i] * special.stdtr(df[i], z)).sum(-1) - target[i]
            lo[i] = np.where(excess <= 0, x[i], lo[i])
            hi[i] = np.where(excess >= 0, x[i], hi[i])
            pdf = density.sum(-1)
            slope = -(density * (df[i] + 1) * z / ((df[i] + z * z) * scale[i])).sum(-1)  # the pdf's derivative
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                newton = excess / pdf
                step = x[i] - newton / (1 - 0.5 * newton * slope / pdf)
            step = np.where((step >= lo[i]) & (step <= hi[i]), step, (lo[i] + hi[i]) / 2)
            done = np.abs(step - x[i]) <= np.maximum(4 * np.finfo(np.float64).eps * np.abs(x[i]), tol[i])
            x[i] = step
            todo = i[~done]
            if not todo.size:
                break
        return x.reshape(shape[:-1])
