"""The plugin registry: a pluggy manager made on demand and the named registries its hooks fill."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy

from compiled_opt.core import hookspecs
from compiled_opt.core.errors import OptionError, PluginError, UsageError, did_you_mean

ENTRY_POINT_GROUP = "compiled_opt"
KINDS = {
    "backends": "backend",
    "policies": "policy",
    "aggregators": "aggregator",
    "metrics": "metric",
    "executors": "executor",
}


def make_plugin_manager(extra: tuple[object, ...] = ()) -> pluggy.PluginManager:
    """A manager with every installed plugin (built-ins included) and ``extra`` plugin objects."""
    pm = pluggy.PluginManager("compiled_opt")
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for plugin in extra:
        pm.register(plugin)
    return pm


@dataclass
class Registry:
    """Named objects of one kind, each with the plugin it came from."""

    kind: str
    noun: str
    entries: dict[str, tuple[Any, str]] = field(default_factory=dict)

    def add(self, name: str, obj: Any, source: str) -> None:
        if name in self.entries:
            raise UsageError(f"{self.noun} {name!r} registered twice: by {self.entries[name][1]} and by {source}")
        self.entries[name] = (obj, source)

    def get(self, name: str, where: str | None = None) -> Any:
        if name not in self.entries:
            raise UsageError(f"unknown {self.noun} {name!r}; {did_you_mean(name, self.entries)}", where)
        return self.entries[name][0]

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.entries))

    def source(self, name: str) -> str:
        return self.entries[name][1]

    def build(self, name: str, options: Mapping[str, Any], where: str, *args: Any) -> Any:
        """``get(name)(*args, **options)``. Unknown or ill-typed options and an ``OptionError`` are the
        user's: reported against ``where`` (their options table); any other failure names the plugin."""
        factory = self.get(name)
        check_options(factory, options, where, len(args))
        try:
            return factory(*args, **options)
        except OptionError as exc:
            raise UsageError(str(exc), f"{where}.{exc.key}" if exc.key else where) from exc
        except UsageError as exc:
            if exc.where:
                raise
            raise UsageError(str(exc), where) from exc
        except Exception as exc:
            first = (str(exc).splitlines() or [""])[0]
            raise PluginError(
                f"{self.noun} {name!r} ({self.source(name)}) failed to start: {type(exc).__name__}: {first}"
            ) from exc


@dataclass
class Plugins:
    """Every registered backend, policy, aggregator, metric and executor."""

    backends: Registry
    policies: Registry
    aggregators: Registry
    metrics: Registry
    executors: Registry

    @classmethod
    def load(cls, pm: pluggy.PluginManager | None = None) -> Plugins:
        pm = pm or make_plugin_manager()
        registries = {kind: Registry(kind, noun) for kind, noun in KINDS.items()}
        dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
        for kind in KINDS:
            for impl in getattr(pm.hook, f"compiled_opt_register_{kind}").get_hookimpls():
                source = _describe(impl.plugin_name, impl.plugin, dists.get(id(impl.plugin)))
                impl.function(register=lambda name, obj, k=kind, s=source: registries[k].add(name, obj, s))
        return cls(**registries)


def _describe(name: str, plugin: object, dist: Any) -> str:
    module = getattr(plugin, "__name__", type(plugin).__name__)
    if dist is None:
        return f"{module} (registered directly)"
    return f"{module} ({dist.metadata['name']} {dist.version}, entry point {name!r})"


SIMPLE = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _accepts(kind: Any, value: Any) -> bool:
    """Whether ``value`` fits the simple annotation ``kind`` (bool, int, float, str; anything else fits)."""
    if kind not in SIMPLE:
        return True
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def check_options(factory: Any, options: Mapping[str, Any], where: str, positional: int = 0) -> None:
    """Unknown keyword ``options`` of ``factory`` (after ``positional`` arguments), and values that do not
    fit a simple annotation (bool, int, float, str), as a ``UsageError`` naming ``where.key``."""
    params = inspect.signature(factory).parameters
    allowed = [n for n, p in list(params.items())[positional:] if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    try:
        hints = typing.get_type_hints(factory.__init__ if inspect.isclass(factory) else factory)
    except Exception:  # an annotation that does not resolve: names are still checked
        hints = {}
    for key, value in options.items():
        if key not in allowed:
            raise UsageError(f"unknown option {key!r}; {did_you_mean(key, allowed)}", f"{where}.{key}")
        if not _accepts(hints.get(key), value):
            raise UsageError(f"expected {SIMPLE[hints[key]]}, got {type(value).__name__} {value!r}", f"{where}.{key}")
