"""Every built-in aggregator against a plain numpy reference of its written definition."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from compiled_opt.core.aggregate import builtin_aggregators


def reference(name: str, x: np.ndarray) -> float:
    """The definitions in compiled_opt.core.aggregate, one sample vector at a time."""
    x = np.sort(x)
    n = len(x)
    if name == "mean":
        return x.mean()
    if name == "median":
        return np.median(x)
    if name.startswith("quantile_"):
        return np.quantile(x, float(name.split("_")[1]))
    p = int(name.rsplit("_", 1)[1]) / 100
    k = math.floor(p * n)
    if name.startswith("trimmed_mean_"):
        return x[k:n - k].mean()
    if name.startswith("lower_trimmed_mean_"):
        return x[k:].mean()
    if name.startswith("upper_trimmed_mean_"):
        return x[:n - k].mean()
    if name.startswith("winsorized_mean_"):
        return np.clip(x, x[k], x[n - 1 - k]).mean()
    raise AssertionError(name)


NAMES = [a.name for a in builtin_aggregators()]


def test_all_design_names_are_built_in():
    expected = ({f"trimmed_mean_{p}" for p in (5, 10, 15, 20, 25)} | {f"lower_trimmed_mean_{p}" for p in (10, 15, 20, 25)}
                | {f"upper_trimmed_mean_{p}" for p in (10, 15, 20)}
                | {f"quantile_{q}" for q in ("0.10", "0.15", "0.20", "0.25", "0.30", "0.70", "0.75", "0.80", "0.85", "0.90")}
                | {"mean", "median", "winsorized_mean_5", "winsorized_mean_10"})
    assert set(NAMES) == expected


@pytest.mark.parametrize("aggregator", builtin_aggregators(), ids=NAMES)
@pytest.mark.parametrize("num_samples", [7, 64, 257])
def test_matches_numpy_reference(aggregator, num_samples):
    rng = np.random.default_rng(num_samples)
    x = rng.standard_t(3, size=(2, 4, num_samples, 3))
    got = aggregator(torch.from_numpy(x), dim=2).numpy()
    want = np.apply_along_axis(lambda v: reference(aggregator.name, v), 2, x)
    assert got.shape == (2, 4, 3)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("aggregator", builtin_aggregators(), ids=NAMES)
def test_exact_matches_many_samples(aggregator):
    """The exact L-statistic of a normal equals the aggregate of 10^6 evenly spaced quantiles of it."""
    normal = torch.distributions.Normal(torch.tensor(0.3, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64))
    exact = aggregator.exact(lambda u: normal.icdf(u)[None, :])
    samples = normal.icdf((torch.arange(1_000_000, dtype=torch.float64) + 0.5) / 1_000_000)
    assert float(exact[0]) == pytest.approx(float(aggregator(samples, dim=0)), abs=2e-3)
