"""The search over a model's space: Nevergrad ask/tell, or every point of a small discrete space.

Scores are deterministic (common random numbers: a config scored twice with the same seeds gets
the same errors), so the search keeps a score memo, tells a repeated candidate its known score
without evaluating it again, and recommends the best candidate it scored.
"""

from __future__ import annotations

import json
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from compiled_opt.core.backend import ContractError
from compiled_opt.core.errors import UsageError, did_you_mean
from compiled_opt.core.evaluate import BoundedCache, Evaluation
from compiled_opt.core.space import Space, grid, grid_size, parametrization

# What scoring a point costs when its draw is cached, in trials that draw; it decides when `exhaustive =
# "auto"` scores a grid. Measured with benchmarks/bench_run.py (Toto-small, 2 CPU cores): a draw of 4096
# samples for 250 windows x 3 runs about 0.2 s, a sample count's table of every aggregator (one sort and one
# matrix product) about 7 ms, a point whose table exists about 0.1 ms; rounded up.
CACHED_COUNT_COST = 0.05
CACHED_POINT_COST = 0.001

MEMO_BYTES = 256 * 2**20  # a search's evaluations held by its memo: a symbol's search (~25 kB each) keeps all


def optimizer_names() -> list[str]:
    import nevergrad as ng

    return sorted(ng.optimizers.registry)


def check_optimizer(name: str, where: str) -> None:
    """A ``UsageError`` at ``where`` unless ``name`` is in Nevergrad's registry (importing Nevergrad)."""
    known = optimizer_names()
    if name not in known:
        raise UsageError(
            f"unknown optimizer {name!r}; "
            + did_you_mean(name, known).split("allowed:")[0]
            + "see nevergrad.optimizers.registry",
            where,
        )


def plain(value: Any) -> Any:
    """Nevergrad/numpy scalars as plain Python values (for JSON, Parquet and equality)."""
    return value.item() if hasattr(value, "item") else value


def params_key(params: Mapping[str, Any]) -> str:
    """A config's identity: its parameters as canonical JSON."""
    return json.dumps(params, sort_keys=True)


@dataclass(frozen=True)
class Trial:
    """One candidate and its score (``None``: it failed, ``error`` says why) over ``runs`` runs.
    ``evaluation`` is held only while its batch is reported (``search``'s ``on_batch``), so that a search
    keeps scores, not errors; it is ``None`` for a failed or ``replayed`` trial (re-told from the log of an
    interrupted attempt); ``cached`` when its score came from the memo, without scoring it again."""

    number: int
    batch: int
    params: dict[str, Any]
    score: float | None
    evaluation: Evaluation | None = None
    runs: int = 0
    cached: bool = False
    replayed: bool = False
    error: str = ""
    traceback: str = ""


@dataclass(frozen=True)
class Logged:
    """A trial from an earlier, interrupted attempt at the same job (for resuming): params and score."""

    params: dict[str, Any]
    score: float | None


@dataclass(frozen=True)
class SearchResult:
    """The best scored config (to be re-scored by acceptance), every trial, and how it searched."""

    recommendation: dict[str, Any]
    trials: list[Trial]
    incumbent_suggested: bool
    method: str  # "NGOpt" (an optimizer's name) or "exhaustive"


class ScoreMemo:
    """``evaluate(params, seeds)`` remembered: the same config and seeds are not scored twice while its
    evaluation is held. Evaluations are held up to ``max_bytes`` of their arrays, least recently used first
    out (a pooled stage's evaluation over 10,000 symbols is about 200 MB); one let go is scored again when
    asked, with the same result: its draws are keyed by its seeds."""

    def __init__(
        self, evaluate: Callable[[Mapping[str, Any], tuple[int, ...]], Evaluation], max_bytes: int = MEMO_BYTES
    ):
        self.evaluate = evaluate
        self.known = BoundedCache(max_bytes)

    def __call__(self, params: Mapping[str, Any], seeds: tuple[int, ...]) -> Evaluation:
        return self.lookup(params, seeds)[0]

    def lookup(self, params: Mapping[str, Any], seeds: tuple[int, ...]) -> tuple[Evaluation, bool]:
        """The evaluation and whether it was held already."""
        key = (params_key(params), tuple(seeds))
        held = key in self.known.entries
        return self.known.get(key, lambda: self.evaluate(params, seeds)), held


class SearchFailed(RuntimeError):
    """Every candidate of a search failed."""


class ResumeMismatch(RuntimeError):
    """A resumed search asked other candidates than the interrupted one logged."""


def exhaustive_cost(space: Space, cached_samples: str | None) -> float | None:
    """Scoring every point of ``space``, in trials; ``None`` if it is not a grid.

    Points differing only in the aggregator, or in ``cached_samples`` (the backend's sample-count
    parameter when the sample cache serves it), share one draw; each sample count of a draw costs
    ``CACHED_COUNT_COST`` (its table of every aggregator) and each point ``CACHED_POINT_COST``.
    """
    size = grid_size(space)
    if size is None:
        return None
    tables = size // len(space["aggregate"].values) if "aggregate" in space else size
    draws = tables // len(space[cached_samples].values) if cached_samples in space else tables
    return draws + tables * CACHED_COUNT_COST + size * CACHED_POINT_COST


