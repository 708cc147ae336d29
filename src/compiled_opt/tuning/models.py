"""A ``[models.<name>]`` table checked against its backend class: space, fixed parameters, defaults.

The check needs only the backend's class, so the driver does it for every model before any work
and before any weights load; workers build the backend itself (``build_backend``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from compiled_opt.core.backend import ModelBackend, Runtime
from compiled_opt.core.config import Config, ModelConfig, RuntimeConfig
from compiled_opt.core.errors import UsageError, did_you_mean
from compiled_opt.core.registry import Plugins, check_options
from compiled_opt.core.space import Choices, Range, Space, parse_space
from compiled_opt.store.records import StoredRecord


@dataclass(frozen=True)
class ModelSpec:
    """A checked model, as plain picklable data.

    ``base`` holds every parameter's value outside the searched ``space``; ``defaults`` is the
    model's own configuration (the backend's defaults with the model's ``fixed`` table and the data
    section's context length): the first incumbent and the baseline of the out-of-sample report.
    ``max_samples``, when set, is the sample count the sample cache draws at. ``unused`` are parameters
    without effect under the fixed ones (``ModelBackend.unused``): not searched, not stored.
    """

    name: str
    backend: str
    options: dict[str, Any]
    space: Space
    base: dict[str, Any]
    defaults: dict[str, Any]
    max_samples: int | None
    unused: tuple[str, ...] = ()

    def stored(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` as stored: without the parameters that have no effect."""
        return {k: v for k, v in params.items() if k not in self.unused}

    def params(self, record: StoredRecord | None) -> dict[str, Any] | None:
        """A stored record's config (checked with ``check_stored``) as full parameters, or ``None`` if there
        is none or it is another backend's."""
        if record is None or record.backend != self.backend:
            return None
        return {**self.base, **record.config}

    def max_context(self, cls: type[ModelBackend]) -> int:
        """The longest history any candidate (or the defaults) may ask for."""
        keys = [k for k in cls.encode_keys if k in self.space]
        combos = itertools.product(*(self.space[k].extremes() for k in keys))
        longest = max(cls.context_length({**self.base, **dict(zip(keys, c, strict=True))}) for c in combos)
        return max(longest, cls.context_length(self.defaults))


def resolve_runtime(cfg: RuntimeConfig, where: str) -> Runtime:
    """The runtime a worker uses; ``mode = "fast"`` is resolved by the driver before this."""
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("device is cuda but no CUDA device is available (use auto or cpu)", where)
    return Runtime(device=device, compile=cfg.compile, dtype=getattr(torch, cfg.dtype))


def make_model_spec(mc: ModelConfig, plugins: Plugins, config: Config) -> ModelSpec:
    """Check ``mc`` against its backend class: names, values, fixed-or-searched, horizon."""
    where = config.where(f"models.{mc.name}")
    cls = plugins.backends.get(mc.backend, f"{where}.backend")
    space = mc.space
    if space is None:  # the backend's default space, less what the model fixes
        space = {
            k: v for k, v in parse_space(cls.default_space, f"{mc.backend} default space").items() if k not in mc.fixed
        }
    for section, keys in (("fixed", mc.fixed), ("space", space)):
        for key in keys:
            if key not in cls.defaults:
                raise UsageError(
                    f"unknown parameter {key!r} for backend {mc.backend!r}; {did_you_mean(key, cls.defaults)}",
                    f"{where}.{section}.{key}",
                )
    both = set(mc.fixed) & set(space)
    if both:
        raise UsageError("a parameter is either fixed or searched, not both", f"{where}.fixed.{sorted(both)[0]}")
    horizon = config.data.horizon
    if cls.max_horizon is not None and horizon > cls.max_horizon:
        raise UsageError(
            f"backend {mc.backend!r} (model {mc.name!r}) forecasts at most {cls.max_horizon} step(s)"
            f" ahead, not {horizon}",
            config.where("data.horizon"),
        )
    base = {**cls.defaults, **mc.fixed}
    context = config.data.context_length
    if context and cls.context_param and cls.context_param not in {*mc.fixed, *(mc.space or {})}:
        base[cls.context_param] = context  # the data section's context length, unless the model sets its own
        space = {k: v for k, v in space.items() if k != cls.context_param}
    unused = sorted(cls.unused(base))  # e.g. a sample count under exact aggregates: not searched, not stored
    searched = [k for k in unused if k in space]
    if searched and mc.space is not None:
        fixed = ", ".join(f"{k} = {v!r}" for k, v in mc.fixed.items())
        raise UsageError(f"has no effect with the fixed {fixed}; leave it out", f"{where}.space.{searched[0]}")
    space = {k: v for k, v in space.items() if k not in unused}
    check_options(cls, mc.options, f"{where}.options", positional=1)
    _check(cls, plugins, base, f"{where}.fixed")
    for key, entry in space.items():
        for value in entry.extremes():
            _check(cls, plugins, {**base, key: value}, f"{where}.space.{key}")
    return ModelSpec(
        mc.name,
        mc.backend,
        dict(mc.options),
        dict(space),
        base,
        dict(base),
        _sample_cache_size(cls, space, base),
        tuple(unused),
    )


def _sample_cache_size(cls: type[ModelBackend], space: Space, base: Mapping[str, Any]) -> int | None:
    """The count to draw at when the sample cache can pay: the backend names its sample count and
    every searched sampling parameter besides it takes few values (a continuous one never repeats)."""
    key = cls.samples_param
    if key is None:
        return None
    others = [e for k, e in space.items() if k not in (key, "aggregate", *cls.encode_keys)]
    if any(isinstance(e, Range) for e in others):
        return None
    entry = space.get(key)
    if entry is None:
        return int(base[key])
    return int(max(entry.values) if isinstance(entry, Choices) else entry.hi)


def build_backend(spec: ModelSpec, plugins: Plugins, runtime: Runtime, where: str) -> ModelBackend:
    """The backend itself (loading its weights): once per worker process."""
    plugins.backends.get(spec.backend, f"{where}.backend")
    return plugins.backends.build(spec.backend, spec.options, f"{where}.options", runtime)


def check_stored(record: StoredRecord, plugins: Plugins, where: str) -> None:
    """A stored config its backend can run, as every config in a space is (``best/`` may copy it, and trading
    code runs it): the backend's parameters, a known aggregator, values ``check`` accepts. A record of a
    backend not installed here is checked for its types and ranges only (when it is read)."""
    check_metrics(record, plugins, where)
    if record.backend not in plugins.backends:
        return
    cls = plugins.backends.get(record.backend)
    for key in record.config:
        if key not in cls.defaults:
            raise UsageError(
                f"unknown parameter {key!r} for backend {record.backend!r}; {did_you_mean(key, cls.defaults)}",
                f"{where}: config.{key}",
            )
    _check(cls, plugins, {**cls.defaults, **record.config}, f"{where}: config")


def check_metrics(record: StoredRecord, plugins: Plugins, where: str) -> None:
    """The metrics a record was scored in are registered ones."""
    for section, metrics in (("validation", record.validation), ("test", record.test)):
        plugins.metrics.get(metrics.metric, f"{where}: {section}.metric")


def _check(cls: type[ModelBackend], plugins: Plugins, params: Mapping[str, Any], where: str) -> None:
    plugins.aggregators.get(params["aggregate"], where if where.endswith(".aggregate") else f"{where}.aggregate")
    try:
        cls.check(params)
    except (ValueError, TypeError) as exc:  # TypeError: a value of the wrong type, e.g. from a stored file
        raise UsageError(str(exc), where) from None
