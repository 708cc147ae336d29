"""The built-in plugins, registered through the same ``compiled_opt`` entry points as third-party ones.

``backends/`` (bootstrap, toto, kronos), ``policies/`` (threshold, paired, sequential),
``executors/`` (local, ray), ``aggregators`` and ``metrics``.

Imports: ``compiled_opt.api`` only, like any third-party plugin.
"""
