"""The toto backend: checkpoint loading, one forward per window set, keyed sampling that agrees with
``TotoForecaster``, exact aggregates of the predictive mixture, and the Evaluator's encode cache."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from scipy import stats

pytest.importorskip("toto", reason="the toto backend needs toto-ts")

from toto.data.util.dataset import MaskedTimeseries  # noqa: E402
from toto.inference.forecaster import TotoForecaster  # noqa: E402

from compiled_opt.core.aggregate import builtin_aggregators  # noqa: E402
from compiled_opt.core.backend import FEATURES, Runtime  # noqa: E402
from compiled_opt.core.data import splits, windows  # noqa: E402
from compiled_opt.core.errors import UsageError  # noqa: E402
from compiled_opt.core.evaluate import Evaluator  # noqa: E402
from compiled_opt.core.randomness import Draws  # noqa: E402
from compiled_opt.core.registry import Plugins  # noqa: E402
from compiled_opt.plugins.backends.toto import TotoBackend  # noqa: E402
from compiled_opt.plugins.backends.toto.checkpoint import SIZES, random_model, save_checkpoint  # noqa: E402
from compiled_opt.plugins.backends.toto.distribution import StudentTMixture, student_t  # noqa: E402

PATCH = SIZES["tiny"]["patch_size"]
CONTEXT = 8 * PATCH
PARAMS = {"num_samples": 256, "aggregate": "median", "context_length": CONTEXT, "sampling": "monte_carlo"}


@pytest.fixture(scope="module")
def original():
    return random_model("tiny", seed=0)


@pytest.fixture(scope="module")
def checkpoint(original, tmp_path_factory) -> str:
    return str(save_checkpoint(original, tmp_path_factory.mktemp("tiny-toto")))


@pytest.fixture(scope="module")
def backend(checkpoint) -> TotoBackend:
    return TotoBackend(Runtime(), checkpoint=checkpoint)


@pytest.fixture
def forwards(backend):
    """How often the model's transformer has run (a hook on the package's own module)."""
    calls = []
    handle = backend.model.transformer.register_forward_hook(lambda *_: calls.append(1))
    yield calls
    handle.remove()


def batch_of(series, count: int, horizon: int = 1, context: int = CONTEXT):
    return windows(series, range(len(series) - horizon + 1 - count, len(series) - horizon + 1), context, horizon)


def encode(backend, batch) -> StudentTMixture:
    with torch.inference_mode():
        return backend.encode(batch, PARAMS)


def forecaster_inputs(batch) -> MaskedTimeseries:
    close = batch.context[:, None, :, FEATURES.index("close")].float()
    return MaskedTimeseries(
        series=close,
        padding_mask=torch.ones_like(close, dtype=torch.bool),
        id_mask=torch.zeros_like(close, dtype=torch.int),
        timestamp_seconds=batch.context_time[:, None, :],
        time_interval_seconds=torch.full((len(batch), 1), 86400),
    )


def mixture_variance(m: StudentTMixture) -> torch.Tensor:
    second = (m.weights * (m.scale**2 * m.df / (m.df - 2) + m.loc**2)).sum(-1)
    return second - m.mean() ** 2


# --- plugin and checkpoint ------------------------------------------------------------------------------


def test_registered_through_the_entry_point_without_importing_toto():
    assert "toto" in Plugins.load().backends
    code = "import sys, compiled_opt.plugins.backends.toto; print('toto' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_without_toto_ts_plugins_load_and_toto_asks_for_it(monkeypatch, checkpoint):
    for name in [m for m in sys.modules if m == "toto" or m.startswith("toto.")]:
        monkeypatch.setitem(sys.modules, name, None)
    assert "toto" in Plugins.load().backends
    with pytest.raises(UsageError) as err:
        TotoBackend(Runtime(), checkpoint=checkpoint)
    assert "pip install --no-deps toto-ts==0.2.0" in str(err.value)
    assert "\n" not in str(err.value)


def test_checkpoint_directory_round_trips_the_weights(backend, original):
    saved = original.model.state_dict()
    loaded = backend.model.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert not backend.model.training


def test_model_id_is_read_from_the_hugging_face_cache(checkpoint, monkeypatch, tmp_path, app_series):
    from huggingface_hub import constants

    repo = tmp_path / "models--someone--tiny-toto"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    for name in ("model.safetensors", "config.json"):
        (snapshot / name).symlink_to(f"{checkpoint}/{name}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    cached = TotoBackend(Runtime(), checkpoint="someone/tiny-toto")
    batch = batch_of(app_series, 3)
    assert torch.equal(encode(cached, batch).loc, encode(TotoBackend(Runtime(), checkpoint=checkpoint), batch).loc)


def built(**options):
    """The backend as a run builds it: options errors are reported against the model's options table."""
    return Plugins.load().backends.build("toto", options, "f.toml: models.t.options", Runtime())


