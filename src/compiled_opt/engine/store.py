"""Stored configs and trial logs, every file written atomically (temp file, fsync, rename)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from compiled_opt.engine.errors import UsageError

BEST = "best"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp)`` on a temp file beside ``path``, fsync it, then rename it over ``path``.

    A reader (or a run killed at any moment) sees either the old file or the new one, never a part.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_json(path: Path, record: Mapping[str, Any]) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n"))


class ConfigStore:
    """``<root>/<model>/<SYMBOL>.json`` per model and ``<root>/best/<SYMBOL>.json`` across models."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, model: str, symbol: str) -> Path:
        return self.root / model / f"{symbol}.json"

    def load(self, model: str, symbol: str) -> dict[str, Any] | None:
        path = self.path(model, symbol)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UsageError(f"stored config is not valid JSON ({exc})", str(path)) from None

    def save(self, model: str, symbol: str, record: Mapping[str, Any]) -> None:
        write_json(self.path(model, symbol), record)

    def update_best(self, symbol: str, metric: str) -> dict[str, Any] | None:
        """Point ``best/<SYMBOL>.json`` at the stored model with the lowest validation ``metric``."""
        records = [r for d in sorted(self.root.iterdir()) if d.is_dir() and d.name != BEST
                   for r in [self.load(d.name, symbol)] if r is not None]
        if not records:
            return None
        best = min(records, key=lambda r: r["validation"][metric])
        record = {**best, "selected_from": {r["model"]: r["validation"][metric] for r in records},
                  "selection_metric": metric}
        if self.load(BEST, symbol) != record:
            self.save(BEST, symbol, record)
        return record


class TrialLog:
    """``<runs>/<run-id>/trials.parquet``, rewritten atomically after every batch of trials."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []

    def extend(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)
        table = pa.Table.from_pylist(self.rows)
        atomic_write(self.path, lambda tmp: pq.write_table(table, tmp))
