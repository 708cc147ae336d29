"""Stored configs, trial logs and run states, every file written atomically (temp file, rename).

Formats are ``records``'; this module only puts them on disk and reads them back.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from compiled_opt.core.errors import UsageError, did_you_mean
from compiled_opt.store.records import (
    TRIAL_VERSIONS,
    JobId,
    JobOutcome,
    JobState,
    RunState,
    Stage,
    StoredRecord,
    TrialRow,
    jobs_json,
    load_jobs,
    load_outcomes,
    outcomes_json,
    trial_schema,
)

BEST = "best"


def atomic_write(path: Path, write: Callable[[Path], None], durable: bool = True, sync_dir: bool = True) -> None:
    """Run ``write(tmp)`` on a temp file beside ``path``, then rename it over ``path``.

    A reader (or a run killed at any moment) sees either the old file or the new one, never a part.
    ``durable`` fsyncs the file before the rename, so that holds through a power cut too (stored
    configs), and, with ``sync_dir``, the folder after it, so the rename itself survives one; logs
    that a resumed run can recompute skip both.
    """
    atomic_write_all([(Path(path), write)], durable, sync_dir)


def atomic_write_all(
    files: Sequence[tuple[Path, Callable[[Path], None]]], durable: bool = True, sync_dir: bool = True
) -> None:
    """``atomic_write`` for several files at once: every temp file is written before the first rename, so a
    failure while writing (e.g. a full disk) leaves every file as it was."""
    temps: list[Path] = []
    try:
        for path, write in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.close(fd)
            temps.append(Path(tmp))
            os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else new_file_mode())  # not mkstemp's 0600
            write(Path(tmp))
            if durable:
                with open(tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
        for (path, _), tmp in zip(files, temps, strict=True):
            os.replace(tmp, path)
    except BaseException:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise
    if durable and sync_dir:
        for directory in dict.fromkeys(path.parent for path, _ in files):
            fsync_dir(directory)


def new_file_mode() -> int:
    """The mode ``open`` would give a new file under the current umask (e.g. 0644)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def fsync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def json_text(payload: Mapping[str, Any]) -> str:
    """How every JSON file is written: indented, one trailing newline."""
    return json.dumps(payload, indent=2) + "\n"


def write_json(path: Path, payload: Mapping[str, Any] | str, sync_dir: bool = True) -> None:
    text = payload if isinstance(payload, str) else json_text(payload)
    atomic_write(path, lambda tmp: tmp.write_text(text), sync_dir=sync_dir)


def read_json(path: Path) -> Any:
    """A JSON file's value; a file that is not JSON text, or cannot be read, is a one-line ``UsageError``."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"not valid JSON ({exc})", str(path)) from None
    except RecursionError:
        raise UsageError("not valid JSON (nested too deeply)", str(path)) from None
    except UnicodeDecodeError:
        raise UsageError("not valid JSON (not UTF-8 text: a damaged or foreign file)", str(path)) from None
    except OSError as exc:
        raise UsageError(f"cannot read it ({exc.strerror or exc})", str(path)) from None


class ConfigStore:
    """``<root>/<model>/<SYMBOL>.json`` per model and ``<root>/best/<SYMBOL>.json`` across models.

    Each file is fsynced before its rename; the folders' fsyncs (which make the renames themselves
    survive a power cut) are gathered into ``sync``, which the driver calls about once a second.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.unsynced: set[Path] = set()

    def _write(self, path: Path, text: str) -> None:
        write_json(path, text, sync_dir=False)
        self.unsynced.add(path.parent)

    def sync(self) -> None:
        """Make every rename so far durable."""
        while self.unsynced:
            fsync_dir(self.unsynced.pop())

    def path(self, model: str, symbol: str) -> Path:
        return self.root / model / f"{symbol}.json"

    def load(self, model: str, symbol: str) -> StoredRecord | None:
        """The record stored for ``model`` (or ``best``) and ``symbol``; one whose own names disagree with
        its path (a file copied by hand) is refused."""
        path = self.path(model, symbol)
        if not path.is_file():
            return None
        record = StoredRecord.from_json(read_json(path), str(path))
        for key, value, expected in (("symbol", record.symbol, symbol), ("model", record.model, model)):
            if value != expected and not (key == "model" and model == BEST):
                raise UsageError(f"{key}: {value!r}, but the file is the record of {expected!r}", str(path))
        return record

    def save(self, record: StoredRecord) -> None:
        self._write(self.path(record.model, record.symbol), json_text(record.to_json()))

    def models(self) -> list[str]:
        """Every model folder with stored configs."""
        if not self.root.is_dir():
            return []
        return sorted(d.name for d in self.root.iterdir() if d.is_dir() and d.name != BEST)

    def symbols(self, model: str) -> list[str]:
        return sorted(p.stem for p in (self.root / model).glob("*.json"))

    def update_best(self, symbol: str, metric: str, fresh: StoredRecord | None = None) -> StoredRecord | None:
        """Point ``best/<SYMBOL>.json`` at the stored model with the lowest validation ``metric``
        (``fresh``: a record just saved, so it need not be read back). Records that were not scored in
        ``metric`` cannot be ranked in it: if any record was, those are left out; if none was, all are
        ranked by the return MAE every record holds."""
        records = [fresh if fresh is not None and m == fresh.model else self.load(m, symbol) for m in self.models()]
        records = [r for r in records if r is not None]
        if not records:
            return None
        if any(r.validation.in_metric(metric) is not None for r in records):
            records = [r for r in records if r.validation.in_metric(metric) is not None]
        else:
            metric = "pct_return_mae"
        scores = {r.model: r.validation.in_metric(metric) for r in records}
        best = min(records, key=lambda r: scores[r.model])
        chosen = dataclasses.replace(best, selected_from=scores, selection_metric=metric)
        current, text = self.path(BEST, symbol), json_text(chosen.to_json())
        if not current.is_file() or current.read_bytes() != text.encode():
            self._write(current, text)
        return chosen


