"""Built-in executors: ``local`` (this process, the default) and ``ray`` (``pip install 'compiled-opt[ray]'``)."""

from __future__ import annotations

from compiled_opt.engine.executor import LocalExecutor
from compiled_opt.engine.hookspecs import Register, hookimpl


@hookimpl
def compiled_opt_register_executors(register: Register) -> None:
    from compiled_opt.plugins.ray_executor import RayExecutor

    register("local", LocalExecutor)
    register("ray", RayExecutor)
