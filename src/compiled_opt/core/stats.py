"""Paired statistics of evaluations scored on the same windows with the same seeds (common random numbers)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from compiled_opt.core.evaluate import Evaluation


def paired_differences(challenger: Evaluation, incumbent: Evaluation) -> np.ndarray:
    """``incumbent.errors - challenger.errors``, ``[runs, windows]``; an exact side is broadcast over runs.

    Only evaluations of the same windows with the same seeds pair (common random numbers).
    """
    if challenger.window_ids != incumbent.window_ids:
        raise ValueError("challenger and incumbent were scored on different windows; they cannot be paired")
    if challenger.seeds and incumbent.seeds and challenger.seeds != incumbent.seeds:
        raise ValueError("challenger and incumbent were scored with different seeds; they cannot be paired")
    a, b = incumbent.errors, challenger.errors
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise ValueError(f"cannot pair {b.shape[0]} challenger runs with {a.shape[0]} incumbent runs")
    return a - b


def window_standard_error(per_window: np.ndarray) -> float | None:
    """The standard error of the mean of paired per-window differences, treating windows as
    exchangeable draws (``W - 1`` degrees of freedom); ``None`` with fewer than 2 windows."""
    if per_window.size < 2:
        return None
    return float(per_window.std(ddof=1) / np.sqrt(per_window.size))


def mc_standard_error(d: np.ndarray) -> tuple[float, float] | None:
    """The Monte Carlo standard error of ``d.mean()`` and its Welch-Satterthwaite degrees of freedom.

    Keyed draws are independent across runs and across windows, so Var(mean d) = sum_w var_w / (R W^2),
    each window's variance over the R runs estimated and pooled. ``None`` with fewer than 2 runs.
    """
    runs, width = d.shape
    if runs < 2:
        return None
    var_w = d.var(axis=0, ddof=1)
    total = var_w.sum()
    df = total**2 / ((var_w**2).sum() / (runs - 1)) if total > 0 else float(width * (runs - 1))
    return float(np.sqrt(total / (runs * width**2))), float(df)


@dataclass(frozen=True)
class Across:
    """Per-symbol relative changes of MAE (negative: better) summarised across symbols.

    ``mean`` and ``sem`` (``None`` for one symbol) are sensitive to one symbol far off; ``median`` and the
    ``trimmed`` mean (the lowest and highest ``TRIM`` of the changes cut) are not. ``sign_p`` is the
    two-sided sign test of "better" against "worse" (ties left out): how surprising the count is if
    tuning made no difference.
    """

    n: int
    better: int
    worse: int
    mean: float
    sem: float | None
    median: float
    trimmed: float
    sign_p: float

    TRIM = 0.1

    @classmethod
    def of(cls, changes: Sequence[float]) -> Across | None:
        x = np.asarray(changes, dtype=float)
        if not x.size:
            return None
        from scipy import stats as st

        better, worse = int((x < 0).sum()), int((x > 0).sum())
        sign_p = float(st.binomtest(better, better + worse).pvalue) if better + worse else 1.0
        return cls(
            n=int(x.size),
            better=better,
            worse=worse,
            mean=float(x.mean()),
            sem=float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else None,
            median=float(np.median(x)),
            trimmed=float(st.trim_mean(x, cls.TRIM)),
            sign_p=sign_p,
        )
