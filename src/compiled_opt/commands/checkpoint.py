"""``compiled-opt checkpoint random``: a random-initialised checkpoint of a backend's real architecture.

For trying a pipeline, testing and benchmarking without the released weights. A backend offers it
by setting ``ModelBackend.random_checkpoint``: a static method that writes the checkpoint through
the same code its loader reads and returns the backend's ``options`` for it; ``size`` is one of
``SIZES`` (``tiny``: seconds on a CPU; ``base``: the released model's architecture).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from compiled_opt.core.errors import UsageError, did_you_mean
from compiled_opt.core.registry import Plugins
from compiled_opt.store.stores import new_file_mode

SIZES = ("tiny", "small", "base")


def offering(plugins: Plugins) -> list[str]:
    """The backends that write random checkpoints."""
    return [name for name in plugins.backends if plugins.backends.get(name).random_checkpoint is not None]


def write_random(
    backend: str, directory: Path, size: str = "tiny", seed: int = 0, plugins: Plugins | None = None
) -> dict[str, Any]:
    """Write ``backend``'s random checkpoint of ``size`` to ``directory``; its ``options`` for a config."""
    plugins = plugins or Plugins.load()
    available = offering(plugins)
    if backend not in available:
        problem = (
            f"backend {backend!r} offers no random checkpoints"
            if backend in plugins.backends
            else f"unknown backend {backend!r}"
        )
        raise UsageError(f"{problem}; {did_you_mean(backend, available)}", "checkpoint random")
    directory = Path(directory).resolve()
    options = plugins.backends.get(backend).random_checkpoint(directory, size, seed)
    for path in directory.rglob("*"):  # safetensors writes owner-only files; others may need to read them
        if path.is_file():
            os.chmod(path, new_file_mode())
    return options


def options_toml(options: dict[str, Any]) -> str:
    """``options`` as the line of a config's model table: ``options = { checkpoint = "..." }``."""
    return "options = { " + ", ".join(f"{k} = {json.dumps(str(v))}" for k, v in options.items()) + " }"
