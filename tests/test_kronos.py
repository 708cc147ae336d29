"""The kronos backend against the kronos-finance package itself, on small random-initialised models
saved and re-loaded with the package's own ``save_pretrained`` / ``from_pretrained``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from compiled_opt.core.backend import FEATURES, Runtime
from compiled_opt.core.data import splits, windows
from compiled_opt.core.errors import UsageError
from compiled_opt.core.evaluate import Evaluator
from compiled_opt.core.randomness import Draws, derive_seeds
from compiled_opt.core.registry import Plugins
from compiled_opt.plugins.backends.kronos import KronosBackend, gumbel_pick, time_features
from compiled_opt.plugins.backends.kronos.checkpoint import MODELS, random_modules, write_random

CONTEXT = 32
PARAMS = {**KronosBackend.defaults, "max_context": CONTEXT, "sample_count": 64, "clip": 3.0}


@pytest.fixture(scope="module")
def package():
    return pytest.importorskip("kronos_finance._vendor.kronos_model")


@pytest.fixture(scope="module")
def saved(package, tmp_path_factory):
    """A tiny random checkpoint written with save_pretrained, and the same modules built again from
    its seed (dropout on, as the package leaves it)."""
    dirs = write_random(tmp_path_factory.mktemp("kronos"), "tiny", seed=0)
    tokenizer, model = random_modules("tiny", seed=0)
    return {"tokenizer": tokenizer, "model": model, "dirs": dirs}


@pytest.fixture(scope="module")
def backend(saved):
    return KronosBackend(Runtime(), **saved["dirs"])


@pytest.fixture(scope="module")
def batch(app_series):
    return windows(app_series, splits(len(app_series), 30, 20, 1).validation[-8:], CONTEXT, 1)


def predictor_inputs(batch, i: int):
    """Window ``i`` as a user hands it to ``KronosPredictor`` (no amount column: the predictor fills it)."""
    import pandas as pd

    df = pd.DataFrame(batch.context[i, :, :5].numpy(), columns=FEATURES[:5])
    return (
        df,
        pd.Series(pd.to_datetime(batch.context_time[i].numpy(), unit="s")),
        pd.Series(pd.to_datetime(batch.target_time[i].numpy(), unit="s")),
    )


def test_plugin_imports_without_the_package_and_registers():
    code = "import sys, compiled_opt.plugins.backends.kronos; print('kronos_finance' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert Plugins.load().backends.get("kronos") is KronosBackend


def test_missing_package_is_a_one_line_usage_error(monkeypatch):
    for name in [n for n in sys.modules if n.startswith("kronos_finance")] + ["kronos_finance"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(UsageError, match=r"pip install 'compiled-opt\[kronos\]'") as info:
        KronosBackend(Runtime())
    assert "\n" not in str(info.value)


def built(**options):
    """The backend as a run builds it: options errors are reported against the model's options table."""
    return Plugins.load().backends.build("kronos", options, "f.toml: models.k.options", Runtime())


def test_missing_weights_are_one_line_usage_errors(saved, tmp_path):
    with pytest.raises(UsageError, match="`hf download compiled-opt-tests/not-cached`") as info:
        built(model="compiled-opt-tests/not-cached", tokenizer=saved["dirs"]["tokenizer"])
    assert "\n" not in str(info.value) and info.value.where == "f.toml: models.k.options.model"
    with pytest.raises(UsageError, match="has no config.json"):
        built(model=str(tmp_path), tokenizer=saved["dirs"]["tokenizer"])
    (tmp_path / "config.json").write_text((Path(saved["dirs"]["model"]) / "config.json").read_text())
    with pytest.raises(UsageError, match="has no model.safetensors"):
        built(model=str(tmp_path), tokenizer=saved["dirs"]["tokenizer"])


def test_missing_tokenizer_and_model_are_reported_together_with_one_hint(saved):
    """Both problems in one line, and the download command spelled as Toto's."""
    with pytest.raises(UsageError) as info:
        built(model="compiled-opt-tests/no-model", tokenizer="compiled-opt-tests/no-tokenizer")
    message = str(info.value)
    assert "\n" not in message
    assert "kronos tokenizer 'compiled-opt-tests/no-tokenizer'" in message
    assert "kronos model 'compiled-opt-tests/no-model'" in message
    assert "`hf download compiled-opt-tests/no-tokenizer` and `hf download compiled-opt-tests/no-model`" in message
    assert message.count("where there is network access") == 1 and "huggingface-cli" not in message


