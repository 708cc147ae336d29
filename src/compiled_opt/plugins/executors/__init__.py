"""Built-in executors: ``local`` (this process, the default) and ``ray`` (``pip install 'compiled-opt[ray]'``)."""

from __future__ import annotations

from compiled_opt.core.hookspecs import Register, hookimpl
from compiled_opt.run.executor import LocalExecutor


@hookimpl
def compiled_opt_register_executors(register: Register) -> None:
    from compiled_opt.plugins.executors.ray import RayExecutor

    register("local", LocalExecutor)
    register("ray", RayExecutor)