@pytest.mark.parametrize(
    ("checkpoint_name", "download"),
    [
        ("compiled-opt-tests/no-such-toto", "compiled-opt-tests/no-such-toto"),
        ("/no/such/directory", "Datadog/Toto-Open-Base-1.0"),
    ],
)
def test_missing_checkpoint_is_one_line_naming_it(checkpoint_name, download):
    with pytest.raises(UsageError) as err:
        built(checkpoint=checkpoint_name)
    assert err.value.where == "f.toml: models.t.options.checkpoint"
    message = str(err.value)
    assert "\n" not in message
    assert repr(checkpoint_name) in message
    assert f"`hf download {download}`" in message


def test_directory_without_weights_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="has no config.json and no model.safetensors"):
        built(checkpoint=str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_text("not weights")
    with pytest.raises(UsageError, match="cannot load the Toto checkpoint"):
        built(checkpoint=str(tmp_path))


def test_gluonts_json_advice_is_silenced_and_nothing_else():
    """gluonts warns on import that orjson is missing; loading toto hides exactly that warning."""

    def stderr(code: str) -> str:
        return subprocess.run(
            [sys.executable, "-W", "always::UserWarning", "-c", code], capture_output=True, text=True, check=True
        ).stderr

    assert "orjson" in stderr("import gluonts.json")  # the warning exists, so silencing it is needed
    loaded = "from compiled_opt.plugins.backends.toto import toto_class; toto_class(); import gluonts.json, warnings; "
    assert "orjson" not in stderr(loaded)
    assert "still shown" in stderr(loaded + "warnings.warn('Using `json`-module: still shown')")  # not left behind


# --- parameters -----------------------------------------------------------------------------------------


def test_defaults_and_search_space(backend):
    backend.check(TotoBackend.defaults)
    space = TotoBackend.default_space
    assert space["num_samples"]["ordered"] == [64, 128, 256, 512, 768, 1024, 1536, 2048, 3072, 4096]
    assert space["aggregate"]["choice"] == [a.name for a in builtin_aggregators()]
    assert set(space) <= set(TotoBackend.defaults)
    assert "samples_per_batch" not in TotoBackend.defaults
    assert TotoBackend.encode_keys == ("context_length",)


BAD = [
    ("num_samples", 0),
    ("num_samples", 2.5),
    ("num_samples", True),
    ("num_samples", "many"),
    ("context_length", -64),
    ("sampling", "exact!"),
]


@pytest.mark.parametrize(("key", "value"), BAD)
def test_check_rejects_bad_values_naming_the_key(backend, key, value):
    with pytest.raises(ValueError, match=f"^{key}: "):
        backend.check({**PARAMS, key: value})


# --- encode ---------------------------------------------------------------------------------------------


def test_one_forward_for_all_windows_and_windows_do_not_attend_to_each_other(backend, forwards, app_series):
    batch = batch_of(app_series, 12, horizon=3)
    together = encode(backend, batch)
    assert len(forwards) == 1
    assert together.weights.shape == (12, 3, 4)
    for w in (0, 7):
        row = int(batch.target_rows[w])
        single = encode(backend, windows(app_series, range(row, row + 1), CONTEXT, 3))
        for name in ("weights", "df", "loc", "scale"):
            torch.testing.assert_close(getattr(single, name)[0], getattr(together, name)[w], rtol=1e-4, atol=1e-4)


def test_a_single_student_t_head_is_a_mixture_of_one(tmp_path, app_series):
    model = random_model(
        "tiny",
        seed=1,
        output_distribution_classes=["<class 'model.distribution.StudentTOutput'>"],
        output_distribution_kwargs={},
    )
    backend = TotoBackend(Runtime(), checkpoint=str(save_checkpoint(model, tmp_path)))
    batch = batch_of(app_series, 3)
    mixture = encode(backend, batch)
    assert mixture.weights.shape == (3, 1, 1) and (mixture.weights == 1).all()
    mean = TotoForecaster(backend.model).forecast(forecaster_inputs(batch), 1).mean[:, 0]
    torch.testing.assert_close(mixture.mean(), mean.double(), rtol=1e-5, atol=0)


@pytest.mark.parametrize("context", [CONTEXT, CONTEXT - 5])
def test_exact_mean_is_toto_forecasters_mean_forecast(backend, app_series, context):
    """A context that is not a multiple of the patch is left-padded and masked as the forecaster does."""
    batch = batch_of(app_series, 5, horizon=4, context=context)
    mixture = encode(backend, batch)
    mean = TotoForecaster(backend.model).forecast(forecaster_inputs(batch), 4).mean[:, 0]
    torch.testing.assert_close(mixture.mean(), mean.double(), rtol=1e-5, atol=0)


def test_horizon_beyond_one_patch_is_refused(backend, app_series):
    with pytest.raises(UsageError, match=f"horizon {PATCH + 1}: .*at most one patch \\({PATCH} steps\\)"):
        encode(backend, batch_of(app_series, 2, horizon=PATCH + 1))


def test_bfloat16_runs_the_forward_under_autocast(checkpoint, backend, app_series):
    batch = batch_of(app_series, 5)
    full = encode(backend, batch)
    half = encode(TotoBackend(Runtime(dtype=torch.bfloat16), checkpoint=checkpoint), batch)
    assert half.loc.dtype == torch.float64
    torch.testing.assert_close(half.weights, full.weights, atol=0.02, rtol=0)
    torch.testing.assert_close(half.loc, full.loc, atol=0.0, rtol=0.01)


def test_the_forward_goes_through_runtime_maybe_compile(checkpoint):
    compiled = []

    class Recording(Runtime):
        def maybe_compile(self, module):
            compiled.append(module)
            return module

    backend = TotoBackend(Recording(compile="default"), checkpoint=checkpoint)
    assert [m.backbone for m in compiled] == [backend.model]
    assert not compiled[0].training


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch.compile of the model is checked on a GPU")
def test_compiled_forward_matches_eager_on_gpu(checkpoint, app_series):
    batch = batch_of(app_series, 6)
    eager = encode(TotoBackend(Runtime(device="cuda"), checkpoint=checkpoint), batch)
    compiled = encode(TotoBackend(Runtime(device="cuda", compile="default"), checkpoint=checkpoint), batch)
    torch.testing.assert_close(compiled.loc, eager.loc, rtol=1e-4, atol=1e-4)


# --- sampling -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("horizon", [1, PATCH])
def test_samples_agree_with_toto_forecaster_and_need_one_forward(backend, forwards, app_series, horizon):
    """Same model and windows: TotoForecaster's samples and the backend's follow the same marginals."""
    n = 4096
    batch = batch_of(app_series, 4, horizon=horizon)
    mixture = encode(backend, batch)
    ours = backend.sample(mixture, {**PARAMS, "num_samples": n}, Draws((11,), batch.window_ids))[0]
    assert len(forwards) == 1

    torch.manual_seed(0)
    forecaster = TotoForecaster(backend.model)
    theirs = forecaster.forecast(forecaster_inputs(batch), horizon, num_samples=n, samples_per_batch=1024).samples
    theirs = theirs[:, 0].permute(0, 2, 1).double()  # [windows, samples, horizon]
    assert len(forwards) == 1 + n // 1024

    # quantiles compared in probability space, where their Monte Carlo spread is known
    probs = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64)
    q_ours = torch.quantile(ours, probs, dim=1).permute(1, 2, 0)  # [windows, horizon, probs]
    q_theirs = torch.quantile(theirs, probs, dim=1).permute(1, 2, 0)
    gap = (mixture.cdf(q_ours) - mixture.cdf(q_theirs)).abs()
    assert (gap < 5 * torch.sqrt(2 * probs * (1 - probs) / n)).all()

    sd = mixture_variance(mixture).sqrt()
    assert ((ours.mean(1) - theirs.mean(1)).abs() < 5 * sd * (2 / n) ** 0.5).all()
    assert ((ours.mean(1) - mixture.mean()).abs() < 5 * sd / n**0.5).all()


