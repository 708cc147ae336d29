"""Run locks with real processes: a second run on the same output folder is refused naming the first, a
stale lock is taken over, --resume refuses a run still going and a run that never saved its state."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_config
from test_cli import snapshot

from compiled_opt.commands.cli import main
from compiled_opt.core.errors import UsageError
from compiled_opt.store.lock import LOCK_NAME, Lock

CLI = str(Path(sys.executable).parent / "compiled-opt")

# A run that, holding its locks, waits for a file before its jobs start.
HELD = """
import sys, time
from pathlib import Path
from compiled_opt.commands.cli import main
from compiled_opt.plugins.executors import local

config, started, go, *flags = sys.argv[1:]
real = local.LocalExecutor.run

def run(self, jobs, on_event):
    Path(started).touch()
    while not Path(go).exists():
        time.sleep(0.01)
    real(self, jobs, on_event)

local.LocalExecutor.run = run
sys.exit(main(["run", config, "-q", *flags]))
"""

# A run killed (SIGKILL) just before it would write its first run.json.
KILLED_BEFORE_RUN_JSON = """
import os, signal, sys
from compiled_opt.commands.cli import main
from compiled_opt.store import stores

stores.RunDir.save_state = lambda self, state: os.kill(os.getpid(), signal.SIGKILL)
sys.exit(main(["run", sys.argv[1], "-q"]))
"""


class Held:
    """A ``compiled-opt run`` in another process, held before its first job until ``release()``."""

    def __init__(self, config: Path, *flags: str):
        self.started, self.go = config.parent / "started", config.parent / "go"
        self.started.unlink(missing_ok=True)
        self.go.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HELD, str(config), str(self.started), str(self.go), *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while not self.started.exists():
            assert self.proc.poll() is None, self.proc.communicate()
            assert time.monotonic() < deadline, "the held run did not start"
            time.sleep(0.02)

    def release(self) -> tuple[int, str, str]:
        self.go.touch()
        out, err = self.proc.communicate(timeout=300)
        return self.proc.returncode, out, err

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate()


def run_id(root: Path) -> str:
    (only,) = [p.name for p in (root / "runs").iterdir() if (p / LOCK_NAME).exists()]
    return only


def test_a_second_run_is_refused_naming_the_first_and_readers_need_no_lock(tmp_path, market_dir, capsys):
    config = write_config(tmp_path, market_dir, trials=4)
    assert main(["run", str(config), "-q"]) == 0
    first = Held(config, "--force")  # --force: it stores every config it finds
    held_run = run_id(tmp_path)
    before = snapshot(tmp_path)
    second = subprocess.run([CLI, "run", str(config), "-q"], capture_output=True, text=True, timeout=300)
    assert second.returncode == 2 and second.stderr.count("\n") == 1
    assert second.stderr.startswith(f"error: {config}: output.directory: the output folder ")
    assert f"in use by run {held_run} (pid {first.proc.pid} on {socket.gethostname()}, since " in second.stderr
    assert snapshot(tmp_path) == before  # the refused run wrote nothing, not even a run folder
    for reader in (["show"], ["report", "--out", str(tmp_path / "r.html")], ["evaluate"]):  # take no lock
        assert main([reader[0], str(config), *reader[1:]]) == 0
    capsys.readouterr()
    code, _, err = first.release()
    assert code == 0, err
    for symbol in ("APP", "NU"):  # every accepted config is the first run's
        record = json.loads((tmp_path / "hyperparams" / "bootstrap" / f"{symbol}.json").read_text())
        assert record["metadata"]["run_id"] == held_run
    assert not list(tmp_path.rglob(LOCK_NAME))  # both locks let go


def test_a_stale_lock_is_taken_over_with_a_notice(tmp_path, market_dir, capsys):
    config = write_config(tmp_path, market_dir, trials=4)
    first = Held(config)
    dead, killed_run = first.proc.pid, run_id(tmp_path)
    first.kill()
    assert (tmp_path / "hyperparams" / LOCK_NAME).exists()  # SIGKILL left the file; the kernel let the lock go
    assert main(["run", str(config)]) == 0
    out = capsys.readouterr().out
    assert (
        f"took over the lock of the output folder {tmp_path / 'hyperparams'}, left by run {killed_run} (pid {dead}"
        in out
    ) and "which stopped without letting it go" in out
    assert not (tmp_path / "hyperparams" / LOCK_NAME).exists()


def test_resume_refuses_a_run_that_is_still_going(tmp_path, market_dir):
    config = write_config(tmp_path, market_dir, trials=4)
    first = Held(config)
    held_run = run_id(tmp_path)
    before = snapshot(tmp_path)
    resume = subprocess.run([CLI, "run", str(config), "--resume", "-q"], capture_output=True, text=True, timeout=300)
    assert resume.returncode == 2 and resume.stderr.count("\n") == 1
    assert resume.stderr.startswith(
        f"error: --resume: the run folder {tmp_path / 'runs' / held_run} is in use by run"
        f" {held_run} (pid {first.proc.pid} "
    )
    assert snapshot(tmp_path) == before
    code, _, err = first.release()
    assert code == 0, err
    assert len(list((tmp_path / "runs").iterdir())) == 1


def test_a_run_killed_before_its_state_is_saved_is_not_mistaken_for_an_older_one(tmp_path, market_dir, capsys):
    config = write_config(tmp_path, market_dir, trials=4)
    assert main(["run", str(config), "-q"]) == 0
    older = next((tmp_path / "runs").iterdir()).name
    proc = subprocess.run([sys.executable, "-c", KILLED_BEFORE_RUN_JSON, str(config)], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    (killed,) = [p.name for p in (tmp_path / "runs").iterdir() if p.name != older]
    capsys.readouterr()
    assert main(["run", str(config), "--resume"]) == 2  # the latest run is the killed one, not the older
    err = capsys.readouterr().err
    assert (
        err.startswith(
            f"error: {tmp_path / 'runs' / killed}: no run.json: the run stopped before it saved its"
            " state, so nothing of it can be resumed"
        )
        and err.count("\n") == 1
    )
    assert main(["run", str(config), "--resume", older, "-q"]) == 0  # named, the older run resumes


def test_a_lock_left_by_a_live_process_or_another_host_is_not_taken_over(tmp_path):
    path = tmp_path / LOCK_NAME
    for pid, host, says in (
        (os.getppid(), socket.gethostname(), "which still runs"),
        (1, "other-host", "which may still run: this host cannot tell"),
    ):
        path.write_text(json.dumps({"pid": pid, "host": host, "run_id": "R0", "since": "then"}))
        with pytest.raises(
            UsageError,
            match=f"locked by run R0 \\(pid {pid} on {host}, since then\\), {says}; if it has stopped, delete {path}",
        ):
            Lock.acquire(path, "R1", "the output folder", "here")
        assert json.loads(path.read_text())["run_id"] == "R0"  # left as it was
    path.write_text("not a lock")  # unreadable: nobody to name, taken over silently
    lock = Lock.acquire(path, "R1", "the output folder", "here")
    assert lock.previous is None and json.loads(path.read_text())["run_id"] == "R1"
    lock.release()
    assert not path.exists()


def test_a_lock_in_a_new_folder_leaves_nothing_when_let_go(tmp_path):
    path = tmp_path / "a" / "b" / LOCK_NAME
    lock = Lock.acquire(path, "R1", "the output folder", "here")
    with pytest.raises(UsageError, match="the output folder is in use by run R1 \\(pid "):
        Lock.acquire(path, "R2", "the output folder", "here")  # held: even by this very process
    lock.release()
    lock.release()
    assert not (tmp_path / "a").exists()


CONTEND = """
import os, sys, time
from pathlib import Path
from compiled_opt.core.errors import UsageError
from compiled_opt.store.lock import Lock

path, inside, rounds = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
held = clashes = 0
for _ in range(rounds):
    try:
        lock = Lock.acquire(path, f"R{os.getpid()}", "the output folder", "here")
    except UsageError:
        time.sleep(0.001)
        continue
    fd = os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # fails if another holder is inside too
    held += 1
    time.sleep(0.002)
    os.close(fd)
    os.unlink(inside)
    lock.release()  # removes the lock file: the next holder locks a new one
print(held)
"""


def test_processes_contending_for_a_lock_never_hold_it_together(tmp_path):
    """Eight processes take and let go of one lock (which removes its file) hundreds of times; a file only the
    holder creates and removes shows that no two ever held it at once."""
    path, inside = tmp_path / LOCK_NAME, tmp_path / "inside"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONTEND, str(path), str(inside), "300"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in results]
    assert sum(int(out) for out, _ in results) > 50  # they did take turns
    assert not path.exists() and not inside.exists()
