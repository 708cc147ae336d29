"""A local Ray listens on loopback only (read from the kernel's socket tables), unless `bind = "all"`; fast
mode's CUDA decision is the workers', not the driver's."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

pytest.importorskip("ray")

from conftest import write_config  # noqa: E402

from compiled_opt.commands.cli import main  # noqa: E402
from compiled_opt.core.config import load_config  # noqa: E402
from compiled_opt.core.errors import UsageError  # noqa: E402
from compiled_opt.plugins.executors.ray import RayExecutor  # noqa: E402
from compiled_opt.run.console import Console  # noqa: E402
from compiled_opt.run.driver import Run  # noqa: E402
from compiled_opt.tuning.jobs import WorkerSetup  # noqa: E402

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def descendants(root: int) -> set[int]:
    """``root`` and every process below it (Ray's GCS, raylet, agents and workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += children.get(pid, [])
    return found


def listening(pids: set[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that one of ``pids`` holds, from /proc/net/tcp{,6}."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                link = os.readlink(fd) if fd.is_symlink() else ""
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:  # a process that ended meanwhile
            continue
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            address, port = fields[1].split(":")
            raw = bytes.fromhex(address)
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # each 32-bit word is little-endian
            found.add((socket.inet_ntop(family, raw), int(port, 16)))
    return found


def ray_sockets(tmp_path, market_dir, options: str) -> set[tuple[str, int]]:
    config = load_config(write_config(tmp_path, market_dir, extra=f'[executor]\nname = "ray"\noptions = {options}\n'))
    run = Run(config, console=Console(level="warning"))
    executor = run.executor
    try:
        executor.start(WorkerSetup(run.plan.models, config.runtime, str(config.path)))
        return listening(descendants(os.getpid()))
    finally:
        executor.close()
        run._unlock()


def test_a_local_ray_listens_on_loopback_only(tmp_path, market_dir):
    sockets = ray_sockets(tmp_path, market_dir, "{ workers = 1 }")
    assert len(sockets) >= 4  # GCS, raylet, object manager, the worker, ...: the scan sees them
    assert {address for address, _ in sockets} <= LOOPBACK, sockets


def test_bind_all_is_rays_own_default_every_interface(tmp_path, market_dir):
    """The same scan fails for Ray's default: it can tell the difference."""
    sockets = ray_sockets(tmp_path, market_dir, '{ workers = 1, bind = "all" }')
    assert {address for address, _ in sockets} - LOOPBACK, sockets


def test_a_bad_bind_option_is_one_line(tmp_path, market_dir, capsys):
    config = write_config(tmp_path, market_dir, extra='[executor]\nname = "ray"\noptions = { bind = "0.0.0.0" }\n')
    assert main(["run", str(config)]) == 2
    assert capsys.readouterr().err == (
        f"error: {config}: executor.options.bind: must be one of 'loopback', 'all', not '0.0.0.0'\n"
    )


@pytest.mark.parametrize("cluster_has_cuda", [True, False])
def test_fast_mode_asks_the_executor_whether_its_workers_have_cuda(tmp_path, market_dir, monkeypatch, cluster_has_cuda):
    """A driver without a GPU in front of a Ray cluster with GPUs: fast mode's settings follow the cluster."""
    seen = {}

    def start(self, setup):
        seen["runtime"], seen["dtypes"] = setup.runtime, setup.dtypes
        raise UsageError("stopped before any work")

    monkeypatch.setattr(RayExecutor, "has_cuda", lambda self: cluster_has_cuda)
    monkeypatch.setattr(RayExecutor, "start", start)
    config = write_config(tmp_path, market_dir, extra='[executor]\nname = "ray"\n')
    assert main(["run", str(config), "--fast"]) == 2
    runtime = seen["runtime"]
    if cluster_has_cuda:
        assert (runtime.device, runtime.compile, runtime.mode) == ("cuda", "reduce-overhead", "fast")
    else:
        assert (runtime.device, runtime.compile, runtime.mode) == ("cpu", "none", "default")
    assert not (tmp_path / "hyperparams").exists()
