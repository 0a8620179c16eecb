"""A gallery folder is a Hugging Face dataset folder: ``README.md`` (dataset card) plus ``data/*.parquet`` shards.

One row per (model_id, layer, feature, objective). Every shard has the same schema (``FEATURES``) so shards
written at different times, or by different processes, load together with
``datasets.load_dataset(str(folder), split="train")`` and push to the Hub as plain files.

Writes are append-mostly: new keys go into a new shard, updated keys rewrite only the shard that holds them,
so a later upload only sends changed files. Every file is written to a temp file and ``os.replace``d, under a
``filelock`` so several processes can add at once.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from filelock import FileLock, Timeout
from huggingface_hub import DatasetCard

from ..errors import VizError
from .card import CARD_INFO_KEY, content_fingerprint, load_card_data, merge_card_info, read_card_rows, render_card
from .encoding import encode_row
from .sae_files import SAE_DIR
from .schema import ANALYSIS_DIR, ANALYSIS_SUFFIXES, FEATURES, Key, fold_by_key, merge_key, merge_rows
from .shards import keys_by_shard, read_shard, remove_stale_temps, write_atomically, write_shard


LOCK_NAME = ".gallery.lock"
LOCK_TIMEOUT_S = 600
_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class GalleryFolder:
    """Read and grow one gallery folder; see the module docstring for the layout."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.data_dir = self.path / "data"
        self.card_path = self.path / "README.md"

    def __repr__(self) -> str:
        return f"GalleryFolder({str(self.path)!r})"

    # ----------------------------------------------------------------- reading

    def exists(self) -> bool:
        """True once at least one shard has been written (a card alone holds no rows)."""
        return bool(self.shard_paths())

    def rows(self) -> list[dict]:
        """All rows, decoded: images come back as PIL images, in shard-name (i.e. time) order."""
        out = []
        for shard in self.require_shards():
            for stored in read_shard(shard).to_pylist():
                out.append(FEATURES.decode_example(stored))
        return out

    def layer_images(self, model_id: str, layer: int, objective: str) -> list[tuple[int, object]]:
        """(feature, PIL image) of every rendered row of one layer and objective: only those rows' image cells
        are read and decoded, not the whole gallery's."""
        from .encoding import decode_image

        wanted = [("model_id", "=", model_id), ("layer", "=", int(layer)), ("objective", "=", objective)]
        found = []
        for shard in self.require_shards():
            table = read_shard(shard, columns=["feature", "image"], filters=wanted)
            for feature, cell in zip(table.column("feature").to_pylist(), table.column("image").to_pylist()):
                image = decode_image(cell, str(self.path))
                if image is not None:
                    found.append((feature, image))
        return found

    def keys(self) -> set[Key]:
        """The merge keys present, reading only the four key columns (no image bytes)."""
        return {key for keys in keys_by_shard(self.require_shards()).values() for key in keys}

    def settings(self) -> list[dict]:
        """Every row's non-image columns (keys, recipe, steps, activations, ...), without reading image bytes:
        enough to tell which features a rerun may skip."""
        return read_card_rows(self.require_shards())

    # ----------------------------------------------------------------- writing

    def add(
        self, rows: Iterable[dict], *, shard_prefix: str = "train", card_info: dict | None = None,
        into: Path | None = None,
    ) -> list[Path]:
        """Merge ``rows`` in by key and refresh the card; returns the shard files written (new or rewritten).

        New keys go to a new shard, or are appended to ``into`` (a shard path from ``new_shard_path`` that this
        writer owns), so a long run can save every batch at once without leaving a shard per batch."""
        if not _PREFIX_RE.match(shard_prefix):
            raise ValueError(f"shard_prefix {shard_prefix!r} must be letters, digits, '-' or '_'.")
        incoming = fold_by_key(encode_row(r) for r in rows)
        if not incoming:
            return []  # nothing to merge; use write_card() to change only the card
        self.path.mkdir(parents=True, exist_ok=True)
        with self._locked():
            self._check_writable()
            remove_stale_temps(self.path, self.data_dir)
            written = self._merge_into_existing(incoming)
            if incoming:
                written.append(self._write_new_rows(list(incoming.values()), into or self.new_shard_path(shard_prefix)))
            self._write_card_unlocked(card_info)
        return written

    def new_shard_path(self, prefix: str = "train") -> Path:
        """A shard name unique across processes (nothing is written yet)."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        return self.data_dir / f"{prefix}-{stamp}-{uuid.uuid4().hex[:12]}.parquet"

    def check_destination(self) -> None:
        """Refuse, before any work is done for it, a destination that could not take the results: a file, a
        folder that is neither a gallery nor empty, or a place we may not write. Creates nothing."""
        existing = next(p for p in (self.path, *self.path.absolute().parents) if p.exists())
        if not existing.is_dir():
            raise VizError(f"{existing} is a file, not a folder", option="out", value=str(self.path),
                           fix="choose a new or empty output folder for {option}.")
        if existing == self.path:
            self._check_writable()
        try:
            handle, probe = tempfile.mkstemp(prefix=".vfv-write-probe-", dir=existing)
            os.close(handle)
            os.unlink(probe)
        except OSError as err:
            raise VizError(f"Cannot write to {self.path} ({err.strerror}): choose an output folder you can write to.") from None

    def write_card(self, card_info: dict | None = None) -> Path:
        """(Re)write README.md from the rows; ``card_info`` is merged into the info kept in the card's YAML."""
        self.require_shards()
        with self._locked():
            return self._write_card_unlocked(card_info)

    def card_text(self, card_info: dict | None = None) -> str:
        """The card README.md would get with ``card_info`` merged in, without writing anything (a push uses
        it to name the repo in the pushed card while the local folder stays as it is). Takes no lock, so it
        works on a read-only folder: every file is replaced atomically, so what it reads is whole."""
        return self.checked().card_text(card_info)

    def checked(self) -> CheckedGallery:
        """This folder with its shards found and checked once (VizError if it has none)."""
        return CheckedGallery(self, tuple(self.require_shards()))

    # ----------------------------------------------------------------- internals

    def shard_paths(self) -> list[Path]:
        """Shards as ``load_dataset`` sees them: ``data/*.parquet`` minus hidden files."""
        if not self.data_dir.is_dir():
            return []
        return sorted(p for p in self.data_dir.glob("*.parquet") if not p.name.startswith("."))

    def analysis_paths(self) -> list[Path]:
        """Experiment tables and plots, `analysis/<experiment>/<run>.csv|.png` (no hidden files): they are part of
        the gallery and pushed with it."""
        root = self.path / ANALYSIS_DIR
        if not root.is_dir():
            return []
        return sorted(
            p for p in root.glob("*/*")
            if p.suffix in ANALYSIS_SUFFIXES and p.is_file() and not p.name.startswith(".") and not p.parent.name.startswith(".")
        )

    def require_shards(self) -> list[Path]:
        """Shards, or a VizError saying this is not a gallery folder."""
        shards = self.shard_paths()
        if not self.path.is_dir():
            raise VizError(
                f"Gallery folder {self.path} does not exist: render features into it first, or check the path."
            )
        if not shards:
            raise VizError(
                f"{self.path} is not a gallery folder (no data/*.parquet shards): "
                "point to a folder written by vit-feature-viz."
            )
        return shards

    @contextlib.contextmanager
    def _locked(self):
        """Serialize read-modify-write across processes (fcntl-backed, so a killed holder frees it)."""
        lock = FileLock(str(self.path / LOCK_NAME), timeout=LOCK_TIMEOUT_S)
        try:
            with lock:
                yield
        except Timeout:
            raise VizError(
                f"Another process has held {self.path / LOCK_NAME} for {LOCK_TIMEOUT_S}s: "
                "wait for it to finish or stop it."
            ) from None

    def _check_writable(self) -> None:
        """Refuse to turn an unrelated, non-empty folder into a gallery (we would overwrite its README)."""
        if self.shard_paths():
            return
        allowed = {"README.md", "data", LOCK_NAME, ANALYSIS_DIR, SAE_DIR}
        foreign = sorted(p.name for p in self.path.iterdir() if p.name not in allowed and not p.name.startswith("."))
        if foreign:
            raise VizError(
                f"{self.path} is not a gallery folder and not empty (has {foreign[0]}): "
                "choose a new or empty output folder."
            )

    def _merge_into_existing(self, incoming: dict[Key, dict]) -> list[Path]:
        """Merge rows whose key already exists into their shards; pops them from ``incoming``."""
        written = []
        for shard, keys in keys_by_shard(self.shard_paths()).items():
            hits = set(keys) & incoming.keys()
            if not hits:
                continue  # untouched shards stay byte-identical
            stored = read_shard(shard).to_pylist()
            merged = [merge_rows(r, incoming[merge_key(r)]) if merge_key(r) in hits else r for r in stored]
            write_shard(shard, merged)
            written.append(shard)
            for key in hits:
                incoming.pop(key)
        return written

    def _write_new_rows(self, rows: list[dict], path: Path) -> Path:
        """All new keys of one ``add`` go into one shard: a new one, or appended to the writer's own."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        stored = read_shard(path).to_pylist() if path.exists() else []
        write_shard(path, stored + rows)
        return path

    def _write_card_unlocked(self, card_info: dict | None) -> Path:
        """Build the card from the cheap columns plus stored info and write it atomically."""
        text = self._card_text_unlocked(card_info)
        write_atomically(self.card_path, text.encode("utf-8"))
        return self.card_path

    def _card_text_unlocked(self, card_info: dict | None) -> str:
        old = load_card_data(self.card_path)
        shards = self.shard_paths()
        return card_from(old, read_card_rows(shards), content_fingerprint(shards), card_info)


@dataclass(frozen=True)
class CheckedGallery:
    """A gallery folder whose shards were found and checked once (`GalleryFolder.checked`, or the app's session
    check): a push takes it as it is, and its card (for any repo name) and feature count come from one read of
    the shards."""

    folder: GalleryFolder
    shards: tuple[Path, ...]

    @cached_property
    def card_rows(self) -> list[dict]:
        """The card's columns of every row, read once (a broken shard stops a push here, before the Hub)."""
        return read_card_rows(list(self.shards))

    @cached_property
    def fingerprint(self) -> str:
        return content_fingerprint(list(self.shards))

    @property
    def feature_count(self) -> int:
        """How many features (keys) the gallery holds, from the rows the card was read from."""
        return len({merge_key(row) for row in self.card_rows})

    def card_text(self, card_info: dict | None = None) -> str:
        """The card with `card_info` merged in (see `GalleryFolder.card_text`), without reading a shard again."""
        old = load_card_data(self.folder.card_path)
        return card_from(old, self.card_rows, self.fingerprint, card_info)


def card_from(old: dict, rows: list[dict], fingerprint: str, card_info: dict | None) -> str:
    """The card text for `rows`, keeping what the existing card (`old`, its YAML) holds and merging `card_info`."""
    info = merge_card_info(old.get(CARD_INFO_KEY) or {}, card_info or {})
    chosen = info.get("license") or old.get("license")  # a licence set by hand in the card survives
    text = render_card(rows, info, license=chosen, fingerprint=fingerprint)
    DatasetCard(text)  # fail here, not on the Hub, if the YAML does not parse
    return text


# --------------------------------------------------------------------- encoding rows


# --------------------------------------------------------------------- files


# --------------------------------------------------------------------- card


