"""Saved progress of a long scan (dataset examples, analyses), so a run killed at any moment, even by SIGKILL,
resumes where it stopped when the same command runs again.

Each job keeps one folder under `<gallery folder>/.progress/` (hidden: never a shard, never pushed), named by a
hash of the command's settings so that only the same command finds it. It holds `state.pt`, small and replaced
atomically after every batch, and part files for what grows with the data (pixels of candidate images, per-batch
embeddings). A part is written before the state that names it and removed only once a state that no longer names
it is in place, so whenever a kill comes, the state on disk and every part it names are whole. Files are read
with `torch.load(weights_only=True)`: plain data and tensors, never code. The caller removes the folder once the
results are saved.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import shutil
from pathlib import Path

import torch

from .shards import write_atomically

PROGRESS_DIR = ".progress"
STATE_FILE = "state.pt"
PART_PREFIX = "part-"


class Resumed(UserWarning):
    """A stopped run's saved progress was picked up; the CLI prints the message as a note."""


def settings_key(settings: dict) -> str:
    """The settings as canonical JSON: what a resumed run must match exactly."""
    return json.dumps(settings, sort_keys=True, default=str)


def progress_folder(out: str | Path, job: str, settings: dict) -> Path:
    """`<out>/.progress/<job>-<hash of settings>`: the same command finds its own progress, no other does."""
    return job_folder(Path(out) / PROGRESS_DIR, job, settings)


def job_folder(parent: str | Path, job: str, settings: dict) -> Path:
    """`<parent>/<job>-<hash of settings>`: one folder per part of a job (one model's scan of several)."""
    digest = hashlib.sha256(settings_key(settings).encode()).hexdigest()[:16]
    return Path(parent) / f"{job}-{digest}"


class SavedProgress:
    """One job's progress folder (see the module docstring); `settings` must match for a saved state to count."""

    def __init__(self, folder: str | Path, settings: dict):
        self.folder = Path(folder)
        self.key = settings_key(settings)

    def load(self) -> dict | None:
        """The last saved state, or None when there is none, or it was saved for other settings or cannot be read
        (then the job starts over: slower, never wrong)."""
        path = self.folder / STATE_FILE
        if not path.is_file():
            return None
        for stale in self.folder.glob(".*.tmp"):  # a write cut short by the kill
            stale.unlink(missing_ok=True)
        try:
            state = _read(path)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
            return None
        return state if isinstance(state, dict) and state.get("settings") == self.key else None

    def part(self, name: str):
        """A part file named by the loaded state (its "parts" list)."""
        return _read(self.folder / f"{PART_PREFIX}{name}.pt")

    def save(self, state: dict, new_parts: dict | None = None, parts=()) -> None:
        """Write `new_parts` ({name: data}), then `state` naming `parts` (the names still needed, new ones
        included), then remove the parts it no longer names."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for name, data in (new_parts or {}).items():
            _write(self.folder / f"{PART_PREFIX}{name}.pt", data)
        live = list(dict.fromkeys(parts))  # in the caller's order
        _write(self.folder / STATE_FILE, {**state, "settings": self.key, "parts": live})
        wanted = {f"{PART_PREFIX}{name}.pt" for name in live}
        for path in self.folder.glob(f"{PART_PREFIX}*.pt"):
            if path.name not in wanted:
                path.unlink(missing_ok=True)


def clear_progress(folder: str | Path) -> None:
    """Forget a job's progress once its results are saved (and `.progress/` itself when no other job's is left)."""
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    if folder.parent.name == PROGRESS_DIR:
        try:
            folder.parent.rmdir()
        except OSError:  # other jobs' progress is still there
            pass


def _write(path: Path, data) -> None:
    buffer = io.BytesIO()
    torch.save(data, buffer)
    write_atomically(path, buffer.getvalue())


def _read(path: Path):
    return torch.load(path, map_location="cpu", weights_only=True)
