"""Racing against the fixed design: runs spent and the quality of the pick, on real market symbols.

For each symbol and repetition the real search (Nevergrad with the default optimizer, trials and
batch) over the built-in ``bootstrap`` backend's default space runs once per design, with the same
optimizer seed and search seeds:

- ``fixed_3``: every candidate scored with 3 runs (the default ``eval_runs``);
- ``fixed_12``: every candidate scored with 12 runs;
- ``race``: racing (``engine.racing``) 3 -> 6 -> 12 runs, candidates stopped when clearly worse than
  the leader (``--alpha``).

Runs are counted at the evaluator (a run is one config scored on every window with one seed; a
repeated (config, seeds) pair comes from the score memo and costs nothing). Each design's pick is
then scored with ``--truth-runs`` fresh runs on the validation windows (its MAE without the search's
luck) and on the test windows the search never saw, both relative to the backend's defaults scored
the same way. Differences between designs are paired by symbol and repetition.

    python benchmarks/racing.py --table
    python benchmarks/racing.py --json --symbols AEM APP --reps 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from compiled_opt.core.backend import Runtime
from compiled_opt.core.config import SearchConfig
from compiled_opt.core.data import splits
from compiled_opt.core.evaluate import Evaluation, Evaluator
from compiled_opt.core.randomness import derive_seeds
from compiled_opt.core.registry import Plugins
from compiled_opt.core.space import parse_space
from compiled_opt.plugins.backends.bootstrap import BootstrapBackend
from compiled_opt.tuning.racing import Race
from compiled_opt.tuning.search import ScoreMemo, search

from market import load_symbol

SYMBOLS = ("AEM", "APP", "CRDO", "HUBS", "NU", "TOST", "XPO", "WING")
DESIGNS = ("fixed_3", "fixed_12", "race")
VAL_WINDOW, TEST_WINDOW = 30, 20


class Counting:
    """An evaluator that counts the runs it scores."""

    def __init__(self, evaluator: Evaluator):
        self.evaluator, self.runs = evaluator, 0

    def __call__(self, params: Mapping[str, Any], seeds: tuple[int, ...]) -> Evaluation:
        result = self.evaluator(params, seeds)
        self.runs += result.runs
        return result


def searched(
    design: str, evaluator: Evaluator, space: dict, seed: int, search_config: SearchConfig, alpha: float
) -> dict[str, Any]:
    """One design's search: its pick, the pick's search score, runs spent and (racing) stops per look."""
    counting = Counting(evaluator)
    memo = ScoreMemo(counting)
    race = Race(memo, max_runs=12, alpha=alpha) if design == "race" else None
    runs = 12 if design == "fixed_12" else 3
    result = search(
        race or memo,
        space,
        {},
        tuple(derive_seeds(seed, "search", runs)),
        optimizer=search_config.optimizer,
        trials=search_config.trials,
        batch=search_config.batch,
        seed=seed,
        incumbent=BootstrapBackend.defaults,
    )
    best = min((t for t in result.trials if t.score is not None), key=lambda t: t.score)
    return {
        "pick": result.recommendation,
        "search_score": best.score,
        "pick_runs": best.runs,
        "runs": counting.runs,
        "race": race.summary() if race else None,
    }


def one(
    symbol: str, rep: int, seed: int, truth_runs: int, search_config: SearchConfig, alpha: float, plugins: Plugins
) -> dict[str, Any]:
    """Every design on one symbol and repetition, with the picks' true validation and test MAEs."""
    series = load_symbol(symbol)
    cut = splits(len(series), VAL_WINDOW, TEST_WINDOW, 1)
    aggregators = {name: plugins.aggregators.get(name) for name in plugins.aggregators}
    backend = BootstrapBackend(Runtime())
    space = parse_space(BootstrapBackend.default_space, "bootstrap")
    base = derive_seeds(seed, "repetition", rep + 1, symbol)[rep]

    def evaluator(rows: range) -> Evaluator:
        return Evaluator(backend, aggregators, series, rows, 1, max_samples=1024)

    val, test = evaluator(cut.validation), evaluator(cut.test)
    truth = tuple(derive_seeds(base, "truth", truth_runs))
    defaults = {"val": val(BootstrapBackend.defaults, truth).mean, "test": test(BootstrapBackend.defaults, truth).mean}
    out = {"symbol": symbol, "rep": rep}
    for design in DESIGNS:
        found = searched(design, val, space, base, search_config, alpha)
        true_val = val(found["pick"], truth).mean
        found["val_change_pct"] = 100 * (true_val / defaults["val"] - 1)
        found["test_change_pct"] = 100 * (test(found["pick"], truth).mean / defaults["test"] - 1)
        found["search_optimism_pct"] = 100 * (found["search_score"] / true_val - 1)
        out[design] = found
    return out