class TrialLog:
    """``<run>/trials/``: Parquet part files of finished batches, appended, never rewritten.

    Batches are buffered and each ``flush`` (the driver's group commit) writes them as one part,
    whatever jobs they belong to: many small files would cost the driver more than the jobs.
    A run killed before a flush loses those batches from the log only; resuming recomputes them.
    """

    def __init__(self, run_dir: Path):
        self.directory = Path(run_dir) / "trials"
        self.buffered: list[TrialRow] = []

    def append(self, rows: Iterable[TrialRow]) -> None:
        self.buffered.extend(rows)

    def flush(self) -> None:
        """Write the buffered rows as one part (named by time, so parts of later attempts come after)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.buffered:
            return
        schema = trial_schema()
        table = pa.Table.from_pydict(
            {f.name: [getattr(r, f.name) for r in self.buffered] for f in schema}, schema=schema
        )
        path = self.directory / f"part-{time.time_ns():020d}.parquet"
        atomic_write(path, lambda tmp: pq.write_table(table, tmp), durable=False)
        self.buffered = []


def read_trials(run_dir: Path, on_damaged: Callable[[str], None] | None = None) -> list[TrialRow]:
    """Every trial row logged in ``run_dir``, in job, stage and trial order: the one reader of trial logs.

    A part that cannot be read (parts are not fsynced: a power cut can cut one short) is a ``UsageError``
    naming it or, given ``on_damaged``, reported there and left out. A trial logged in several parts (a
    resume recomputes what follows a part left out) is read once, from the last.
    """
    import pyarrow as pa
    import pyarrow.dataset as ds

    directory = Path(run_dir) / "trials"
    files = sorted(str(p) for p in directory.glob("*.parquet")) if directory.is_dir() else []
    try:
        rows = ds.dataset(files, schema=trial_schema(), format="parquet").to_table().to_pylist() if files else []
    except (pa.ArrowException, OSError):  # find the damaged parts and read the others one by one
        rows = []
        for path in files:
            try:
                rows += ds.dataset(path, schema=trial_schema(), format="parquet").to_table().to_pylist()
            except (pa.ArrowException, OSError) as exc:
                damaged = UsageError(f"a damaged trial-log part ({exc})", path)
                if on_damaged is None:
                    raise damaged from None
                on_damaged(str(damaged))
    trials: dict[tuple, TrialRow] = {}
    for row in rows:
        if row["schema_version"] not in TRIAL_VERSIONS:
            raise UsageError(
                f"trial log schema_version {row['schema_version']} is not one this compiled-opt reads", str(directory)
            )
        if row["stage"] not in tuple(Stage):
            raise UsageError(f"stage: unknown value {row['stage']!r} in a trial row", str(directory))
        trial = TrialRow(**{**row, "stage": Stage(row["stage"])})
        trials[(trial.stage, trial.symbol, trial.model, trial.trial)] = trial
    return sorted(trials.values(), key=lambda r: (r.stage != Stage.POOLED, r.symbol, r.model, r.trial))


class RunDir:
    """``<runs>/<id>/``: ``run.json`` (the run state), ``jobs/``, ``trials/``, ``outcomes/`` and ``errors.log``.

    ``run.json`` is written when the run starts and ends; in between, ``jobs/`` gets one JSON part per
    group commit with the job states that changed, read over ``run.json`` in the order written.

    ``outcomes/`` holds one JSON part per group commit with the jobs that finished since the last:
    appended, never rewritten, so a run of any size commits in time proportional to what is new.
    """

    def __init__(self, runs: Path, run_id: str):
        self.path = Path(runs) / run_id
        self.run_id = run_id
        self.trials = TrialLog(self.path)

    @property
    def state_path(self) -> Path:
        return self.path / "run.json"

    @property
    def errors_path(self) -> Path:
        return self.path / "errors.log"

    def save_state(self, state: RunState) -> None:
        write_json(self.state_path, state.to_json())

    @property
    def jobs_path(self) -> Path:
        return self.path / "jobs"

    def save_jobs(self, jobs: list[JobState]) -> None:
        """Job states that changed since ``run.json`` or the last part, as one part: a group commit writes
        what changed, not every job's state (at 10,000 symbols a ``run.json`` took 1.2 s to write)."""
        if jobs:
            path = self.jobs_path / f"part-{time.time_ns():020d}.json"
            atomic_write(path, lambda tmp: tmp.write_text(json_text(jobs_json(jobs))))

    @property
    def outcomes_path(self) -> Path:
        return self.path / "outcomes"

    def save_outcomes(self, outcomes: list[JobOutcome]) -> None:
        """The finished jobs of one group commit as one part (named by time, so later attempts come after)."""
        if outcomes:
            path = self.outcomes_path / f"part-{time.time_ns():020d}.json"
            atomic_write(path, lambda tmp: tmp.write_text(json_text(outcomes_json(outcomes))))

    def load_outcomes(self) -> dict[JobId, JobOutcome]:
        """Every finished job's outcome (a job in several parts, e.g. retried after a failed write: its last)."""
        parts = sorted(self.outcomes_path.glob("part-*.json")) if self.outcomes_path.is_dir() else []
        return {o.job: o for part in parts for o in load_outcomes(read_json(part), str(part))}

    def config_path(self) -> Path | None:
        """The config file the run was made with, as ``run.json`` names it (``None``: it names none)."""
        try:
            path = read_json(self.state_path).get("config", {}).get("path")
        except (UsageError, AttributeError, OSError):
            return None
        return Path(path) if isinstance(path, str) else None

    def load_state(self) -> RunState:
        if not self.state_path.is_file():
            raise UsageError(
                "no run.json: the run stopped before it saved its state, so nothing of it can be"
                " resumed or reported (stored configs are unaffected); start a new run, or name an"
                " earlier one",
                str(self.path),
            )
        state = RunState.from_json(read_json(self.state_path), str(self.state_path))
        parts = sorted(self.jobs_path.glob("part-*.json")) if self.jobs_path.is_dir() else []
        for part in parts:  # in the order written: each job's last part is its latest state
            state.jobs.update((j.job, j) for j in load_jobs(read_json(part), str(part)))
        return state

    def log_error(self, heading: str, text: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.errors_path, "a") as fh:
            fh.write(f"=== {heading}\n{text.rstrip()}\n\n")