class _Optimizer:
    """Nevergrad's ask/tell for ``budget`` candidates."""

    def __init__(self, space: Space, name: str, budget: int, batch: int, seed: int, first: dict | None):
        import nevergrad as ng

        self.opt = ng.optimizers.registry[name](
            parametrization=parametrization(space, seed), budget=budget, num_workers=batch
        )
        if first is not None:
            self.opt.suggest(first)
        self.left, self.pending = budget, []

    def ask(self, n: int) -> list[dict[str, Any]]:
        with warnings.catch_warnings():  # numeric warnings from its internal models (scipy, sklearn)
            warnings.simplefilter("ignore", RuntimeWarning)
            self.pending = [self.opt.ask() for _ in range(min(n, self.left))]
        self.left -= len(self.pending)
        return [{k: plain(v) for k, v in c.value.items()} for c in self.pending]

    def tell(self, scores: Sequence[float | None]) -> None:
        with warnings.catch_warnings():  # nevergrad warns about the infinite loss of a failed candidate
            warnings.simplefilter("ignore")
            for candidate, score in zip(self.pending, scores, strict=True):
                self.opt.tell(candidate, FAILED_LOSS if score is None else score)


class _Grid:
    """Every point of a discrete space, in order."""

    def __init__(self, points: list[dict[str, Any]]):
        self.points = points
        self.left = len(points)

    def ask(self, n: int) -> list[dict[str, Any]]:
        start = len(self.points) - self.left
        self.left -= min(n, self.left)
        return self.points[start : len(self.points) - self.left]

    def tell(self, scores: Sequence[float | None]) -> None:
        pass


FAILED_LOSS = float("inf")  # what the optimizer is told for a candidate that failed


def search(
    evaluate: ScoreMemo,
    space: Space,
    base: Mapping[str, Any],
    seeds: tuple[int, ...],
    *,
    optimizer: str,
    trials: int,
    batch: int,
    seed: int,
    incumbent: Mapping[str, Any] | None = None,
    exhaustive: bool = False,
    replay: Sequence[Logged] = (),
    on_batch: Callable[[list[Trial]], None] = lambda trials: None,
) -> SearchResult:
    """Score ``trials`` candidates, ``batch`` at a time (every grid point if ``exhaustive``).

    ``base`` holds the non-searched parameters. The incumbent, when it lies inside ``space``, is the
    first candidate. A candidate that raises is told as failed and the search goes on. ``replay``
    re-tells an interrupted attempt's trials without scoring them (resume): with the same seed the
    optimizer asks exactly what it asked before, which is checked.
    """
    suggested = incumbent is not None and all(entry.contains(incumbent.get(k)) for k, entry in space.items())
    first = {k: incumbent[k] for k in space} if suggested else None
    if exhaustive:
        points = grid(space)
        asker: _Optimizer | _Grid = _Grid(([first] if first else []) + [p for p in points if p != first])
    else:
        try:
            asker = _Optimizer(space, optimizer, trials, batch, seed, first)
        except ImportError as exc:
            raise UsageError(
                f"Nevergrad's {optimizer} needs a package that is not installed: {exc}", "search.optimizer"
            ) from None
    done: list[Trial] = []
    replay = list(replay)
    while asker.left:
        batch_no = len({t.batch for t in done})
        finished = []
        for values in asker.ask(batch):
            number, params = len(done) + len(finished), {**base, **values}
            if replay:
                logged = replay.pop(0)
                if logged.params != params:
                    raise ResumeMismatch(
                        f"trial {number}: the resumed search asked {values}; the log has {logged.params}"
                    )
                finished.append(Trial(number, batch_no, params, logged.score, replayed=True))
            else:
                finished.append(_score(evaluate, params, seeds, number, batch_no))
        asker.tell([t.score for t in finished])
        fresh = [t for t in finished if not t.replayed]
        if fresh:
            on_batch(fresh)
        done.extend(replace(t, evaluation=None) for t in finished)
    scored = [t for t in done if t.score is not None]
    if not scored:
        first_error = next((t.error for t in done if t.error), "")
        raise SearchFailed(f"all {len(done)} candidates failed; the first: {first_error}")
    best = min(scored, key=lambda t: t.score)
    return SearchResult(dict(best.params), done, suggested, "exhaustive" if exhaustive else optimizer)


def _score(evaluate: ScoreMemo, params: dict[str, Any], seeds: tuple[int, ...], number: int, batch: int) -> Trial:
    try:
        evaluation, cached = evaluate.lookup(params, seeds)
    except (UsageError, ContractError):  # bad input or a broken plugin: every candidate would fail
        raise
    except Exception as exc:  # a failing candidate is told as failed; the search goes on
        return Trial(
            number, batch, params, None, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()
        )
    return Trial(number, batch, params, evaluation.mean, evaluation, evaluation.runs, cached=cached)