def test_runs_seeds_and_common_random_numbers(backend, app_series):
    batch = batch_of(app_series, 6)
    mixture = encode(backend, batch)

    def draw(seeds, n=256, ids=batch.window_ids, state=mixture):
        return backend.sample(state, {**PARAMS, "num_samples": n}, Draws(seeds, ids))

    both = draw((5, 6))
    assert both.shape == (2, 6, 256, 1) and both.dtype == torch.float64
    torch.testing.assert_close(both, draw((5, 6)), rtol=0, atol=0)  # the same call on the same shapes
    # Other shapes run other vectorised code paths (SIMD widths, loop tails) for log, expm1 and cos,
    # which may differ in the last bit on some CPUs: the same numbers, to float64 rounding.
    tight = {"rtol": 1e-12, "atol": 0}
    torch.testing.assert_close(both[1], draw((6,))[0], **tight)  # runs are independent calls in one
    torch.testing.assert_close(draw((5,), n=64)[0], both[0, :, :64], **tight)  # prefixes are shared
    assert not torch.equal(both[0], both[1])
    sub = StudentTMixture(*(getattr(mixture, f)[2:4] for f in ("weights", "df", "loc", "scale")))
    torch.testing.assert_close(draw((5,), ids=batch.window_ids[2:4], state=sub)[0], both[0, 2:4], **tight)


