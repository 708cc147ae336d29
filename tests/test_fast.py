"""Fast mode: the settings it resolves to, shapes padded to buckets without changing results, compiles
counted, the fast dtypes' agreement with float32, and the GPU check script at its tiny CPU size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compiled_opt.commands.checkpoint import write_random
from compiled_opt.core.backend import Runtime
from compiled_opt.core.buckets import pad_rows, pad_to, window_bucket
from compiled_opt.core.config import RuntimeConfig
from compiled_opt.core.data import splits, windows
from compiled_opt.core.evaluate import Evaluator
from compiled_opt.core.randomness import Draws, derive_seeds
from compiled_opt.core.registry import Plugins
from compiled_opt.run.fast import DTYPE_TOLERANCE, FAST_COMPILE, compiles, fast_settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def plugins():
    return Plugins.load()


@pytest.fixture(scope="module")
def aggregators(plugins):
    return {n: plugins.aggregators.get(n) for n in plugins.aggregators}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny random checkpoints of every backend that writes them: backend name -> options."""
    pytest.importorskip("toto")
    pytest.importorskip("kronos_finance")
    out = tmp_path_factory.mktemp("checkpoints")
    return {name: write_random(name, out / name, "tiny") for name in ("toto", "kronos")}


class Recording(Runtime):
    """A runtime that says it compiles but runs eagerly, recording the shapes each stage is called with."""

    shapes: dict = {}

    def maybe_compile(self, module):
        seen = self.shapes.setdefault(type(module).__name__, set())

        def call(*args):
            seen.add(tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor)))
            return module(*args)

        return call


# --- settings -------------------------------------------------------------------------------------------


def test_default_mode_is_left_as_configured(plugins):
    cfg = RuntimeConfig(device="cpu", dtype="bfloat16")
    settings = fast_settings(cfg, {"toto": plugins.backends.get("toto")}, cuda=True)
    assert settings.runtime == cfg and settings.dtypes == {"toto": "bfloat16"} and settings.notice == ""


def test_fast_mode_falls_back_to_the_cpu_settings_with_one_line(plugins):
    settings = fast_settings(
        RuntimeConfig(mode="fast", compile="default", dtype="bfloat16"),
        {"toto": plugins.backends.get("toto")},
        cuda=False,
    )
    rt = settings.runtime
    assert (rt.device, rt.compile, rt.dtype, rt.mode) == ("cpu", "none", "float32", "default")
    assert settings.dtypes == {"toto": "float32"}
    assert "no CUDA device" in settings.notice and "\n" not in settings.notice


def test_fast_mode_compiles_with_graphs_and_each_backends_dtype(plugins):
    backends = {name: plugins.backends.get(name) for name in ("toto", "kronos", "bootstrap")}
    settings = fast_settings(
        RuntimeConfig(mode="fast", device="cpu"),
        {"t": backends["toto"], "k": backends["kronos"], "b": backends["bootstrap"]},
        cuda=True,
    )
    assert (settings.runtime.device, settings.runtime.compile) == ("cuda", "reduce-overhead")
    assert settings.dtypes == {"t": "bfloat16", "k": "float32", "b": "float32"}  # bootstrap declares none
    assert settings.runtime_for("t", Runtime(device="cuda")).dtype == torch.bfloat16
    assert settings.runtime_for("k", Runtime(device="cuda")).dtype == torch.float32
    assert "\n" not in settings.notice and "t bfloat16" in settings.notice


def test_buckets():
    assert [pad_to(n) for n in (1, 2, 3, 17, 32, 33)] == [1, 2, 4, 32, 32, 64]
    assert [window_bucket(n) for n in (1, 20, 30, 32, 33)] == [32, 32, 32, 32, 64]
    t = torch.arange(6.0).view(3, 2)
    assert pad_rows(t, 3) is t
    assert pad_rows(t, 5).tolist() == [[0, 1], [2, 3], [4, 5], [4, 5], [4, 5]]
    assert pad_rows(t, 4, dim=1).tolist() == [[0, 1, 1, 1], [2, 3, 3, 3], [4, 5, 5, 5]]


# --- static shapes --------------------------------------------------------------------------------------


def test_toto_pads_windows_to_one_shape_without_changing_results(tiny, app_series):
    from compiled_opt.plugins.backends.toto import TotoBackend

    Recording.shapes = {}
    padded = TotoBackend(Recording(compile=FAST_COMPILE), **tiny["toto"])
    plain = TotoBackend(Runtime(), **tiny["toto"])
    params = {**TotoBackend.defaults, "context_length": 128}
    cuts = splits(len(app_series), 30, 20, 1)
    for rows in (cuts.validation, cuts.test):
        batch = windows(app_series, rows, 128, 1)
        with torch.inference_mode():
            a, b = padded.encode(batch, params), plain.encode(batch, params)
        for name in ("weights", "df", "loc", "scale"):  # other batch sizes block the matmuls differently
            torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-5, atol=1e-6)
    assert {s[0][0] for s in Recording.shapes["NextPatch"]} == {32}  # 30 and 20 windows: one shape


