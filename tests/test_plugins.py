"""Plugins: built-ins and third-party plugins come through the same entry points; registries report clearly."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_config

from compiled_opt.commands.cli import main
from compiled_opt.core import hookspecs
from compiled_opt.core.errors import PluginError, UsageError
from compiled_opt.core.registry import Plugins, Registry, make_plugin_manager

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
THROWAWAY = DOCS.read_text().split("```python\n")[1].split("```")[0]  # the tutorial plugin, verbatim


@pytest.fixture
def throwaway_plugin(tmp_path, monkeypatch):
    """A module and a fake installed distribution whose entry point (group compiled_opt) names it."""
    (tmp_path / "throwaway_plugin.py").write_text(THROWAWAY)
    dist = tmp_path / "throwaway_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: throwaway-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[compiled_opt]\nthrowaway = throwaway_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield
    sys.modules.pop("throwaway_plugin", None)


def test_builtins_come_from_entry_points():
    plugins = Plugins.load()
    assert {"bootstrap"} <= set(plugins.backends)
    assert {"any_improvement", "relative_threshold"} <= set(plugins.policies)
    assert "entry point 'bootstrap'" in plugins.backends.source("bootstrap")
    assert "compiled-opt" in plugins.aggregators.source("median")


def test_throwaway_plugin_runs_a_search(throwaway_plugin, tmp_path, market_dir, capsys):
    plugins = Plugins.load()
    assert "throwaway-plugin 1.0" in plugins.backends.source("last_close")
    models = '[models.mine]\nbackend = "last_close"\nspace = { shift = { float = [-0.01, 0.01] } }\n'
    config = write_config(tmp_path, market_dir, trials=4, models=models)
    assert main(["run", str(config)]) == 0
    out = capsys.readouterr().out
    assert "Optimizing mine (backend last_close) for APP" in out
    assert (tmp_path / "hyperparams" / "mine" / "NU.json").exists()
    assert main(["plugins"]) == 0
    assert "last_close" in capsys.readouterr().out


def test_the_tutorial_imports_only_the_public_api():
    import compiled_opt.api as api

    imports = [line for line in THROWAWAY.splitlines() if line.startswith(("import ", "from "))]
    assert imports == ["from compiled_opt.api import ModelBackend, hookimpl"]
    for name in api.__all__:
        assert getattr(api, name) is not None
    for needed in (
        "ModelBackend",
        "Runtime",
        "WindowBatch",
        "Draws",
        "Policy",
        "Decision",
        "Evaluation",
        "hookimpl",
        "Register",
        "Executor",
        "JobSpec",
        "Worker",
    ):
        assert needed in api.__all__


def test_builtin_executors_are_plugins():
    executors = Plugins.load().executors
    assert {"local", "ray"} <= set(executors)
    assert "entry point 'ray'" in executors.source("ray")


def test_duplicate_names_are_an_error():
    registry = Registry("backends", "backend")
    registry.add("x", object, "a")
    with pytest.raises(UsageError, match="registered twice: by a and by b"):
        registry.add("x", object, "b")


def test_duplicate_across_plugins_is_an_error():
    class Again:
        @hookspecs.hookimpl
        def compiled_opt_register_backends(self, register):
            from compiled_opt.plugins.backends.bootstrap import BootstrapBackend

            register("bootstrap", BootstrapBackend)

    with pytest.raises(UsageError, match="backend 'bootstrap' registered twice"):
        Plugins.load(make_plugin_manager(extra=(Again(),)))


def test_unknown_name_suggests():
    with pytest.raises(UsageError, match=r"f.toml: x: unknown policy 'any_improvment'; did you mean 'any_improvement'"):
        Plugins.load().policies.get("any_improvment", "f.toml: x")


def test_build_rejects_unknown_options():
    policies = Plugins.load().policies
    assert policies.build("relative_threshold", {"threshold": 0.02}, "w").threshold == 0.02
    with pytest.raises(UsageError, match=r"w.treshold: unknown option 'treshold'; did you mean 'threshold'"):
        policies.build("relative_threshold", {"treshold": 0.02}, "w")
    with pytest.raises(UsageError, match="w.threshold: must be >= 0"):
        policies.build("relative_threshold", {"threshold": -1.0}, "w")
    with pytest.raises(UsageError, match="w.threshold: expected a number, got str 'x'"):
        policies.build("relative_threshold", {"threshold": "x"}, "w")


def test_a_failure_inside_a_plugin_names_the_plugin_not_the_users_key():
    class Broken:
        def __init__(self, runtime, checkpoint: str = "x"):
            raise TypeError("unexpected keyword argument 'proxies'")  # e.g. a dependency's changed API

    class Plugin:
        @hookspecs.hookimpl
        def compiled_opt_register_backends(self, register):
            register("broken", Broken)

    backends = Plugins.load(make_plugin_manager(extra=(Plugin(),))).backends
    with pytest.raises(
        PluginError, match=r"^backend 'broken' \(Plugin \(registered directly\)\) failed to start: TypeError:"
    ) as e:
        backends.build("broken", {"checkpoint": "y"}, "f.toml: models.m.options", None)
    assert e.value.where is None


def test_no_manager_at_import_time():
    module = importlib.reload(importlib.import_module("compiled_opt.core.registry"))
    assert not [v for v in vars(module).values() if type(v).__name__ == "PluginManager"]


@pytest.mark.parametrize("name", [n for n in dir(hookspecs) if n.startswith("compiled_opt_")])
def test_every_hook_is_documented_and_implemented(name):
    spec = getattr(hookspecs, name)
    assert ":param register:" in inspect.getdoc(spec)
    pm = make_plugin_manager()
    assert getattr(pm.hook, name).get_hookimpls(), f"no built-in implements {name}"


def test_plugins_command_lists_sources(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    for heading in ("backends:", "policies:", "aggregators:", "executors:"):
        assert heading in out
    assert "bootstrap" in out and "compiled_opt.plugins.backends.bootstrap (compiled-opt" in out
    assert out.count("winsorized_mean_") == 2


def test_builtin_plugins_import_only_the_public_api():
    """Every module under compiled_opt/plugins imports from compiled_opt only ``api`` (and other plugin modules)."""
    import ast

    root = Path(__file__).resolve().parents[1] / "src" / "compiled_opt" / "plugins"
    offending = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module]
                if isinstance(node, ast.ImportFrom) and node.module
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            offending += [
                f"{path.relative_to(root)}: {n}"
                for n in names
                if n.startswith("compiled_opt") and n != "compiled_opt.api" and not n.startswith("compiled_opt.plugins")
            ]
    assert offending == []


def test_the_api_names_resolve_lazily():
    code = (
        "import sys, compiled_opt.api as api; api.hookimpl; assert 'compiled_opt.tuning.worker' not in sys.modules;"
        " assert all(getattr(api, n) is not None for n in api.__all__)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
