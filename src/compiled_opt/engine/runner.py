"""A run: every symbol x every model searched, judged, stored; the model loaded once per process."""

from __future__ import annotations

import datetime as dt
import json
import traceback
from dataclasses import dataclass
from typing import Any

import compiled_opt
from compiled_opt.engine.acceptance import Decision, Policy, decision_seeds, judge
from compiled_opt.engine.config import Config
from compiled_opt.engine.data import Series, list_symbols, read_series, splits, symbol_path, windows
from compiled_opt.engine.errors import UsageError, did_you_mean
from compiled_opt.engine.evaluate import Evaluator
from compiled_opt.engine.models import Model, make_model, make_runtime
from compiled_opt.engine.plugins import Plugins, build
from compiled_opt.engine.randomness import derive_seeds
from compiled_opt.engine.report import Outcome, Reporter
from compiled_opt.engine.search import Trial, search
from compiled_opt.engine.store import ConfigStore, TrialLog


@dataclass(frozen=True)
class Seeds:
    """Run seeds: ``search`` scores every candidate; ``fresh`` were never used by the search."""

    search: tuple[int, ...]
    fresh: tuple[int, ...]

    @classmethod
    def make(cls, base: int, runs: int) -> "Seeds":
        return cls(tuple(derive_seeds(base, "search", runs)), tuple(derive_seeds(base, "confirm", runs)))


def load_symbols(config: Config) -> list[Series]:
    """Every configured symbol's data, read and checked before any work starts."""
    directory = config.data.directory
    available = list_symbols(directory)
    wanted = available if config.data.symbols == "all" else config.data.symbols
    if not wanted:
        raise UsageError(f"no .parquet files in {directory} (convert CSVs with `compiled-opt data import`)",
                         config.where("data.directory"))
    for symbol in wanted:
        if symbol not in available:
            raise UsageError(f"unknown symbol {symbol!r}: no {symbol_path(directory, symbol)}; "
                             f"{did_you_mean(symbol, available)}", config.where("data.symbols"))
    return [read_series(symbol_path(directory, s), s) for s in wanted]