def random_mixture(windows: int, horizon: int, k: int = 5, seed: int = 0, df=(2.5, 12.0)) -> StudentTMixture:
    g = torch.Generator().manual_seed(seed)

    def u(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    shape = (windows, horizon, k)
    return StudentTMixture(
        weights=torch.softmax(3 * u(*shape), -1),
        df=df[0] + (df[1] - df[0]) * u(*shape),
        loc=100 + 5 * torch.randn(*shape, generator=g, dtype=torch.float64),
        scale=0.5 + 3 * u(*shape),
    )


@pytest.mark.parametrize("df", [2.0, 2.7, 7.0, 60.0])
def test_polar_student_t_is_student_t(df):
    """Kolmogorov-Smirnov against SciPy's Student-T, and finite at the uniforms' extremes."""
    draws = Draws((4,), torch.arange(1))
    w, angle = draws.uniform("w", 200_000), draws.uniform("angle", 200_000)
    t = student_t(torch.full_like(w, df), w, angle).flatten().numpy()
    assert stats.kstest(t, stats.t(df).cdf).pvalue > 1e-3
    extremes = torch.tensor([0.5 / 2**53, 1 - 0.5 / 2**53], dtype=torch.float64)
    assert torch.isfinite(student_t(torch.tensor(df, dtype=torch.float64), extremes, torch.zeros(2))).all()


def test_sampling_is_one_graph_without_host_syncs(backend, app_series):
    """No data-dependent control flow: given its random numbers, the sample call traces as one graph
    (fullgraph=True fails on anything that needs tensor values on the host) and gives the eager samples.
    (The keyed numbers themselves are counter arithmetic; only their stream names are hashed on the host.)"""
    mixture = encode(backend, batch_of(app_series, 4))
    draws = Draws((1, 2), torch.arange(4))
    streams = ("toto.component", "toto.radius", "toto.angle")

    class Given:
        def __init__(self, *numbers):
            self.numbers = dict(zip(streams, numbers, strict=True))

        def uniform(self, stream, num_samples, horizon):
            return self.numbers[stream]

    traced = torch.compile(lambda *numbers: mixture.sample(Given(*numbers), 128), fullgraph=True, backend="eager")
    numbers = [draws.uniform(name, 128, 1) for name in streams]
    torch.testing.assert_close(traced(*numbers), mixture.sample(draws, 128), rtol=1e-12, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host syncs are counted on a GPU")
def test_sampling_on_gpu_never_syncs(backend, app_series):
    mixture = encode(backend, batch_of(app_series, 4))
    on_gpu = StudentTMixture(*(getattr(mixture, f).cuda() for f in ("weights", "df", "loc", "scale")))
    draws = Draws((1, 2, 3), torch.arange(4), device="cuda")
    on_gpu.sample(draws, 64)  # warm-up
    torch.cuda.set_sync_debug_mode("error")
    try:
        on_gpu.sample(draws, 256)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("df", [(2.0, 3.0), (2.0, 30.0)])
def test_keyed_student_t_mixture_samples_follow_the_distribution(df):
    """Kolmogorov-Smirnov against the exact mixture CDF, and quantiles against torch's own sampler,
    at low degrees of freedom (heavy tails) and across a wide range of them."""
    mixture = random_mixture(2, 2, df=df)
    n = 200_000
    ours = mixture.sample(Draws((3,), torch.arange(2)), n)[0].permute(0, 2, 1)  # [windows, horizon, samples]
    pit = mixture.cdf(ours)
    for w in range(2):
        for h in range(2):
            assert stats.kstest(pit[w, h].numpy(), "uniform").pvalue > 1e-3
    components = torch.distributions.StudentT(mixture.df, mixture.loc, mixture.scale)
    reference = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(mixture.weights), components)
    torch.manual_seed(0)
    theirs = reference.sample((n,)).permute(1, 2, 0)
    probs = torch.tensor([0.01, 0.1, 0.5, 0.9, 0.99], dtype=torch.float64)
    gap = mixture.cdf(torch.quantile(ours, probs, dim=-1).permute(1, 2, 0)) - mixture.cdf(
        torch.quantile(theirs, probs, dim=-1).permute(1, 2, 0)
    )
    assert (gap.abs() < 5 * torch.sqrt(2 * probs * (1 - probs) / n)).all()


def test_student_t_at_two_degrees_of_freedom():
    """df = 2, the heaviest tail Toto's heads allow; its CDF is closed-form."""
    one = torch.ones(1, 1, 1, dtype=torch.float64)
    mixture = StudentTMixture(weights=one, df=2 * one, loc=0 * one, scale=one)
    t = mixture.sample(Draws((9,), torch.arange(1)), 400_000)[0, 0, :, 0]
    cdf = 0.5 + t / (2 * torch.sqrt(2 + t * t))
    assert stats.kstest(cdf.numpy(), "uniform").pvalue > 1e-3


# --- exact mode -----------------------------------------------------------------------------------------


def test_exact_quantile_inverts_the_cdf():
    mixture = random_mixture(3, 2, df=(2.0, 60.0))
    u = torch.tensor([1e-6, 0.05, 0.5, 0.9, 1 - 1e-6], dtype=torch.float64)
    q = mixture.quantile(u)
    torch.testing.assert_close(mixture.cdf(q), u.expand(3, 2, 5), rtol=0, atol=1e-12)


def test_exact_aggregates_match_a_million_samples():
    """20 runs of 50,000 samples: each aggregate's run-to-run spread gives its Monte Carlo tolerance."""
    mixture = random_mixture(2, 2, seed=1)
    samples = mixture.sample(Draws(tuple(range(20)), torch.arange(2)), 50_000)
    for aggregator in builtin_aggregators():
        exact = mixture.aggregate(aggregator)
        per_run = aggregator(samples, dim=2)  # [runs, windows, horizon]
        assert exact.shape == (2, 2)
        sem = per_run.std(0) / 20**0.5
        assert ((per_run.mean(0) - exact).abs() < 5 * sem).all(), aggregator.name


def test_exact_winsorized_means_are_closed_form(monkeypatch):
    """The clipped tails at the interval's ends plus the trimmed part: what the quadrature over the
    quantile function gives, from the quantiles at two probabilities only (one solve, no quadrature)."""
    from compiled_opt.plugins.backends.toto import distribution

    mixture = random_mixture(3, 2, df=(2.0, 20.0))
    for aggregator in (a for a in builtin_aggregators() if a.winsorize):
        by_quadrature = aggregator.exact(mixture.quantile, nodes=400)
        solved = []
        quantile = distribution._Exact.quantile
        monkeypatch.setattr(
            distribution._Exact,
            "quantile",
            lambda self, u, solved=solved, quantile=quantile: solved.append(u.size) or quantile(self, u),
        )
        closed = mixture.aggregate(aggregator)
        monkeypatch.undo()
        assert solved == [2]
        torch.testing.assert_close(closed, by_quadrature, rtol=1e-7, atol=0)


def test_each_exact_aggregate_is_solved_once_per_mixture(monkeypatch):
    from compiled_opt.plugins.backends.toto import distribution

    mixture = random_mixture(2, 1)
    aggregator = next(a for a in builtin_aggregators() if a.name == "trimmed_mean_10")
    first = mixture.aggregate(aggregator)
    monkeypatch.setattr(distribution._Exact, "quantile", lambda self, u: pytest.fail("solved again"))
    assert mixture.aggregate(aggregator) is first


def test_exact_mean_and_median_are_closed_form_and_monotone():
    mixture = random_mixture(3, 1)
    aggs = {a.name: a for a in builtin_aggregators()}
    torch.testing.assert_close(mixture.aggregate(aggs["mean"]), mixture.mean())
    torch.testing.assert_close(
        mixture.cdf(mixture.aggregate(aggs["median"])[..., None])[..., 0], torch.full((3, 1), 0.5, dtype=torch.float64)
    )
    order = ["quantile_0.10", "quantile_0.25", "median", "quantile_0.75", "quantile_0.90"]
    values = torch.stack([mixture.aggregate(aggs[name]) for name in order])
    assert (values.diff(dim=0) > 0).all()


def test_exact_only_in_exact_mode(backend, app_series):
    batch = batch_of(app_series, 3)
    mixture = encode(backend, batch)
    median = next(a for a in builtin_aggregators() if a.name == "median")
    assert backend.exact(mixture, PARAMS, median) is None
    exact = backend.exact(mixture, {**PARAMS, "sampling": "exact"}, median)
    assert exact.shape == (3, 1)


# --- through the Evaluator ------------------------------------------------------------------------------


def test_evaluator_encodes_once_for_candidates_differing_in_sampling_params(backend, forwards, app_series):
    aggregators = {a.name: a for a in builtin_aggregators()}
    rows = splits(len(app_series), 30, 20, 1).validation
    ev = Evaluator(backend, aggregators, app_series, rows, 1)
    seeds = (1, 2, 3)
    first = ev(PARAMS, seeds)
    second = ev({**PARAMS, "num_samples": 1024, "aggregate": "trimmed_mean_10"}, seeds)
    assert len(forwards) == 1
    assert first.errors.shape == second.errors.shape == (3, 30)
    assert first.mean != second.mean and first.std > 0

    exact = ev({**PARAMS, "aggregate": "trimmed_mean_10", "sampling": "exact"}, seeds)
    assert len(forwards) == 1
    assert exact.exact and exact.runs == 1 and exact.std == 0
    assert abs(exact.mean - second.mean) < 0.1 * exact.mean  # 1024 samples land near the exact value

    ev({**PARAMS, "context_length": CONTEXT // 2}, seeds)
    assert len(forwards) == 2


def test_exact_mode_neither_searches_nor_stores_the_sample_count(checkpoint, tmp_path, market_dir, capsys):
    from conftest import write_config

    from compiled_opt.commands.cli import main
    from compiled_opt.store.stores import read_trials

    models = (
        f'[models.toto]\nbackend = "toto"\noptions = {{ checkpoint = "{checkpoint}" }}\n'
        'fixed = { sampling = "exact", context_length = 64 }\n'
    )
    config = write_config(tmp_path, market_dir, trials=4, models=models)
    assert main(["run", str(config), "-q"]) == 0
    for symbol in ("APP", "NU"):
        rec = json.loads((tmp_path / "hyperparams" / "toto" / f"{symbol}.json").read_text())
        assert "num_samples" not in rec["config"] and rec["validation"]["exact"]
    rows = read_trials(next((tmp_path / "runs").iterdir()))
    assert {json.loads(row.params)["num_samples"] for row in rows} == {256}  # not searched: the default throughout
    searched = models + "space = { num_samples = { ordered = [64, 128] } }\n"
    config = write_config(tmp_path, market_dir, trials=4, models=searched)
    assert main(["run", str(config), "-q"]) == 2
    assert "models.toto.space.num_samples: has no effect with the fixed sampling = 'exact'" in capsys.readouterr().err
