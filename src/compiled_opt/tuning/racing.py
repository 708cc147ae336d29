"""Racing: the search's candidates get more runs while they may be the best, and stop when clearly worse.

Every candidate is first scored with the search seeds (``eval_runs``). The best so far, the leader,
was scored with ``max_runs``. A candidate is compared with the leader on their common runs (the same
seeds: paired, as in ``paired``'s runs test); at each look before ``max_runs`` a group-sequential
boundary (``engine.boundaries``, level ``alpha``) says whether it is significantly worse. If it is,
and its own mean is above the leader's, it stops there and is told its mean so far; otherwise it gets
more runs (doubling: 3 -> 6 -> 12). A candidate scored with ``max_runs`` becomes the leader when its
mean is lower. A candidate as good as the leader is stopped with probability at most ``alpha``.

Stopped candidates always score above the leader, and the leader's score only falls, so the
search's lowest score is the leader's and the leader is the one with the lowest score among the
trials so far (which is how a resumed search finds it again). Runs are evaluated in chunks
between looks, through the score memo, so a candidate asked again costs nothing it already had.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from compiled_opt.core.boundaries import SPENDING, boundaries, stage_runs, z_equivalent
from compiled_opt.core.evaluate import Evaluation
from compiled_opt.core.stats import mc_standard_error, paired_differences
from compiled_opt.tuning.acceptance import join_runs, more_seeds
from compiled_opt.tuning.search import Logged, ScoreMemo, params_key


class Race:
    """Scores search candidates in stages against the leader: ``lookup(params, seeds)`` as ``ScoreMemo``'s.

    ``replay``: the logged trials of an interrupted attempt, from which the leader is found again.
    ``stopped`` counts the candidates stopped at each look; ``full`` those scored with ``max_runs``.
    """

    def __init__(
        self,
        memo: ScoreMemo,
        *,
        max_runs: int = 12,
        alpha: float = 0.05,
        spending: str = "pocock",
        replay: Sequence[Logged] = (),
    ):
        if spending not in SPENDING:
            raise ValueError(f"spending must be one of {', '.join(map(repr, SPENDING))}, not {spending!r}")
        if not 0 < alpha < 0.5:
            raise ValueError(f"alpha must be between 0 and 0.5, not {alpha}")
        self.memo, self.max_runs, self.alpha, self.spending = memo, max_runs, alpha, spending
        logged = [t for t in replay if t.score is not None]
        best = min(logged, key=lambda t: t.score) if logged else None
        self.leader: tuple[dict[str, Any], float] | None = (dict(best.params), best.score) if best else None
        self.stopped: Counter[int] = Counter()
        self.full = 0

    def looks(self, seeds: tuple[int, ...]) -> tuple[int, ...]:
        """Runs at each look for a search scored with ``seeds``: eval_runs (at least 2), doubling, max_runs."""
        first = max(2, len(seeds))
        return stage_runs(first, max(first, self.max_runs))

    def runs(self, params: Mapping[str, Any], seeds: tuple[int, ...], runs: int) -> tuple[Evaluation, bool]:
        """``params`` scored with the first ``runs`` runs, chunk by chunk between looks (memoised), and
        whether every chunk was known."""
        looks, extended = self.looks(seeds), more_seeds(seeds, runs)
        edges = [0, *(n for n in looks if n < runs), runs]
        joined, known = None, True
        for start, stop in zip(edges, edges[1:], strict=False):
            part, cached = self.memo.lookup(params, extended[start:stop])
            joined, known = (part if joined is None else join_runs(joined, part)), known and cached
            if part.exact:
                break
        return joined, known

    def lookup(self, params: Mapping[str, Any], seeds: tuple[int, ...]) -> tuple[Evaluation, bool]:
        looks = self.looks(seeds)
        if self.leader is None or params_key(params) == params_key(self.leader[0]):
            return self._finish(params, *self.runs(params, seeds, looks[-1]))
        leader, _ = self.runs(self.leader[0], seeds, looks[-1])
        design = boundaries(looks[:-1], self.alpha, self.spending) if len(looks) > 1 else None
        for look, count in enumerate(looks[:-1]):
            candidate, known = self.runs(params, seeds, count)
            if candidate.exact:
                return self._finish(params, candidate, known)
            if self._worse(candidate, leader, design.efficacy[look]) and candidate.mean > self.leader[1]:
                self.stopped[look + 1] += 1
                return candidate, known
        return self._finish(params, *self.runs(params, seeds, looks[-1]))

    def _worse(self, candidate: Evaluation, leader: Evaluation, bound: float) -> bool:
        """Is the candidate significantly worse than the leader on their common runs?

        The runs test of ``paired`` on ``candidate - leader``, its t statistic turned into the normal
        quantile of the same tail probability and compared with the boundary; without any spread, the
        difference is known and decides.
        """
        common = leader if leader.exact else _first_runs(leader, candidate.runs)
        d = -paired_differences(candidate, common)  # positive: the candidate is worse
        se, df = mc_standard_error(d)
        if se == 0:
            return bool(d.mean() > 0)
        return z_equivalent(d.mean() / se, df) >= bound

    def _finish(self, params: Mapping[str, Any], evaluation: Evaluation, known: bool) -> tuple[Evaluation, bool]:
        """A candidate scored in full: it leads if its mean is the lowest so far."""
        self.full += 1
        if self.leader is None or evaluation.mean < self.leader[1]:
            self.leader = (dict(params), evaluation.mean)
        return evaluation, known

    def summary(self) -> dict[str, Any]:
        """Candidates scored in full and stopped per look (JSON-ready)."""
        return {
            "full": self.full,
            "stopped": {str(k): v for k, v in sorted(self.stopped.items())},
            "max_runs": self.max_runs,
            "alpha": self.alpha,
            "spending": self.spending,
        }


def _first_runs(evaluation: Evaluation, runs: int) -> Evaluation:
    """The evaluation restricted to its first ``runs`` runs."""

    def head(x: Any) -> Any:
        return None if x is None else x[:runs]

    return replace(
        evaluation,
        errors=head(evaluation.errors),
        price_errors=head(evaluation.price_errors),
        return_errors=head(evaluation.return_errors),
        seeds=evaluation.seeds[:runs],
    )
