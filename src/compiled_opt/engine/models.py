"""Turning a ``[models.<name>]`` table into a ready backend, its search space and fixed parameters."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from compiled_opt.engine.backend import ModelBackend, Runtime
from compiled_opt.engine.config import Config, ModelConfig, RuntimeConfig
from compiled_opt.engine.errors import UsageError, did_you_mean
from compiled_opt.engine.plugins import Plugins, build
from compiled_opt.engine.space import Space, parse_space


@dataclass(frozen=True)
class Model:
    """A configured model: ``base`` holds every parameter's value outside the searched ``space``."""

    name: str
    backend_name: str
    backend: ModelBackend
    space: Space
    base: dict[str, Any]

    def params(self, stored: Mapping[str, Any]) -> dict[str, Any] | None:
        """A stored config as full parameters, or ``None`` if it names parameters this backend lacks."""
        if not set(stored) <= set(self.base):
            return None
        return {**self.base, **stored}

    def max_context(self) -> int:
        """The longest history any candidate may ask for."""
        keys = [k for k in self.backend.encode_keys if k in self.space]
        combos = itertools.product(*(self.space[k].extremes() for k in keys))
        return max(self.backend.context_length({**self.base, **dict(zip(keys, c))}) for c in combos)


def make_runtime(cfg: RuntimeConfig, where: str) -> Runtime:
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("device is cuda but no CUDA device is available (use auto or cpu)", where)
    return Runtime(device=device, compile=cfg.compile, dtype=getattr(torch, cfg.dtype))


def make_model(mc: ModelConfig, plugins: Plugins, runtime: Runtime, config: Config) -> Model:
    """Check ``mc`` against its backend and build the backend (loading its weights once)."""
    where = config.where(f"models.{mc.name}")
    cls = plugins.backends.get(mc.backend, f"{where}.backend")
    space = mc.space
    if space is None:  # the backend's default space, less what the model fixes
        space = {k: v for k, v in parse_space(cls.default_space, f"{mc.backend} default space").items()
                 if k not in mc.fixed}
    for section, keys in (("fixed", mc.fixed), ("space", space)):
        for key in keys:
            if key not in cls.defaults:
                raise UsageError(f"unknown parameter {key!r} for backend {mc.backend!r}; {did_you_mean(key, cls.defaults)}",
                                 f"{where}.{section}.{key}")
    both = set(mc.fixed) & set(space)
    if both:
        raise UsageError("a parameter is either fixed or searched, not both", f"{where}.fixed.{sorted(both)[0]}")
    base = {**cls.defaults, **mc.fixed}
    context = config.data.context_length
    if context and cls.context_param and cls.context_param not in {*mc.fixed, *(mc.space or {})}:
        base[cls.context_param] = context  # the data section's context length, unless the model sets its own
        space = {k: v for k, v in space.items() if k != cls.context_param}
    backend = build(cls, mc.options, f"{where}.options", runtime)
    _check(backend, plugins, base, f"{where}.fixed")
    for key, entry in space.items():
        for value in entry.extremes():
            _check(backend, plugins, {**base, key: value}, f"{where}.space.{key}")
    return Model(mc.name, mc.backend, backend, space, base)


def _check(backend: ModelBackend, plugins: Plugins, params: Mapping[str, Any], where: str) -> None:
    plugins.aggregators.get(params["aggregate"], where if where.endswith(".aggregate") else f"{where}.aggregate")
    try:
        backend.check(params)
    except ValueError as exc:
        raise UsageError(str(exc), where) from None