def paired(rows: list[dict], a: str, b: str, key: str) -> dict[str, float]:
    """Mean of ``a - b`` over symbols and repetitions, with its standard error."""
    d = np.array([r[a][key] - r[b][key] for r in rows])
    return {"mean": float(d.mean()), "se": float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("nan")}


def run(symbols=SYMBOLS, reps: int = 4, truth_runs: int = 64, alpha: float = 0.05, seed: int = 20240607) -> dict:
    """The whole benchmark as one JSON-ready dict."""
    start = time.perf_counter()
    plugins, config = Plugins.load(), SearchConfig()
    rows = [one(s, r, seed, truth_runs, config, alpha, plugins) for s in symbols for r in range(reps)]
    designs = {}
    for design in DESIGNS:
        runs = np.array([r[design]["runs"] for r in rows])
        designs[design] = {
            "mean_runs_per_search": float(runs.mean()),
            "mean_runs_per_candidate": float(runs.mean() / config.trials),
            "val_change_pct": float(np.mean([r[design]["val_change_pct"] for r in rows])),
            "test_change_pct": float(np.mean([r[design]["test_change_pct"] for r in rows])),
            "search_optimism_pct": float(np.mean([r[design]["search_optimism_pct"] for r in rows])),
        }
    stopped: dict[str, int] = {}
    for r in rows:
        for look, count in r["race"]["race"]["stopped"].items():
            stopped[look] = stopped.get(look, 0) + count
    comparisons = {
        f"race - {other}": {key: paired(rows, "race", other, key) for key in ("val_change_pct", "test_change_pct")}
        for other in ("fixed_3", "fixed_12")
    }
    return {
        "benchmark": "racing",
        "settings": {
            "symbols": list(symbols),
            "reps": reps,
            "truth_runs": truth_runs,
            "alpha": alpha,
            "seed": seed,
            "optimizer": config.optimizer,
            "trials": config.trials,
            "batch": config.batch,
            "backend": "bootstrap (default space)",
            "val_window": VAL_WINDOW,
            "test_window": TEST_WINDOW,
        },
        "designs": designs,
        "race_stopped_per_look": stopped,
        "race_saved_vs_fixed_12": 1
        - designs["race"]["mean_runs_per_search"] / designs["fixed_12"]["mean_runs_per_search"],
        "comparisons": comparisons,
        "rows": rows,
        "elapsed_s": time.perf_counter() - start,
    }


def table(result: dict[str, Any]) -> str:
    """The designs side by side, then the paired differences of racing against each fixed design."""
    lines = [
        f"{'design':10s}{'runs/search':>13s}{'runs/cand.':>12s}{'val vs defaults':>17s}{'test vs defaults':>18s}"
        f"{'search optimism':>17s}"
    ]
    for name, d in result["designs"].items():
        lines.append(
            f"{name:10s}{d['mean_runs_per_search']:13.1f}{d['mean_runs_per_candidate']:12.2f}"
            f"{d['val_change_pct']:+16.2f}%{d['test_change_pct']:+17.2f}%{d['search_optimism_pct']:+16.2f}%"
        )
    lines.append(
        f"\nracing saves {100 * result['race_saved_vs_fixed_12']:.1f}% of fixed_12's runs; candidates stopped"
        f" per look: {result['race_stopped_per_look']}"
    )
    for name, c in result["comparisons"].items():
        lines.append(
            f"{name}: val {c['val_change_pct']['mean']:+.3f} (SE {c['val_change_pct']['se']:.3f}) points,"
            f" test {c['test_change_pct']['mean']:+.3f} (SE {c['test_change_pct']['se']:.3f}) points"
        )
    lines.append(f"\n{result['settings']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON object (the default)")
    out.add_argument("--table", action="store_true", help="print a readable table")
    parser.add_argument("--symbols", nargs="+", default=list(SYMBOLS), help="market CSVs in ../shared/data/market")
    parser.add_argument("--reps", type=int, default=4, help="repetitions (optimizer and run seeds) per symbol")
    parser.add_argument("--truth-runs", type=int, default=64, help="fresh runs scoring each pick")
    parser.add_argument("--alpha", type=float, default=0.05, help="racing: level of the 'clearly worse' test")
    parser.add_argument("--seed", type=int, default=20240607)
    args = parser.parse_args(argv)
    result = run(args.symbols, args.reps, args.truth_runs, args.alpha, args.seed)
    print(table(result) if args.table else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
