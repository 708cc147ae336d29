"""Dataclasses to JSON values and back, every value checked against its annotation.

``load(cls, raw, where)`` builds ``cls`` from parsed JSON. A value of the wrong type, a missing key or
an unknown enum value is a one-line ``UsageError`` naming the file and the key, e.g.
``hyperparams/x/APP.json: validation.per_run[2]: expected a number, got str 'abc'``; so is a value a
dataclass's ``checks()`` (field -> problem or ``None``, as the config sections have) refuses, e.g. a
negative MAE. Keys the dataclass does not know are ignored. Supported annotations: ``bool``, ``int``,
``float``, ``str``, ``Any``, ``X | None``, ``list[X]``, ``tuple[X, ...]``, ``dict[str, X]``, ``StrEnum``
subclasses and dataclasses of those.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from typing import Any

from compiled_opt.core.errors import UsageError

NAMES = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "an object",
}


def dump(value: Any) -> Any:
    """``value`` as plain JSON values: dataclasses as objects (in field order), enums as their values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: dump(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): dump(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [dump(v) for v in value]
    return value


def load(kind: Any, raw: Any, where: str, key: str = "") -> Any:
    """``raw`` (parsed JSON) as a value of ``kind``; see the module docstring."""
    if kind is Any:
        return raw
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if raw is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return load(inner, raw, where, key)
    if dataclasses.is_dataclass(kind):
        return _dataclass(kind, raw, where, key)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        values = [m.value for m in kind]
        if raw not in values:
            _fail(f"unknown value {raw!r}; allowed: {', '.join(map(str, values))}", where, key)
        return kind(raw)
    if origin is list or origin is tuple:
        _expect(list, raw, where, key)
        item = args[0]
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(raw) != len(args):
                _fail(f"expected {len(args)} values, got {len(raw)}", where, key)
            return tuple(load(a, v, where, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, raw, strict=True)))
        values = [load(item, v, where, f"{key}[{i}]") for i, v in enumerate(raw)]
        return tuple(values) if origin is tuple else values
    if origin is dict:
        _expect(dict, raw, where, key)
        return {k: load(args[1], v, where, f"{key}.{k}" if key else k) for k, v in raw.items()}
    _expect(kind, raw, where, key)
    return float(raw) if kind is float else raw


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _dataclass(cls: type, raw: Any, where: str, key: str) -> Any:
    _expect(dict, raw, where, key)
    hints, values = _hints(cls), {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        sub = f"{key}.{f.name}" if key else f.name
        if f.name in raw:
            values[f.name] = load(hints[f.name], raw[f.name], where, sub)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            _fail("missing", where, sub)
    obj = cls(**values)
    for name, problem in getattr(obj, "checks", dict)().items():
        if problem:
            _fail(problem, where, f"{key}.{name}" if key else name)
    return obj


def _expect(kind: type, raw: Any, where: str, key: str) -> None:
    ok = (
        isinstance(raw, (int, float)) and not isinstance(raw, bool)
        if kind is float
        else isinstance(raw, kind) and (kind is bool or not isinstance(raw, bool))
    )
    if not ok:
        shown = repr(raw) if len(repr(raw)) <= 40 else repr(raw)[:37] + "..."
        _fail(f"expected {NAMES.get(kind, kind.__name__)}, got {type(raw).__name__} {shown}", where, key)


def _fail(problem: str, where: str, key: str) -> typing.NoReturn:
    raise UsageError(f"{key}: {problem}" if key else problem, where)
