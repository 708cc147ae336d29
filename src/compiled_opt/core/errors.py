"""The one error type users see: printed as one line, without a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UsageError(Exception):
    """Bad configuration, flags or input data; the CLI prints it and exits with status 2.

    ``where`` is the file (and key, row, ...) the problem is in, e.g. ``compiled_opt.toml: search.trials``.
    """

    def __init__(self, message: str, where: str | None = None):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class OptionError(ValueError):
    """A plugin option (or parameter value) the plugin cannot use: raise it from a plugin's constructor.

    ``key`` is the option (``OptionError("must be positive", "workers")``); the engine reports it as a
    ``UsageError`` against the user's options table, e.g. ``compiled_opt.toml: executor.options.workers``.
    """

    def __init__(self, message: str, key: str | None = None):
        self.key = key
        super().__init__(message)


class PluginError(UsageError):
    """A plugin failed in a way that is not the user's input (a bug, a broken install): names the plugin."""


def did_you_mean(name: str, allowed: Iterable[str]) -> str:
    """``"did you mean 'x'? allowed: a, b, x"``: the tail of an unknown-name error."""
    allowed = sorted(allowed)
    close = difflib.get_close_matches(str(name), allowed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}allowed: {', '.join(allowed) if allowed else '(none)'}"
