"""Group-sequential boundaries: when a one-sided test that looks at growing data may stop.

A statistic ``Z_k`` is computed at looks ``k = 1..K`` after ``n_1 < ... < n_K`` runs; its information
is proportional to the runs, so the information fraction is ``t_k = n_k / n_K``. Under H0 the ``Z_k``
are jointly normal with mean 0 and ``Corr(Z_i, Z_j) = sqrt(n_i / n_j)`` (``i <= j``): the later
statistic contains the earlier one's runs. Alpha spending (Lan & DeMets, 1983) spends a cumulative
``alpha(t_k)`` by look ``k``; boundary ``c_k`` is solved so that crossing first at look ``k`` has
probability ``alpha(t_k) - alpha(t_{k-1})``, the joint normal probabilities from scipy. The overall
probability of ever crossing under H0 is then exactly ``alpha`` whatever happens at the looks that
stop for other reasons (futility stops are non-binding).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import stats as st
from scipy.optimize import brentq

# Cumulative alpha spent by information fraction t (one-sided level a): Lan & DeMets' two families.
SPENDING = {
    # Pocock-type: nearly constant boundaries; early looks get a fair share, so clear cases stop early.
    "pocock": lambda t, a: a * np.log1p((np.e - 1) * t),
    # O'Brien-Fleming-type: almost nothing early, the last boundary close to the fixed-sample one.
    "obrien_fleming": lambda t, a: 2 * st.norm.sf(st.norm.isf(a / 2) / np.sqrt(t)),
}
_Z_CAP = 37.5  # norm.sf(37.5) is about 5e-308, the smallest double's order
_ACCURACY = 1e-6  # absolute error of each joint normal probability (quasi-Monte Carlo, fixed seed)


def stage_runs(first: int, max_runs: int) -> tuple[int, ...]:
    """Runs at each look: ``first``, doubling, then ``max_runs``: (3, 12) -> (3, 6, 12); (3, 10) -> (3, 6, 10)."""
    runs = [first]
    while runs[-1] < max_runs:
        runs.append(min(2 * runs[-1], max_runs))
    return tuple(runs)


def z_equivalent(t: float, df: float) -> float:
    """The normal quantile with the same tail probability as ``t`` under Student's t with ``df`` degrees
    of freedom; beyond double precision's tails (|z| > 37.5) it is capped there."""
    z = st.norm.isf(st.t.sf(t, df)) if t >= 0 else st.norm.ppf(st.t.cdf(t, df))
    return float(np.clip(z, -_Z_CAP, _Z_CAP))


def _below(bounds: list[float], cov: np.ndarray) -> float:
    """P(Z_j < bounds_j for every j) for jointly normal Z with mean 0 and covariance ``cov``."""
    if not bounds:
        return 1.0
    if len(bounds) == 1:
        return float(st.norm.cdf(bounds[0]))
    k = len(bounds)
    return float(
        st.multivariate_normal.cdf(
            bounds,
            mean=np.zeros(k),
            cov=cov[:k, :k],
            abseps=_ACCURACY,
            releps=0,
            maxpts=10**7,
            rng=np.random.default_rng(0),
        )
    )


@dataclass(frozen=True)
class Boundaries:
    """Efficacy boundaries (z scale) of a one-sided group-sequential test at level ``alpha``."""

    runs: tuple[int, ...]
    alpha: float
    spending: str
    efficacy: tuple[float, ...]

    @property
    def fractions(self) -> np.ndarray:
        return np.asarray(self.runs, dtype=float) / self.runs[-1]

    @property
    def correlation(self) -> np.ndarray:
        t = self.fractions
        return np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))

    def spent(self, look: int) -> float:
        """Cumulative alpha spent by look ``look`` (0-based; -1: none)."""
        return 0.0 if look < 0 else float(SPENDING[self.spending](self.fractions[look], self.alpha))

    def futility(self, power: float) -> tuple[float, ...]:
        """Non-binding futility boundaries: stop when the conditional power is below ``power``.

        Conditional power at look k, if the observed trend continues (drift estimated as
        ``Z_k / sqrt(t_k)``), of ending above the last boundary: ``1 - Phi((c_K - Z_k / sqrt(t_k)) /
        sqrt(1 - t_k))``; it is below ``power`` exactly when ``Z_k < sqrt(t_k) (c_K - z_power
        sqrt(1 - t_k))``. ``power = 0`` never stops for futility. The last look has none (it decides).
        """
        if power <= 0:
            return tuple(-np.inf for _ in self.runs[:-1])
        z = st.norm.isf(power)
        return tuple(float(np.sqrt(t) * (self.efficacy[-1] - z * np.sqrt(1 - t))) for t in self.fractions[:-1])

    def p_value(self, look: int, z: float) -> float:
        """The stage-wise ordering p-value of stopping at ``look`` (0-based) with statistic ``z``.

        Alpha spent before ``look`` plus P(no crossing before it, ``Z_look >= z``) under H0: below
        ``alpha`` exactly when ``z`` crosses the boundary, and uniform under H0 if no look stops early
        for futility (futility stops make it conservative).
        """
        cov, before = self.correlation, list(self.efficacy[:look])
        reach = _below(before, cov)
        return float(min(1.0, max(0.0, self.spent(look - 1) + reach - _below(before + [z], cov))))

    def critical_t(self, look: int, df: float) -> float:
        """The boundary of ``look`` as a t statistic with ``df`` degrees of freedom (same tail probability)."""
        return float(st.t.isf(st.norm.sf(self.efficacy[look]), df))


@lru_cache(maxsize=64)
def boundaries(runs: tuple[int, ...], alpha: float, spending: str) -> Boundaries:
    """Solve the efficacy boundaries look by look: P(first crossing at look k) = alpha(t_k) - alpha(t_{k-1})."""
    if spending not in SPENDING:
        raise ValueError(f"spending must be one of {', '.join(map(repr, SPENDING))}, not {spending!r}")
    if not (len(runs) >= 1 and all(0 < a < b for a, b in zip(runs, runs[1:], strict=False)) and runs[0] > 0):
        raise ValueError(f"looks must be increasing positive run counts, not {runs}")
    design = Boundaries(tuple(runs), alpha, spending, ())
    cov, bounds = design.correlation, []
    for look in range(len(runs)):
        share = design.spent(look) - design.spent(look - 1)
        reach = _below(bounds, cov)  # P(no crossing so far)

        def excess(c: float, prior: list[float] = bounds, reach: float = reach, share: float = share) -> float:
            return reach - _below(prior + [c], cov) - share

        bounds.append(float(st.norm.isf(share)) if look == 0 else brentq(excess, -1.0, 10.0, xtol=1e-7))
    return Boundaries(tuple(runs), alpha, spending, tuple(bounds))