def test_corrupt_weights_are_a_usage_error(saved, tmp_path):
    (tmp_path / "config.json").write_text((Path(saved["dirs"]["model"]) / "config.json").read_text())
    (tmp_path / "model.safetensors").write_text("not weights")
    with pytest.raises(UsageError, match=f"cannot load the kronos model in {tmp_path}"):
        built(model=str(tmp_path), tokenizer=saved["dirs"]["tokenizer"])


def test_loads_saved_weights_in_eval_mode(saved, backend):
    for name in ("model", "tokenizer"):
        loaded, original = getattr(backend, name), saved[name]
        assert not any(m.training for m in loaded.modules())
        for key, value in original.state_dict().items():
            torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("temperature", 0.0, "temperature: must be > 0"),
        ("temperature", -0.1, "temperature: must be > 0"),
        ("top_p", 0.0, "top_p: must be in"),
        ("top_p", 1.5, "top_p: must be in"),
        ("top_k", -1, "top_k: must be >= 0"),
        ("sample_count", 0, "sample_count: must be at least 1"),
        ("max_context", 1, "max_context: must be at least 2"),
        ("clip", 0.0, "clip: must be > 0"),
    ],
)
def test_check_rejects_bad_values(backend, key, value, message):
    backend.check(KronosBackend.defaults)
    with pytest.raises(ValueError, match=message):
        backend.check({**KronosBackend.defaults, key: value})


def test_time_features_are_the_predictors(package):
    import pandas as pd

    seconds = torch.tensor([0, 1_700_000_000, 1_709_251_199, 1_709_251_200, 951_782_400, 4_102_444_799])
    seconds = torch.cat([seconds, torch.randint(0, 4_000_000_000, (500,), generator=torch.Generator().manual_seed(1))])
    expected = package.kronos.calc_time_stamps(pd.Series(pd.to_datetime(seconds.numpy(), unit="s"))).values
    np.testing.assert_array_equal(time_features(seconds).numpy(), expected.astype(np.float32))


def test_backend_feeds_the_model_what_the_predictor_feeds(package, backend, batch, monkeypatch):
    seen = {"encode": [], "decode_s1": []}

    def recording(obj, name):
        original = getattr(obj, name)

        def call(*args, **kwargs):
            seen[name].append([a.clone() for a in args])  # the package mutates its token buffers later
            return original(*args, **kwargs)

        monkeypatch.setattr(obj, name, call)

    recording(backend.tokenizer, "encode")
    recording(backend.model, "decode_s1")
    backend.encode(batch, PARAMS)
    (x,), (s1, s2, stamp) = seen["encode"][0], seen["decode_s1"][0]
    predictor = package.KronosPredictor(
        backend.model, backend.tokenizer, device="cpu", max_context=CONTEXT, clip=PARAMS["clip"]
    )
    for i in range(len(batch)):
        seen = {"encode": [], "decode_s1": []}
        predictor.predict(*predictor_inputs(batch, i), pred_len=1, top_k=1, sample_count=1, verbose=False)
        (px,), (ps1, ps2, pstamp) = seen["encode"][0], seen["decode_s1"][0]
        torch.testing.assert_close(x[i], px[0], rtol=0, atol=2e-6)
        assert torch.equal(stamp[i], pstamp[0])
        assert torch.equal(s1[i], ps1[0]) and torch.equal(s2[i], ps2[0])


@pytest.mark.parametrize("symbol", ["APP", "NU"])
def test_greedy_forecast_equals_auto_regressive_inference(package, backend, market_dir, symbol):
    """top_k = 1 makes both deterministic: every sample is the package's forecast (via predict_batch,
    i.e. ``auto_regressive_inference`` on the same windows)."""
    from compiled_opt.core.data import read_series

    series = read_series(market_dir / f"{symbol}.parquet")
    batch = windows(series, splits(len(series), 30, 20, 1).validation[:6], CONTEXT, 1)
    params = {**PARAMS, "top_k": 1, "temperature": 0.7, "sample_count": 4}
    samples = backend.sample(backend.encode(batch, params), params, Draws((1, 2), batch.window_ids))
    predictor = package.KronosPredictor(
        backend.model, backend.tokenizer, device="cpu", max_context=CONTEXT, clip=params["clip"]
    )
    frames = [list(f) for f in zip(*(predictor_inputs(batch, i) for i in range(len(batch))), strict=True)]
    expected = predictor.predict_batch(*frames, pred_len=1, T=0.7, top_k=1, sample_count=2, verbose=False)
    expected = torch.tensor([df["close"].iloc[0] for df in expected], dtype=torch.float64)
    assert samples.shape == (2, len(batch), 4, 1)
    torch.testing.assert_close(samples, expected[None, :, None, None].expand_as(samples), rtol=1e-6, atol=0)


