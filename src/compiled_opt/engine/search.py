"""Nevergrad ask/tell over a model's search space, scoring candidates with the batched evaluator."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import nevergrad as ng

from compiled_opt.engine.errors import UsageError
from compiled_opt.engine.evaluate import Evaluation, Evaluator
from compiled_opt.engine.space import Space, parametrization


@dataclass(frozen=True)
class Trial:
    number: int
    batch: int
    params: dict[str, Any]
    evaluation: Evaluation


@dataclass(frozen=True)
class SearchResult:
    """The optimizer's recommendation (to be re-scored by acceptance) and every trial."""

    recommendation: dict[str, Any]
    trials: list[Trial]
    incumbent_suggested: bool


def plain(value: Any) -> Any:
    """Nevergrad/numpy scalars as plain Python values (for JSON, Parquet and equality)."""
    return value.item() if hasattr(value, "item") else value


def search(evaluator: Evaluator, space: Space, base: Mapping[str, Any], seeds: tuple[int, ...], *,
           optimizer: str, trials: int, batch: int, seed: int, incumbent: Mapping[str, Any] | None = None,
           on_batch: Callable[[list[Trial]], None] = lambda trials: None) -> SearchResult:
    """Run ``trials`` candidates, ``batch`` asked at a time; ``base`` holds the non-searched parameters.

    The incumbent, when it lies inside ``space``, is the first candidate told to the optimizer.
    """
    opt = ng.optimizers.registry[optimizer](parametrization=parametrization(space, seed),
                                           budget=trials, num_workers=batch)
    suggested = incumbent is not None and all(entry.contains(incumbent.get(k)) for k, entry in space.items())
    if suggested:
        opt.suggest({k: incumbent[k] for k in space})
    done: list[Trial] = []
    for batch_no in range(-(-trials // batch)):
        try:
            candidates = [opt.ask() for _ in range(min(batch, trials - len(done)))]
        except ImportError as exc:
            raise UsageError(f"Nevergrad's {optimizer} needs a package that is not installed: {exc}",
                             "search.optimizer") from None
        finished = []
        for cand in candidates:
            params = {**base, **{k: plain(v) for k, v in cand.value.items()}}
            evaluation = evaluator(params, seeds)
            opt.tell(cand, evaluation.mean)
            finished.append(Trial(len(done) + len(finished), batch_no, params, evaluation))
        done.extend(finished)
        on_batch(finished)
    rec = opt.provide_recommendation().value
    return SearchResult({**base, **{k: plain(v) for k, v in rec.items()}}, done, suggested)
