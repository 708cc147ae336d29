"""Does tuning help on rows the search never saw? The real pipeline, per validation design.

``python benchmarks/generalization.py --json`` imports every symbol of ../shared/data/market, hides
its last ``--hidden`` rows from the tool, and for each design runs ``compiled-opt run`` (the real
driver, the bootstrap backend with the bundled config's space) on the visible rows; then it scores
the stored configs against the model's defaults on the hidden rows (``compiled-opt evaluate``'s
forward test, fresh seeds). Per design, averaged over ``--seeds`` search seeds:

- ``validation_change_pct``: the stored configs' validation score (in the design's objective, the return
  MAE unless it says otherwise) against the defaults' (re-scored on the same windows and seeds at decision
  time), mean over symbols;
- ``hidden_change_pct`` (and its sem over symbols): the return MAE's change on the hidden rows: the product;
- ``better`` / ``worse``: symbols whose hidden-row MAE is below / above the defaults';
- ``changed`` and ``helped``: symbols whose stored config is not the defaults, and the share of those
  that are better on the hidden rows;
- ``metrics``: every registered metric on the hidden rows, in its own units (a hit rate, a return per
  row): the stored configs', the defaults' and the naive forecast's mean over symbol-runs, the stored
  configs' mean difference from the defaults with its sem over symbol-runs, and how many were better.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from compiled_opt.commands.evaluate import Selection, forward_test
from compiled_opt.commands.importer import import_csvs
from compiled_opt.core.config import load_config
from compiled_opt.core.registry import Plugins
from compiled_opt.run.console import Console
from compiled_opt.run.driver import Run
from compiled_opt.store.stores import ConfigStore

from market import MARKET

ROOT = Path(__file__).resolve().parents[1]
SPACE = (ROOT / "compiled_opt.toml").read_text().split("[models.bootstrap]", 1)[1]
DESIGNS = {
    "seed (30 windows, NGOpt, 40 trials)": dict(val_window=30, optimizer="NGOpt", trials=40),
    "30 windows": dict(val_window=30),
    "120 windows": dict(val_window=120),
    "250 windows": dict(val_window=250),
    "30 windows + pooled": dict(val_window=30, pooled=True),
    "120 windows + pooled": dict(val_window=120, pooled=True),
    "250 windows + pooled": dict(val_window=250, pooled=True),
    "250 windows, 100 trials": dict(val_window=250, trials=100),
    "120 windows + pooled, 100 trials": dict(val_window=120, pooled=True, trials=100),
    "250 windows + pooled, 100 trials": dict(val_window=250, pooled=True, trials=100),
    "the defaults, tuned on CRPS": dict(val_window=250, pooled=True, trials=100, metric="crps"),
}


def config_text(
    data: Path,
    out: Path,
    seed: int,
    val_window: int = 30,
    optimizer: str = "TwoPointsDE",
    trials: int = 40,
    pooled: bool = False,
    metric: str = "pct_return_mae",
) -> str:
    return f"""
[data]
directory = "{data}"
val_window = {val_window}
test_window = 20
[evaluation]
metric = "{metric}"
[search]
optimizer = "{optimizer}"
trials = {trials}
seed = {seed}
[pooled]
enabled = {str(pooled).lower()}
[output]
directory = "{out / "hyperparams"}"
runs = "{out / "runs"}"
[runtime]
device = "cpu"
[models.bootstrap]{SPACE}"""


def visible_copy(full: Path, visible: Path, hidden: int) -> None:
    visible.mkdir()
    for path in sorted(full.glob("*.parquet")):
        table = pq.read_table(path)
        pq.write_table(table.slice(0, table.num_rows - hidden), visible / path.name)


def run_design(full: Path, visible: Path, work: Path, seed: int, hidden: int, **design) -> dict:
    out = work / f"design-{time.monotonic_ns()}"
    out.mkdir()
    tune = out / "tune.toml"
    tune.write_text(config_text(visible, out, seed, **design))
    plugins = Plugins.load()
    Run(load_config(tune), plugins=plugins, console=Console(level="warning", stream=open("/dev/null", "w"))).execute()
    check = out / "check.toml"
    check.write_text(config_text(full, out, seed, **design))
    results, _ = forward_test(load_config(check), plugins, Selection(rows=f"-{hidden}:"))
    store = ConfigStore(out / "hyperparams")
    rows = []
    for r in results:
        rec = store.load(r.model, r.symbol)  # a first run: the reference re-scored at decision time is the defaults
        defaults_val = rec.previous.rescored_validation.value
        rows.append(
            {
                "symbol": r.symbol,
                "validation_change": rec.validation.value / defaults_val - 1,
                "hidden_change": r.oos.change,
                "changed": rec.status != "kept defaults",
                "metrics": r.oos.metrics,
            }
        )
    return rows


def summarise(rows: list[dict], metrics: dict) -> dict:
    hidden = np.array([r["hidden_change"] for r in rows])
    changed = [r for r in rows if r["changed"]]
    return {
        "symbols": len(rows),
        "validation_change_pct": 100 * float(np.mean([r["validation_change"] for r in rows])),
        "hidden_change_pct": 100 * float(hidden.mean()),
        "hidden_sem_pct": 100 * float(hidden.std(ddof=1) / np.sqrt(hidden.size)),
        "better": int((hidden < 0).sum()),
        "worse": int((hidden > 0).sum()),
        "changed": len(changed),
        "helped": float(np.mean([r["hidden_change"] < 0 for r in changed])) if changed else None,
        "metrics": {name: per_metric([r["metrics"][name] for r in rows], metric) for name, metric in metrics.items()},
    }


def per_metric(comparisons: list, metric) -> dict:
    """One metric over symbol-runs, in its own units (``Metric.shown``)."""
    shown = {k: np.array([metric.shown(getattr(c, k)) for c in comparisons]) for k in ("config", "defaults", "naive")}
    diff = shown["config"] - shown["defaults"]
    return {
        **{k: float(v.mean()) for k, v in shown.items()},
        "difference": float(diff.mean()),
        "difference_sem": float(diff.std(ddof=1) / np.sqrt(diff.size)),
        "better": int(sum(c.difference > 0 for c in comparisons)),
        "higher_is_better": metric.higher_is_better,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hidden", type=int, default=100, help="rows hidden from the tool at the end of each symbol")
    parser.add_argument("--seeds", type=int, default=2, help="search seeds per design")
    parser.add_argument("--designs", nargs="+", default=list(DESIGNS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out = {"hidden_rows": args.hidden, "seeds": args.seeds, "designs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        full = work / "full"
        import_csvs(sorted(MARKET.glob("*.csv")), full)
        visible_copy(full, work / "visible", args.hidden)
        for name in args.designs:
            start = time.perf_counter()
            rows = [
                r
                for seed in range(args.seeds)
                for r in run_design(full, work / "visible", work, seed, args.hidden, **DESIGNS[name])
            ]
            plugins = Plugins.load()
            metrics = {n: plugins.metrics.get(n) for n in plugins.metrics}
            out["designs"][name] = {**summarise(rows, metrics), "seconds": time.perf_counter() - start}
            if not args.json:
                print(name, json.dumps(out["designs"][name]), flush=True)
    print(json.dumps(out) if args.json else "")


if __name__ == "__main__":
    main()