def test_kronos_pads_windows_and_tokens_to_few_shapes_without_changing_results(tiny, app_series):
    from compiled_opt.plugins.backends.kronos import KronosBackend

    Recording.shapes = {}
    padded = KronosBackend(Recording(compile=FAST_COMPILE), **tiny["kronos"])
    plain = KronosBackend(Runtime(), **tiny["kronos"])
    batch = windows(app_series, splits(len(app_series), 30, 20, 1).validation, 32, 1)
    for temperature in (0.05, 0.3, 1.0, 2.0):
        params = {**KronosBackend.defaults, "max_context": 32, "sample_count": 64, "temperature": temperature}
        draws = Draws((1, 2), batch.window_ids)
        torch.testing.assert_close(
            padded.sample(padded.encode(batch, params), params, draws),
            plain.sample(plain.encode(batch, params), params, draws),
            rtol=1e-6,
            atol=0,
        )
    for stage in ("S2Logits", "DecoderStep"):
        tables = {s[0] for s in Recording.shapes[stage]}
        assert {w for w, _ in tables} == {32}
        assert all(q & (q - 1) == 0 for _, q in tables)  # tokens per window: powers of two


def test_no_recompile_for_the_test_split(tiny, app_series, aggregators, monkeypatch):
    """Compiled (aot_eager here: the same graphs inductor would get), the 20 test windows reuse the
    graph of the 30 validation windows: compiles are counted and do not grow."""
    from compiled_opt.plugins.backends.toto import TotoBackend

    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module, mode=None: compile_(module, mode=mode, backend="aot_eager"))
    torch._dynamo.reset()
    backend = TotoBackend(Runtime(compile="default"), **tiny["toto"])
    params = {**TotoBackend.defaults, "context_length": 128}
    cuts, seeds = splits(len(app_series), 30, 20, 1), (1, 2, 3)
    start = compiles()
    Evaluator(backend, aggregators, app_series, cuts.validation, 1)(params, seeds)
    after_validation = compiles()
    Evaluator(backend, aggregators, app_series, cuts.test, 1)(params, seeds)
    Evaluator(backend, aggregators, app_series, cuts.validation, 1)({**params, "num_samples": 64}, seeds)
    assert after_validation - start == 1
    assert compiles() == after_validation


# --- fast dtypes ----------------------------------------------------------------------------------------


LOWER_PRECISION = [name for name in ("toto", "kronos") if Plugins.load().backends.get(name).fast_dtype != "float32"]


def test_only_toto_runs_in_lower_precision_in_fast_mode():
    """Kronos keeps float32: bfloat16 moved its MAE by up to 0.94% (docs/kronos.md), above the tolerance."""
    assert LOWER_PRECISION == ["toto"]


@pytest.mark.parametrize("name", LOWER_PRECISION)
def test_a_fast_dtype_keeps_pct_return_mae_within_tolerance(name, tiny, plugins, aggregators, market_dir):
    """Where a backend runs bfloat16 in fast mode, its validation pct_return_mae stays within
    DTYPE_TOLERANCE of float32's on the same windows and seeds (CPU autocast, tiny model)."""
    from compiled_opt.core.data import read_series

    cls = plugins.backends.get(name)
    full, half = cls(Runtime(), **tiny[name]), cls(Runtime(dtype=getattr(torch, cls.fast_dtype)), **tiny[name])
    seeds = tuple(derive_seeds(0, "search", 3))
    for symbol in ("APP", "NU"):
        series = read_series(market_dir / f"{symbol}.parquet")
        rows = splits(len(series), 30, 20, 1).validation
        for aggregate in ("median", "trimmed_mean_10"):
            params = {**cls.defaults, "aggregate": aggregate}
            ours = Evaluator(half, aggregators, series, rows, 1)(params, seeds).pct_return_mae
            reference = Evaluator(full, aggregators, series, rows, 1)(params, seeds).pct_return_mae
            assert ours != reference  # it did run in the lower precision
            assert abs(ours - reference) <= DTYPE_TOLERANCE * reference, (symbol, aggregate)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fast mode is checked on a GPU")
def test_fast_mode_on_gpu_matches_float32_eager(tiny, app_series, aggregators):
    from compiled_opt.plugins.backends.toto import TotoBackend

    settings = fast_settings(RuntimeConfig(mode="fast"), {"toto": TotoBackend})
    fast = TotoBackend(
        settings.runtime_for("toto", Runtime(device="cuda", compile=settings.runtime.compile)), **tiny["toto"]
    )
    eager = TotoBackend(Runtime(device="cuda"), **tiny["toto"])
    params, seeds = {**TotoBackend.defaults, "context_length": 128}, (1, 2, 3)
    rows = splits(len(app_series), 30, 20, 1).validation
    start = compiles()
    ours = [Evaluator(fast, aggregators, app_series, rows, 1)(params, seeds).pct_return_mae for _ in range(3)]
    assert compiles() - start <= 2
    reference = Evaluator(eager, aggregators, app_series, rows, 1)(params, seeds).pct_return_mae
    assert abs(ours[-1] - reference) <= DTYPE_TOLERANCE * reference


# --- the GPU check script -------------------------------------------------------------------------------


def test_device_check_script_runs_at_tiny_size_on_cpu(tmp_path):
    """scripts/gpu_check.sh --tiny: the same script as on a GPU, at a size a CPU runs in seconds."""
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--tiny"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["tests"]["exit_code"] == 0
    for name in ("toto", "kronos"):
        bench = result["bench_run"][name]
        assert bench["device"] == "cpu" and bench["symbols"] == 2 and bench["trials"] == 4
        assert bench["wall_s"] > 0 and set(bench["split_s"]) >= {"model", "sampling", "optimizer", "store", "startup"}
        assert bench["legacy"]["wall_s"] > 0 and bench["encodes"] >= 1
    figures = result["figures"]
    assert set(figures["startup_s"]) == {"toto", "kronos", "zero"} and figures["zero_ms_per_trial"] > 0
    assert 0 < figures["toto_aggregation_share"] < 1 and figures["toto_speedup_vs_legacy"] > 0
    assert figures["kronos_encodes_per_trial"] > 0 and figures["kronos_legacy_encodes_per_trial"] > 0
