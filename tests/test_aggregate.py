"""Every built-in aggregator against a plain numpy reference of its written definition."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from compiled_opt.core.aggregate import Aggregator, aggregate_all, builtin_aggregators, is_l_statistic


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
        return x[k : n - k].mean()
    if name.startswith("lower_trimmed_mean_"):
        return x[k:].mean()
    if name.startswith("upper_trimmed_mean_"):
        return x[: n - k].mean()
    if name.startswith("winsorized_mean_"):
        return np.clip(x, x[k], x[n - 1 - k]).mean()
    raise AssertionError(name)


NAMES = [a.name for a in builtin_aggregators()]


def test_all_design_names_are_built_in():
    quantiles = ("0.10", "0.15", "0.20", "0.25", "0.30", "0.70", "0.75", "0.80", "0.85", "0.90")
    expected = (
        {f"trimmed_mean_{p}" for p in (5, 10, 15, 20, 25)}
        | {f"lower_trimmed_mean_{p}" for p in (10, 15, 20, 25)}
        | {f"upper_trimmed_mean_{p}" for p in (10, 15, 20)}
        | {f"quantile_{q}" for q in quantiles}
        | {"mean", "median", "winsorized_mean_5", "winsorized_mean_10"}
    )
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


MIXED = Aggregator("mixed", lo=0.1, hi=0.8, weight=0.6, atoms=((0.5, 0.3), (0.95, 0.1)))
WINSOR_MIXED = Aggregator("winsor_mixed", lo=0.2, hi=0.9, weight=0.5, atoms=((0.3, 0.5),), winsorize=True)


def test_a_mixed_aggregator_is_its_weighted_interval_plus_its_atoms():
    """``weight`` x the interval part + the atoms, as the module docstring defines (and ``exact`` computes)."""
    x = np.random.default_rng(0).standard_normal((5, 101))
    got = MIXED(torch.from_numpy(x), dim=-1).numpy()
    s = np.sort(x, axis=-1)
    want = 0.6 * s[:, 10 : 101 - 20].mean(-1) + 0.3 * np.quantile(x, 0.5, axis=-1) + 0.1 * np.quantile(x, 0.95, axis=-1)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    got = WINSOR_MIXED(torch.from_numpy(x), dim=-1).numpy()
    want = 0.5 * np.clip(x, s[:, 20:21], s[:, 90:91]).mean(-1) + 0.5 * np.quantile(x, 0.3, axis=-1)
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("num_samples", [1, 2, 7, 64, 257, 1000])
def test_weights_are_the_aggregators_on_sorted_samples(num_samples):
    """Each aggregator's weights sum to 1 and, dotted with the sorted samples, give its value."""
    x = np.random.default_rng(num_samples).standard_t(3, size=(6, num_samples))
    for a in [*builtin_aggregators(), MIXED, WINSOR_MIXED]:
        w = a.weights(num_samples)
        assert w.shape == (num_samples,) and w.sum() == pytest.approx(1.0, rel=1e-12)
        np.testing.assert_allclose(
            np.sort(x, axis=-1) @ w, a(torch.from_numpy(x), dim=-1).numpy(), rtol=0, atol=1e-12 * np.abs(x).max()
        )


@pytest.mark.parametrize("shape", [(1, 1, 7, 1), (3, 30, 64, 1), (2, 4, 257, 3), (3, 5, 4096, 2)])
@pytest.mark.parametrize("offset", [0.0, 100.0])
def test_aggregate_all_equals_each_aggregator(shape, offset):
    """All aggregators from one sort and one matrix product equal each aggregator applied on its own, to
    1e-12 of the samples' magnitude: the sums run in another order (BLAS), so not bit for bit; around 0
    (offset 0) a relative error of the result itself would be unbounded, hence the samples' scale."""
    x = torch.from_numpy(offset + np.random.default_rng(shape[2]).standard_t(3, size=shape))
    aggregators = [*builtin_aggregators(), MIXED, WINSOR_MIXED]
    table = aggregate_all(x, aggregators, dim=2)
    assert table.shape == (*shape[:2], shape[3], len(aggregators)) and table.dtype == torch.float64
    for i, a in enumerate(aggregators):
        torch.testing.assert_close(table[..., i], a(x, dim=2), rtol=0, atol=1e-12 * float(x.abs().max()), msg=a.name)


def test_only_unmodified_aggregators_count_as_l_statistics():
    class Overridden(Aggregator):
        def __call__(self, samples, dim=-2):
            return samples.amax(dim)

    assert is_l_statistic(MIXED) and is_l_statistic(builtin_aggregators()[0])
    assert not is_l_statistic(Overridden("max")) and not is_l_statistic(lambda samples, dim: samples.amax(dim))
