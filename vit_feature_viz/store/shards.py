"""The parquet shards of a gallery folder: read them (checking they hold the gallery's columns), write them, and
replace any file atomically so a reader or a killed writer never sees half of one."""

from __future__ import annotations

import contextlib
import os
import uuid
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import VizError
from .schema import FEATURES, KEY_COLUMNS, Key, merge_key

def read_shard(path: Path, columns: list[str] | None = None, filters: list[tuple] | None = None) -> pa.Table:
    """Read a shard after checking it has the gallery columns, so foreign or damaged files fail clearly;
    `filters` (pyarrow's [(column, op, value)]) keeps only the matching rows, whose cells alone are decoded."""
    try:
        names = pq.read_schema(path).names
        if set(names) == set(FEATURES):
            return pq.read_table(path, columns=columns, filters=filters)
    except (pa.ArrowException, OSError) as err:
        raise VizError(f"{path} is not a readable parquet file ({str(err).splitlines()[0][:80]}): "
                       f"move it out of {path.parent} or restore it.") from None
    raise VizError(
        f"{path} is not a gallery shard (columns {names[:4]}...): "
        f"move it out of {path.parent} or use another folder."
    )


def shard_problem(path: Path) -> str | None:
    """Why `path` cannot join a gallery (not parquet, or not a gallery's columns), or None if it can: checked
    before a file from elsewhere (a pull) is written into a gallery folder."""
    try:
        names = pq.read_schema(path).names
        if set(names) != set(FEATURES):
            return f"not a gallery shard (columns {names[:4]}...)"
        pq.read_table(path, columns=list(KEY_COLUMNS))
    except (pa.ArrowException, OSError) as err:
        return f"not a readable parquet file ({first_error_line(err)})"
    return None


def first_error_line(err: BaseException, limit: int = 80) -> str:
    """An error's first line, cut short, for a one-line message (parquet's errors run over several lines)."""
    lines = str(err).strip().splitlines()
    return lines[0][:limit] if lines else type(err).__name__


def linked_file(folder: Path, paths: Iterable[Path]) -> str | None:
    """What is wrong with the first of `paths` (files under `folder`) that is a symbolic link, lies behind one, or is
    not a regular file; None if all are plain files of the folder. A push or a download sends only those: a link
    in a gallery would carry a file from elsewhere on the machine (the folder itself may be a link)."""
    folder = Path(folder)
    for path in paths:
        relative = Path(path).relative_to(folder)
        for depth in range(1, len(relative.parts) + 1):
            step = folder.joinpath(*relative.parts[:depth])
            if step.is_symlink():
                inside = "" if depth == len(relative.parts) else f" (it holds {relative.as_posix()})"
                return f"{step.relative_to(folder).as_posix()} is a symbolic link{inside}"
        if not Path(path).is_file():
            return f"{relative.as_posix()} is not a regular file"
    return None


def keys_by_shard(shards: list[Path]) -> dict[Path, list[Key]]:
    """Which keys each shard holds, read from the key columns only."""
    return {s: [merge_key(r) for r in read_shard(s, columns=list(KEY_COLUMNS)).to_pylist()] for s in shards}


def write_shard(path: Path, rows: list[dict]) -> None:
    """Write stored-form rows with datasets' parquet writer (features metadata, content-defined chunking,
    uncompressed PLAIN image bytes: what the Hub dedups best)."""
    ds = datasets.Dataset.from_list(rows, features=FEATURES)
    with _quiet_datasets():
        _atomic_write(path, ds.to_parquet)


def _atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    """Write via a hidden temp file in the same folder then ``os.replace``: readers never see a partial file,
    and the temp name matches neither ``*.parquet`` nor README.md."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one step (see ``_atomic_write``): for other modules' files that a kill
    must never leave half-written, such as saved progress."""
    _atomic_write(Path(path), lambda f: f.write(data))


def remove_stale_temps(*folders: Path) -> None:
    """Temp files left by a killed writer; safe to delete because every writer holds the lock."""
    for folder in folders:
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _quiet_datasets():
    """``to_parquet`` draws a progress bar per shard; hide it without changing the caller's setting."""
    was_disabled = datasets.are_progress_bars_disabled()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not was_disabled:
            datasets.disable_progress_bars()
        try:
            yield
        finally:
            if not was_disabled:
                datasets.enable_progress_bars()
