"""Search-space entries from the config (``{float = [lo, hi], log = true}``, ``{int = ...}``,
``{choice = [...]}``, ``{ordered = [...]}``) and their Nevergrad parameters."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from compiled_opt.core.errors import UsageError, did_you_mean

FORMS = ("float", "int", "choice", "ordered")


@dataclass(frozen=True)
class Range:
    """A float or integer interval, optionally searched on a log scale."""

    lo: float
    hi: float
    integer: bool = False
    log: bool = False

    def parameter(self) -> Any:
        import nevergrad as ng

        p = ng.p.Log(lower=self.lo, upper=self.hi) if self.log else ng.p.Scalar(lower=self.lo, upper=self.hi)
        return p.set_integer_casting() if self.integer else p

    def contains(self, value: Any) -> bool:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        whole = not self.integer or (number and float(value).is_integer())
        return number and whole and self.lo <= value <= self.hi

    def extremes(self) -> list[Any]:
        cast = int if self.integer else float
        return [cast(self.lo), cast(self.hi)]


@dataclass(frozen=True)
class Choices:
    """A finite set of values: unordered (``choice``) or ordered, where neighbours are similar (``ordered``)."""

    values: tuple[Any, ...]
    ordered: bool = False

    def parameter(self) -> Any:
        import nevergrad as ng

        return ng.p.TransitionChoice(list(self.values)) if self.ordered else ng.p.Choice(list(self.values))

    def contains(self, value: Any) -> bool:
        return value in self.values

    def extremes(self) -> list[Any]:
        return list(self.values)

    def points(self) -> list[Any]:
        return list(self.values)


Space = Mapping[str, Range | Choices]


def parse_entry(raw: Any, where: str) -> Range | Choices:
    """One space entry, e.g. ``{float = [0.05, 0.4], log = true}``."""
    if not isinstance(raw, Mapping):
        raise UsageError("a search-space entry is a table like {float = [lo, hi]} or {choice = [...]}", where)
    forms = [k for k in raw if k in FORMS]
    extra = [k for k in raw if k not in (*FORMS, "log")]
    if extra:
        raise UsageError(f"unknown key {extra[0]!r}; {did_you_mean(extra[0], (*FORMS, 'log'))}", where)
    if len(forms) != 1:
        raise UsageError(f"give exactly one of {', '.join(FORMS)}", where)
    form, value = forms[0], raw[forms[0]]
    log = raw.get("log", False)
    if not isinstance(log, bool) or (log and form in ("choice", "ordered")):
        raise UsageError("log is true or false, and only for float and int ranges", f"{where}.log")
    if form in ("choice", "ordered"):
        if not isinstance(value, list) or not value:
            raise UsageError(f"{form} needs a non-empty list of values", f"{where}.{form}")
        if len(set(map(repr, value))) != len(value):
            raise UsageError(f"{form} lists a value twice", f"{where}.{form}")
        return Choices(tuple(value), ordered=form == "ordered")
    number = int if form == "int" else (int, float)
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, number) and not isinstance(v, bool) for v in value)
    ):
        raise UsageError(
            f"{form} needs [low, high] as two {'integers' if form == 'int' else 'numbers'}", f"{where}.{form}"
        )
    lo, hi = value
    if not lo < hi:
        raise UsageError(f"empty range [{lo}, {hi}]: low must be below high", f"{where}.{form}")
    if log and lo <= 0:
        raise UsageError(f"a log range needs low > 0, not {lo}", f"{where}.{form}")
    return Range(float(lo), float(hi), integer=form == "int", log=log)


def parse_space(raw: Mapping[str, Any], where: str) -> dict[str, Range | Choices]:
    return {name: parse_entry(entry, f"{where}.{name}") for name, entry in raw.items()}


def parametrization(space: Space, seed: int) -> Any:
    """The Nevergrad parametrization of ``space``, seeded.

    Not flagged as noisy: with common random numbers a config's score is a deterministic function
    of the config, and the flag made NGOpt pick noise-handling optimizers that barely move
    (measured in benchmarks/optimizers.py; tested in test_search.py).
    """
    import nevergrad as ng

    param = ng.p.Dict(**{name: entry.parameter() for name, entry in space.items()})
    param.random_state.seed(seed)
    return param


def grid(space: Space) -> list[dict[str, Any]] | None:
    """Every point of a space made only of choices, or ``None`` if it has a range."""
    if not all(isinstance(entry, Choices) for entry in space.values()):
        return None
    return [
        dict(zip(space, values, strict=True)) for values in itertools.product(*(e.points() for e in space.values()))
    ]


def grid_size(space: Space) -> int | None:
    """How many points ``grid(space)`` has (``None`` with a range), without listing them."""
    if not all(isinstance(entry, Choices) for entry in space.values()):
        return None
    return math.prod(len(entry.values) for entry in space.values())
