"""Run locks: one ``compiled-opt run`` at a time writes an output folder, and a run folder.

A lock is a file, ``<output.directory>/.compiled-opt.lock`` or ``<runs>/<id>/.compiled-opt.lock``,
held with ``flock`` (the kernel lets it go when its process dies, however it dies) and holding who
holds it: pid, host, run id, since when. A lock that is held is refused with a one-line error naming
its holder. A lock file left by a run that died is stale and taken over, with a notice, when that
run's pid is dead on this host; one left by a process of another host is refused (this host cannot
tell whether it still runs). Readers (``show``, ``report``, ``evaluate``) take no lock.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from compiled_opt.core.errors import UsageError

LOCK_NAME = ".compiled-opt.lock"


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) a lock."""

    pid: int
    host: str
    run_id: str
    since: str

    def __str__(self) -> str:
        return f"run {self.run_id} (pid {self.pid} on {self.host}, since {self.since})"

    @classmethod
    def read(cls, fd: int) -> Holder | None:
        """The holder recorded in an open lock file; ``None`` if it is empty or not a lock of ours."""
        try:
            raw = json.loads(os.pread(fd, 4096, 0).decode())
            return cls(int(raw["pid"]), str(raw["host"]), str(raw["run_id"]), str(raw["since"]))
        except (ValueError, KeyError, TypeError):
            return None

    def alive(self) -> bool:
        """Whether this holder's process still runs (on this host; a zombie has finished)."""
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            return state != "Z"
        except FileNotFoundError:
            return False
        except OSError:  # no /proc: ask the kernel
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True


class Lock:
    """A held lock; ``release()`` removes the file, and the folders ``acquire`` made for it if still empty.

    ``previous`` is the holder of a stale lock this one took over (``None``: the lock was free).
    """

    def __init__(self, path: Path, fd: int, made: list[Path], previous: Holder | None):
        self.path, self.fd, self.made, self.previous = path, fd, made, previous

    @classmethod
    def acquire(cls, path: Path, run_id: str, what: str, where: str) -> Lock:
        """Hold the lock at ``path`` for ``run_id``, or raise a ``UsageError`` at ``where`` naming who holds
        it; ``what`` names what it guards in that message (e.g. ``the output folder hyperparams``)."""
        path = Path(path)
        try:
            made = _make_folders(path.parent)
            fd = _open_locked(path)
        except OSError as exc:
            raise UsageError(f"cannot lock {what} ({exc.strerror or exc})", where) from None
        if fd is None:
            holder = _holder_of(path)
            raise UsageError(
                f"{what} is in use by {holder or 'another compiled-opt run'}; wait for it to finish"
                " (show, report and evaluate can read meanwhile)",
                where,
            )
        previous = Holder.read(fd)
        me = Holder(os.getpid(), socket.gethostname(), run_id, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
        if previous is not None and (previous.host != me.host or previous.alive()):
            os.close(fd)  # a holder flock cannot see (another host's, or a file system without flock): theirs
            state = "still runs" if previous.host == me.host else "may still run: this host cannot tell"
            raise UsageError(f"{what} is locked by {previous}, which {state}; if it has stopped, delete {path}", where)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(me)).encode(), 0)
        return cls(path, fd, made, previous)

    def release(self) -> None:
        """Let the lock go; calling it again does nothing."""
        if self.fd is None:
            return
        try:
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                self.path.unlink()  # before unlocking: a process waiting on this file sees it go and retries
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None
        for folder in reversed(self.made):
            try:
                folder.rmdir()
            except OSError:  # not empty: the run wrote into it
                break


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; the ones created, outermost first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    for p in missing:
        p.mkdir(exist_ok=True)
    return missing


def _open_locked(path: Path) -> int | None:
    """An open, ``flock``ed descriptor of the lock file at ``path``, or ``None`` if another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # its holder removed the file while we opened it: lock the new one


def _holder_of(path: Path) -> Holder | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return Holder.read(fd)
    finally:
        os.close(fd)