def run_ids(runs: Path) -> list[str]:
    """Run folders under ``runs`` (every folder there, a run that stopped before it saved its ``run.json``
    too), oldest first (run ids sort by time)."""
    runs = Path(runs)
    return sorted(p.name for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")) if runs.is_dir() else []


def find_run(runs: Path, which: str, where: str, config: Path) -> RunDir:
    """The run ``which`` under ``runs``: an id, or ``latest``, the newest run made with the ``config`` file
    (several configs may share a runs folder). A run records its config's path; in a folder that moved,
    the file's name decides. A folder whose ``run.json`` does not say, e.g. a run killed before it saved
    one, may be this config's and is not passed over."""
    ids = run_ids(runs)
    if not ids:
        raise UsageError(f"no runs in {runs}", where)
    if which == "latest":
        made = {i: RunDir(runs, i).config_path() for i in ids}
        here = Path(config).resolve()
        same = here if here in made.values() else None
        mine = [
            i
            for i in reversed(ids)
            if made[i] is None or made[i] == same or (same is None and made[i].name == here.name)
        ]
        if not mine:
            raise UsageError(
                f"no run of {config} in {runs} (its newest, {ids[-1]}, was made with another config)", where
            )
        return RunDir(runs, mine[0])
    if which not in ids:
        raise UsageError(f"no run {which!r} in {runs}; {did_you_mean(which, ids[-5:])}", where)
    return RunDir(runs, which)
