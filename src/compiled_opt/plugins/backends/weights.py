"""Model weights for the built-in backends: a directory, or a Hugging Face id read offline from the cache.

Toto and Kronos look their weights up here, so both accept the same two forms, report every missing
piece of a model at once (Kronos needs a tokenizer and a model) in one line, and spell the download
hint one way. Nothing is ever downloaded: the machines that run searches usually have no network.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from compiled_opt.api import OptionError, UsageError

FILES = ("config.json", "model.safetensors")


def download_hint(repos: Sequence[str]) -> str:
    """How to get ``repos`` onto a machine without network access."""
    commands = " and ".join(f"`hf download {repo}`" for repo in repos)
    return f"download with {commands} where there is network access and copy the Hugging Face cache here"


@dataclass(frozen=True)
class Weights:
    """One set of weights a backend needs: ``what`` it is (``"toto checkpoint"``), the ``name`` it was
    given (a directory or a Hugging Face id) in the backend's ``option``, and the ``default`` id to
    suggest when ``name`` is not one."""

    what: str
    name: str
    default: str
    option: str


def locate(wanted: Sequence[Weights], files: Sequence[str] = FILES) -> list[Path]:
    """The directory of each of ``wanted``, holding ``files``; else one ``OptionError`` naming every problem
    (against the first missing one's option)."""
    found, problems, repos, options = [], [], [], []
    for weights in wanted:
        directory, repo = _directory(weights.name)
        if directory is None:
            problems.append(
                f"{weights.what} {weights.name!r} is neither a directory nor in the local Hugging Face cache"
            )
            repos.append(repo or weights.default)
            options.append(weights.option)
            continue
        missing = [f for f in files if not (directory / f).is_file()]
        if missing:
            problems.append(f"{weights.what} directory {directory} has no {' and no '.join(missing)}")
            options.append(weights.option)
        found.append(directory)
    if problems:
        hint = f"{download_hint(list(dict.fromkeys(repos)))}, or " if repos else ""
        where = "a directory" if len(wanted) == 1 else "directories"
        raise OptionError(f"{'; '.join(problems)}: {hint}give {where} holding {' and '.join(files)}", options[0])
    return found


def _directory(name: str) -> tuple[Path | None, str | None]:
    """``name`` as a directory, else its snapshot in the Hugging Face cache; with the repo id it names
    (``None`` when it names none, e.g. a path that does not exist)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path, None
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, local_files_only=True)), name
    except ValueError:  # not even a repo id
        return None, None
    except OSError:  # a repo id that is not in the cache
        return None, name


@contextlib.contextmanager
def loading(what: str, directory: Path) -> Iterator[None]:
    """Turn a failure to read the ``what`` in ``directory`` (corrupt or foreign files) into a one-line
    ``UsageError``."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, ValueError, TypeError, KeyError, SafetensorError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"cannot load the {what} in {directory}: {first}") from exc
