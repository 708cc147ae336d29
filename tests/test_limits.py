"""Limits checked before any work: absurd trials, runs, threads or memory are one line naming the key and the
limit, nothing is written, and --allow-large lifts them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_config
from test_cli import snapshot

from compiled_opt.commands.cli import main
from compiled_opt.run import limits


def edit(old: str, new: str):
    return lambda text: text.replace(old, new)


CORES = limits.cores()
CASES = [
    (edit("trials = 4", "trials = 1000000000"), [], "search.trials: 1000000000 is above the limit of 100000 trials"),
    (
        edit("[search]", "[evaluation]\neval_runs = 1000000\n[search]"),
        [],
        "evaluation.eval_runs: 1000000 is above the limit of 1000 runs per config",
    ),
    (
        edit("[search]", "[search]\nracing = true\nracing_max_runs = 5000"),
        [],
        "search.racing_max_runs: 5000 is above the limit of 1000 runs per config",
    ),
    (
        edit("[search]", f"[runtime]\nthreads = {10**8}\n[search]"),
        [],
        f"runtime.threads: {10**8} is above the limit of {CORES} threads (the cores of this machine)",
    ),
    (lambda text: text, ["--trials", "200000"], "error: --trials: 200000 is above the limit of 100000 trials"),
    (lambda text: text, ["--eval-runs", "5000"], "error: --eval-runs: 5000 is above the limit of 1000 runs"),
    (
        edit("num_samples = 64", "num_samples = 100000000"),
        [],
        "models.bootstrap: one evaluation of model 'bootstrap' needs about 268.2 GiB (3 runs x 30 windows x 100000000"
        " samples x 1 steps x 32 bytes), more than the",
    ),
    (
        edit("[search]", '[acceptance]\npolicy = "sequential"\noptions = { max_runs = 100000000 }\n[search]'),
        [],
        "acceptance.options.max_runs: must be an integer from 2 to 1000, not 100000000",
    ),
]


@pytest.mark.parametrize("change, flags, message", CASES)
def test_an_input_above_its_limit_is_refused_before_any_work(tmp_path, market_dir, capsys, change, flags, message):
    config = write_config(tmp_path, market_dir, trials=4)
    assert main(["run", str(config), "--symbols", "APP", "-q"]) == 0
    before = stored(tmp_path)
    capsys.readouterr()
    config.write_text(change(config.read_text()))
    assert main(["run", str(config), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert "(--allow-large to run it anyway)" in err or "max_runs" in message
    assert stored(tmp_path) == before


def stored(root):
    return snapshot(root / "hyperparams"), snapshot(root / "runs")


def test_allow_large_lifts_the_limits(tmp_path, market_dir, capsys, monkeypatch):
    config = write_config(tmp_path, market_dir, trials=4)
    config.write_text(config.read_text().replace("[search]", f"[runtime]\nthreads = {CORES + 1}\n[search]"))
    monkeypatch.setattr(limits, "free_memory", lambda device: ("cpu", 1000))  # a machine with 1000 bytes free
    assert main(["run", str(config), "--symbols", "APP"]) == 2
    assert "runtime.threads" in capsys.readouterr().err
    config.write_text(config.read_text().replace(f"threads = {CORES + 1}", "threads = 1"))
    assert main(["run", str(config), "--symbols", "APP"]) == 2
    assert "more than the 0.0 GiB free on this machine's cpu (--allow-large" in capsys.readouterr().err
    assert main(["run", str(config), "--symbols", "APP", "--allow-large", "-q"]) == 0


PEAK = """
import sys
from compiled_opt.core.backend import Runtime
from compiled_opt.core.data import read_series
from compiled_opt.core.evaluate import Evaluator
from compiled_opt.core.registry import Plugins
from compiled_opt.plugins.backends.bootstrap import BootstrapBackend


def memory(field):
    with open("/proc/self/status") as fh:
        return int(next(line for line in fh if line.startswith(field)).split()[1]) * 1024


plugins = Plugins.load()
aggregators = {name: plugins.aggregators.get(name) for name in plugins.aggregators}
series = read_series(sys.argv[1])
runs, windows, samples = 48, 250, 1024  # 96 MiB of float64 samples: far above the process's noise
rows = range(len(series) - windows, len(series))
evaluate = Evaluator(BootstrapBackend(Runtime()), aggregators, series, rows, 1, max_samples=samples)
params = {"lookback": 60, "vol_scale": 1.0, "num_samples": 64, "aggregate": "mean"}
evaluate(params, (0,))  # everything but the samples: loaded and warm
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # the peak (VmHWM) starts again from here
before = memory("VmRSS:")
evaluate({**params, "num_samples": samples, "aggregate": "trimmed_mean_10"}, tuple(range(runs)))
print((memory("VmHWM:") - before) / (runs * windows * samples))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="measures the peak through Linux's /proc")
def test_the_memory_estimate_is_what_an_evaluation_takes(market_dir):
    """The estimate's bytes per sample against the peak memory of a real bootstrap evaluation, in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", PEAK, str(market_dir / "APP.parquet")], capture_output=True, text=True, check=True
    ).stdout
    assert 0.5 * limits.BYTES_PER_SAMPLE < float(out) <= limits.BYTES_PER_SAMPLE
