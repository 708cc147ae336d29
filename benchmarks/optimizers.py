"""Which Nevergrad optimizer should a search use? Quality, exploration and overhead, measured.

``python benchmarks/optimizers.py --json`` runs, for each optimizer (and NGOpt with the
parametrization flagged noisy, as compiled-opt 0.1 did), a ``--trials`` search of the bootstrap
backend's default space on the validation windows of ``--symbols`` real symbols from ../shared,
with ``--seeds`` optimizer seeds each, through the engine's own ``search``. Per optimizer:

- ``gap_pct``: how far its best validation score is above the best any optimizer found for that
  symbol and seed (mean over symbols and seeds; lower is better);
- ``distinct``: mean number of distinct values visited of each numeric parameter;
- ``recommend_worse``: how often Nevergrad's own ``provide_recommendation()`` was worse than the
  best scored trial (compiled-opt recommends the best scored trial);
- ``overhead_ms``: ask + tell per trial with a zero-cost objective (the optimizer alone).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from compiled_opt.core.backend import Runtime
from compiled_opt.core.data import splits
from compiled_opt.core.evaluate import Evaluator
from compiled_opt.core.randomness import derive_seeds
from compiled_opt.core.registry import Plugins
from compiled_opt.core.space import Range, parametrization, parse_space
from compiled_opt.plugins.backends.bootstrap import BootstrapBackend
from compiled_opt.tuning.search import ScoreMemo, plain

from market import MARKET, load_symbol

OPTIMIZERS = (
    "NGOpt",
    "NGOpt+noisy",
    "TwoPointsDE",
    "DiscreteLenglerOnePlusOne",
    "PortfolioDiscreteOnePlusOne",
    "CMA",
    "RandomSearch",
)


def noisy_flag(name: str) -> tuple[str, bool]:
    return name.removesuffix("+noisy"), name.endswith("+noisy")


def overhead_ms(space, name: str, trials: int, batch: int) -> float:
    import nevergrad as ng

    opt_name, noisy = noisy_flag(name)
    param = parametrization(space, 0)
    param.function.deterministic = not noisy
    opt = ng.optimizers.registry[opt_name](parametrization=param, budget=trials, num_workers=batch)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(trials // batch):
        cands = [opt.ask() for _ in range(batch)]
        for c in cands:
            opt.tell(c, float(rng.random()))
    return 1000 * (time.perf_counter() - start) / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=12, help="how many market symbols (alphabetical)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS))
    parser.add_argument("--overhead-only", action="store_true", help="only the optimizers' own cost (quick)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.overhead_only:
        space = parse_space(BootstrapBackend.default_space, "bootstrap default space")
        out = {
            name: min(overhead_ms(space, name, args.trials, args.batch) for _ in range(3)) for name in args.optimizers
        }
        print(json.dumps({"overhead_ms": out}))
        return

    plugins = Plugins.load()
    aggregators = {n: plugins.aggregators.get(n) for n in plugins.aggregators}
    space = parse_space(BootstrapBackend.default_space, "bootstrap default space")
    numeric = [k for k, e in space.items() if isinstance(e, Range)]
    base = dict(BootstrapBackend.defaults)
    backend = BootstrapBackend(Runtime())
    symbols = sorted(p.stem for p in MARKET.glob("*.csv"))[: args.symbols]
    seeds = tuple(derive_seeds(0, "search", 3))
    best: dict[tuple[str, int], float] = {}
    runs: dict[str, list[dict]] = {name: [] for name in args.optimizers}
    for symbol in symbols:
        series = load_symbol(symbol)
        memo = ScoreMemo(Evaluator(backend, aggregators, series, splits(len(series), 30, 20, 1).validation, 1))
        for seed in range(args.seeds):
            for name in args.optimizers:
                opt_name, noisy = noisy_flag(name)
                trials, recommended = _search(memo, space, base, seeds, opt_name, noisy, args, seed)
                score = min(s for _, s in trials)
                runs[name].append(
                    {
                        "symbol": symbol,
                        "seed": seed,
                        "best": score,
                        "recommended": memo(recommended, seeds).mean,
                        "distinct": {k: len({p[k] for p, _ in trials}) for k in numeric},
                    }
                )
                best[(symbol, seed)] = min(best.get((symbol, seed), np.inf), score)
    out = {"symbols": len(symbols), "seeds": args.seeds, "trials": args.trials, "optimizers": {}}
    for name, rows in runs.items():
        gaps = [100 * (r["best"] / best[(r["symbol"], r["seed"])] - 1) for r in rows]
        out["optimizers"][name] = {
            "gap_pct": float(np.mean(gaps)),
            "gap_pct_max": float(np.max(gaps)),
            "distinct": {k: float(np.mean([r["distinct"][k] for r in rows])) for k in numeric},
            "recommend_worse": float(np.mean([r["recommended"] > r["best"] for r in rows])),
            "overhead_ms": overhead_ms(space, name, args.trials, args.batch),
        }
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))


def _search(memo, space, base, seeds, name, noisy, args, seed):
    """A plain ask/tell search (the engine's loop without its extras), with the noisy flag as asked.

    Returns every trial's (params, score) and Nevergrad's own recommendation."""
    import nevergrad as ng

    param = parametrization(space, seed)
    param.function.deterministic = not noisy
    opt = ng.optimizers.registry[name](parametrization=param, budget=args.trials, num_workers=args.batch)
    trials = []
    for _ in range(args.trials // args.batch):
        cands = [opt.ask() for _ in range(args.batch)]
        for c in cands:
            params = {**base, **{k: plain(v) for k, v in c.value.items()}}
            score = memo(params, seeds).mean
            opt.tell(c, score)
            trials.append((params, score))
    rec = {**base, **{k: plain(v) for k, v in opt.provide_recommendation().value.items()}}
    return trials, rec


if __name__ == "__main__":
    main()