class Run:
    """One invocation of ``compiled-opt run``: checks everything first, then tunes and stores."""

    def __init__(self, config: Config, plugins: Plugins | None = None, reporter: Reporter | None = None):
        self.config = config
        self.plugins = plugins or Plugins.load()
        self.report = reporter or Reporter()
        acc = config.acceptance
        self.policy: Policy = build(self.plugins.policies.get(acc.policy, config.where("acceptance.policy")),
                                    acc.options, config.where("acceptance.options"))
        self.series = load_symbols(config)
        runtime = make_runtime(config.runtime, config.where("runtime.device"))
        self.models = [make_model(mc, self.plugins, runtime, config) for mc in config.models.values()]
        self.aggregators = {name: self.plugins.aggregators.get(name) for name in self.plugins.aggregators}
        self.store = ConfigStore(config.output.directory)
        self.run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        self.trial_log = TrialLog(config.output.runs / self.run_id / "trials.parquet")
        self.seeds = Seeds.make(config.evaluation.seed, config.evaluation.eval_runs)
        self._check_inputs()

    def _check_inputs(self) -> None:
        """Fail before any work: every symbol has history for the longest context, every stored file reads."""
        d = self.config.data
        for series in self.series:
            for model in self.models:
                windows(series, splits(len(series), d.val_window, d.test_window, d.horizon).validation,
                        model.max_context(), d.horizon)
                self.store.load(model.name, series.symbol)

    def execute(self) -> list[Outcome]:
        outcomes = []
        for series in self.series:
            for model in self.models:
                try:
                    outcomes.append(self.tune(series, model))
                except UsageError:
                    raise
                except Exception as exc:  # one failing symbol must not stop the others
                    self.report.line(traceback.format_exc())
                    outcomes.append(Outcome(series.symbol, model.name, "failed", detail=f"{type(exc).__name__}: {exc}"))
            self.store.update_best(series.symbol, self.config.evaluation.metric)
        self.report.summary(outcomes)
        return outcomes

    def _evaluator(self, model: Model, series: Series, rows: range) -> Evaluator:
        return Evaluator(model.backend, self.aggregators, series, rows, self.config.data.horizon,
                         metric=self.config.evaluation.metric)

    def tune(self, series: Series, model: Model) -> Outcome:
        cfg, symbol = self.config, series.symbol
        split = splits(len(series), cfg.data.val_window, cfg.data.test_window, cfg.data.horizon)
        stored = self.store.load(model.name, symbol)
        incumbent = model.params(stored["config"]) if stored and stored.get("backend") == model.backend_name else None
        self.report.header(model.name, model.backend_name, symbol, cfg.search.trials, len(split.validation),
                           len(split.test), cfg.evaluation.eval_runs, cfg.search.optimizer, cfg.acceptance.policy)
        if stored and incumbent is None:
            self.report.line(f"  stored config {self.store.path(model.name, symbol)} is not comparable (another backend"
                             " or unknown parameters): treated as no incumbent")
        validation = self._evaluator(model, series, split.validation)
        result = search(validation, model.space, model.base, self.seeds.search, optimizer=cfg.search.optimizer,
                        trials=cfg.search.trials, batch=cfg.search.batch, seed=cfg.search.seed, incumbent=incumbent,
                        on_batch=lambda batch: self._log_trials(symbol, model, batch))
        challenger = result.recommendation
        self.report.line(f"  Recommendation: {challenger}")
        if incumbent is None:
            seeds = decision_seeds(self.policy, self.seeds.search, self.seeds.fresh)
            ch_eval, inc_eval = validation(challenger, seeds), None
            decision = Decision(True, "no stored config: saving the first one")
        else:
            verdict = judge(self.policy, validation, challenger, incumbent, self.seeds.search, self.seeds.fresh)
            ch_eval, inc_eval, decision = verdict.challenger, verdict.incumbent, verdict.decision
            self.report.evaluation("Incumbent ", inc_eval)
        self.report.evaluation("Challenger", ch_eval)
        accept = decision.accept or cfg.force
        reason = decision.reason if decision.accept or not cfg.force else f"forced (--force); {decision.reason}"
        self.report.decision(accept, reason, decision.stats)
        previous = stored["validation"][cfg.evaluation.metric] if stored else None
        if not accept:
            return Outcome(symbol, model.name, "no improvement", ch_eval.mean, inc_eval.mean, reason)
        test = self._evaluator(model, series, split.test)(challenger, ch_eval.seeds or self.seeds.search)
        self.report.evaluation("Test (reported, never used to choose)", test)
        self.store.save(model.name, symbol, {
            "symbol": symbol,
            "model": model.name,
            "backend": model.backend_name,
            "config": challenger,
            "validation": ch_eval.to_dict(),
            "test": test.to_dict(),
            "windows": {"val_window": cfg.data.val_window, "test_window": cfg.data.test_window,
                        "forecast_horizon": cfg.data.horizon,
                        "validation_rows": [split.validation.start, split.validation.stop - 1],
                        "test_rows": [split.test.start, split.test.stop - 1]},
            "eval_runs": cfg.evaluation.eval_runs,
            "seeds": {"search": list(self.seeds.search), "decision": list(ch_eval.seeds)},
            "decision": {"accepted": True, "forced": cfg.force and not decision.accept, "reason": reason,
                         "policy": cfg.acceptance.policy, "options": cfg.acceptance.options,
                         "stats": decision.stats},
            "previous": {"config": incumbent, "stored_validation_mae": previous,
                         "rescored_validation": inc_eval.to_dict() if inc_eval else None},
            "metadata": self._metadata(series, model, previous, len(result.trials)),
        })
        status = "new" if inc_eval is None else "improved" if decision.accept else "forced"
        return Outcome(symbol, model.name, status, ch_eval.mean, inc_eval.mean if inc_eval else None, reason)

    def _metadata(self, series: Series, model: Model, previous: float | None, trials: int) -> dict[str, Any]:
        rt = model.backend.runtime
        return {"engine_version": compiled_opt.__version__, "run_id": self.run_id,
                "created_at": dt.datetime.now(dt.timezone.utc).isoformat(), "previous_mae": previous,
                "compiled": rt.compile != "none", "compile_mode": rt.compile, "device": rt.device,
                "dtype": str(rt.dtype).removeprefix("torch."), "optimizer": self.config.search.optimizer,
                "trials": trials, "metric": self.config.evaluation.metric, "data_file": str(series.path),
                "data_rows": len(series), "last_timestamp": int(series.time[-1])}

    def _log_trials(self, symbol: str, model: Model, batch: list[Trial]) -> None:
        self.report.batch(batch)
        self.trial_log.extend([{
            "run_id": self.run_id, "symbol": symbol, "model": model.name, "trial": t.number, "batch": t.batch,
            "params": json.dumps(t.params, sort_keys=True), "score": t.evaluation.mean, "std": t.evaluation.std,
            "sem": t.evaluation.sem, "per_run": [float(x) for x in t.evaluation.per_run],
            "price_mae": t.evaluation.price_mae, "latency_s": t.evaluation.latency_s,
            "seeds": list(t.evaluation.seeds),
        } for t in batch])