def matched_atoms(a: np.ndarray, b: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Both samples as indices of the pooled distinct values, values closer than ``tol`` merged
    (the two paths decode the same token to floats a few ulps apart)."""
    pooled = np.unique(np.concatenate([a, b]))
    starts = pooled[np.concatenate([[True], np.diff(pooled) > tol])]
    return np.searchsorted(starts, a, side="right"), np.searchsorted(starts, b, side="right")


def same_categories_pvalue(a: np.ndarray, b: np.ndarray) -> float:
    """Chi-square test that two samples of categories share one distribution (rare ones pooled)."""
    values, counts = np.unique(np.concatenate([a, b]), return_counts=True)
    common = values[counts >= 20]
    table = [[np.isin(x, common, invert=True).sum(), *((x == v).sum() for v in common)] for x in (a, b)]
    table = np.array(table)
    return stats.chi2_contingency(table[:, table.sum(axis=0) > 0]).pvalue


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, 0, 0.9), (0.4, 0, 0.8), (0.4, 8, 1.0)])
def test_sampling_follows_the_package_distribution(package, backend, batch, temperature, top_k, top_p, monkeypatch):
    """Same tokens (s1 and s2) and same forecasts in distribution as the package's own sampling."""
    import compiled_opt.plugins.backends.kronos as kronos

    n, window, vocab2 = 2000, 3, 2 ** MODELS["tiny"]["s2_bits"]
    drawn = []
    per_window = kronos.per_window
    monkeypatch.setattr(kronos, "per_window", lambda ids, size: drawn.append(ids) or per_window(ids, size))
    decode = backend.tokenizer.decode
    monkeypatch.setattr(backend.tokenizer, "decode", lambda x, half: drawn.append(x) or decode(x, half))

    params = {**PARAMS, "temperature": temperature, "top_k": top_k, "top_p": top_p, "sample_count": n}
    ours = backend.sample(backend.encode(batch, params), params, Draws((11,), batch.window_ids))[0, window, :, 0]
    x, stamp, mean, scale = backend.prepare(batch, params)
    torch.manual_seed(0)
    preds = package.kronos.auto_regressive_inference(
        backend.tokenizer,
        backend.model,
        x[window].expand(n, -1, -1),
        stamp[window].expand(n, -1, -1),
        stamp[window, -1:].expand(n, -1, -1),
        CONTEXT,
        1,
        clip=params["clip"],
        T=temperature,
        top_k=top_k,
        top_p=top_p,
        sample_count=1,
    )
    tokens = drawn[1][0, window].numpy()
    for mine, theirs in ((tokens // vocab2, drawn[2][0][:, -1].numpy()), (tokens % vocab2, drawn[2][1][:, -1].numpy())):
        assert same_categories_pvalue(mine, theirs) > 1e-3
    theirs = preds[:, -1, FEATURES.index("close")] * scale[window, 3].item() + mean[window, 3].item()
    ours = ours.numpy()
    a, b = matched_atoms(ours, theirs, 1e-6 * abs(theirs).mean())
    assert len(np.unique(a)) > 5
    assert stats.ks_2samp(a, b).pvalue > 1e-3
    assert abs(ours.mean() - theirs.mean()) < 4 * np.sqrt((ours.var() + theirs.var()) / n)


def test_gumbel_pick_is_exactly_categorical():
    probs = torch.tensor([[0.5, 0.0, 0.2, 0.05, 0.25, 0.0], [0.1, 0.1, 0.1, 0.3, 0.0, 0.4], [0, 0, 1.0, 0, 0, 0]])
    rows = torch.arange(3)[None, :, None].expand(2, 3, 40000)
    picks = gumbel_pick(probs, rows, Draws((3, 4), torch.tensor([10, 11, 12])), "test")
    for w in range(3):
        counts = np.bincount(picks[:, w].flatten().numpy(), minlength=6)
        keep = probs[w].numpy() > 0
        assert counts[~keep].sum() == 0
        if keep.sum() > 1:
            p = probs[w].double().numpy()[keep]
            assert stats.chisquare(counts[keep], p / p.sum() * counts.sum()).pvalue > 1e-3


def test_runs_reproduce_are_independent_and_share_draws_across_configs(backend, batch):
    params = {**PARAMS, "temperature": 0.5}
    state = backend.encode(batch, params)
    both = backend.sample(state, params, Draws((5, 6), batch.window_ids))
    torch.testing.assert_close(backend.sample(state, params, Draws((6,), batch.window_ids))[0], both[1])
    assert torch.equal(backend.sample(state, params, Draws((5, 6), batch.window_ids)), both)
    assert not torch.allclose(both[0], both[1])
    warmer = backend.sample(state, {**params, "temperature": 0.55}, Draws((5, 6), batch.window_ids))
    other = backend.sample(state, {**params, "temperature": 0.55}, Draws((7, 8), batch.window_ids))
    paired = torch.isclose(warmer, both).double().mean()
    assert paired > 0.5 and paired > 2 * torch.isclose(other, both).double().mean()


def test_evaluator_encodes_once_per_context_and_clip(backend, app_series, monkeypatch):
    calls = []
    encode = backend.encode
    monkeypatch.setattr(backend, "encode", lambda batch, params: calls.append(1) or encode(batch, params))
    plugins = Plugins.load()
    aggregators = {n: plugins.aggregators.get(n) for n in plugins.aggregators}
    rows = splits(len(app_series), 30, 20, 1).validation
    ev = Evaluator(backend, aggregators, app_series, rows, 1)
    seeds = tuple(derive_seeds(0, "search", 3))
    first = ev(PARAMS, seeds)
    second = ev({**PARAMS, "temperature": 0.3, "top_p": 0.8}, seeds)
    assert len(calls) == 1
    assert first.errors.shape == (3, 30) and not first.exact
    assert not np.array_equal(first.errors, second.errors)
    assert not np.array_equal(ev({**PARAMS, "aggregate": "quantile_0.90"}, seeds).errors, first.errors)
    ev({**PARAMS, "clip": 2.0}, seeds)
    assert len(calls) == 2


def test_every_aggregator_applies_to_the_samples(backend, batch):
    """The package only averages its samples; the engine's aggregators all work on ours."""
    params = {**PARAMS, "temperature": 0.5, "sample_count": 200}
    samples = backend.sample(backend.encode(batch, params), params, Draws((3,), batch.window_ids))
    plugins = Plugins.load()
    points = {n: plugins.aggregators.get(n)(samples, dim=2) for n in plugins.aggregators}
    assert all(p.shape == (1, len(batch), 1) and torch.isfinite(p).all() for p in points.values())
    assert (points["quantile_0.10"] <= points["median"]).all() and (points["median"] <= points["quantile_0.90"]).all()
    assert (points["quantile_0.10"] < points["quantile_0.90"]).any()
    torch.testing.assert_close(points["mean"], samples.mean(dim=2))


def test_horizon_above_one_is_refused(backend, app_series):
    longer = windows(app_series, splits(len(app_series), 30, 20, 2).validation, CONTEXT, 2)
    with pytest.raises(UsageError, match="one step ahead; set data.horizon = 1"):
        backend.encode(longer, PARAMS)


def test_bfloat16_forecasts_stay_close(saved, backend, batch):
    params = {**PARAMS, "temperature": 0.3, "sample_count": 256}
    draws = Draws((1,), batch.window_ids)
    full = backend.sample(backend.encode(batch, params), params, draws).mean(dim=2)
    half_backend = KronosBackend(Runtime(dtype=torch.bfloat16), **saved["dirs"])
    half = half_backend.sample(half_backend.encode(batch, params), params, draws).mean(dim=2)
    spread = batch.context[:, :, FEATURES.index("close")].std(dim=1)[None, :, None]
    assert torch.isfinite(half).all() and not torch.equal(half, full)
    assert ((half - full).abs() / spread).max() < 0.05


def test_compile_mode_gives_the_eager_samples(saved, backend, batch, monkeypatch):
    """The stages trace under torch.compile (the fast aot_eager backend here; inductor is the same graph)."""
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module, mode=None: compile_(module, mode=mode, backend="aot_eager"))
    compiled = KronosBackend(Runtime(compile="default"), **saved["dirs"])
    assert all(
        isinstance(m, torch._dynamo.eval_frame.OptimizedModule)
        for m in (compiled.encoder, compiled.s2_logits, compiled.decoder_step)
    )
    draws = Draws((1, 2), batch.window_ids)
    torch.testing.assert_close(
        compiled.sample(compiled.encode(batch, PARAMS), PARAMS, draws),
        backend.sample(backend.encode(batch, PARAMS), PARAMS, draws),
        rtol=1e-6,
        atol=0,
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(saved, backend, batch):
    params = {**PARAMS, "top_k": 1}
    gpu = KronosBackend(Runtime(device="cuda"), **saved["dirs"])
    draws = Draws((1,), batch.window_ids)
    on_gpu = gpu.sample(gpu.encode(batch, params), params, Draws((1,), batch.window_ids, device="cuda"))
    torch.testing.assert_close(
        on_gpu.cpu(), backend.sample(backend.encode(batch, params), params, draws), rtol=1e-5, atol=0
    )
