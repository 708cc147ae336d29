"""The hooks a compiled-opt plugin can implement (entry-point group ``compiled_opt``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("compiled_opt")
hookimpl = pluggy.HookimplMarker("compiled_opt")

Register = Callable[[str, Any], None]


@hookspec
def compiled_opt_register_backends(register: Register) -> None:
    """Register model backends.

    :param register: call ``register(name, cls)`` with a ``compiled_opt.api.ModelBackend``
        subclass; configs select it with ``backend = "name"``.
    """


@hookspec
def compiled_opt_register_policies(register: Register) -> None:
    """Register acceptance policies.

    :param register: call ``register(name, cls)`` with a ``compiled_opt.api.Policy``
        subclass; its keyword arguments are the options of the config's ``[acceptance]`` table.
    """


@hookspec
def compiled_opt_register_aggregators(register: Register) -> None:
    """Register aggregators (how samples become one forecast).

    :param register: call ``register(name, aggregator)`` with a
        ``compiled_opt.api.Aggregator``; ``aggregate = "name"`` selects it.
    """


@hookspec
def compiled_opt_register_metrics(register: Register) -> None:
    """Register metrics (how good a forecast is, per run and window, from its point forecast, samples and
    targets).

    :param register: call ``register(name, metric)`` with a ``compiled_opt.api.Metric``; every metric
        is reported, and ``evaluation.metric = "name"`` makes it the search's objective.
    """


@hookspec
def compiled_opt_register_executors(register: Register) -> None:
    """Register executors (what runs a run's jobs: in this process, on Ray, ...).

    :param register: call ``register(name, cls)`` with a ``compiled_opt.api.Executor``
        subclass; ``[executor] name = "name"`` (or ``--executor name``) selects it and its keyword
        arguments are the ``[executor] options``.
    """
