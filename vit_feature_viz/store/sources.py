"""Where a gallery is read from: a local folder or a Hub dataset repo pinned to one commit, behind one small
interface (`shards`, `open`, `reading`), so the index and the pages never ask which."""

from __future__ import annotations

import contextlib
from pathlib import Path, PurePosixPath
from typing import Any
import re

import pyarrow as pa

from ..errors import VizError
from .schema import ANALYSIS_DIR, CONCEPTS_DIR
from .shards import first_error_line

HUB_DATASET_URL = re.compile(r"^(?:https?://[^/]+/)?datasets/")  # https://huggingface.co/datasets/org/name -> org/name
READ_BLOCK = 256 * 2**10  # bytes; HTTP range reads of a Hub shard


class Source:
    """Where shards are read from: `shards` (names) and `open(name)` (a binary file object)."""

    label: str
    repair = "replace it with a good copy, or move it out of the gallery's data folder"  # said of a broken shard
    revision: str | None = None
    key: tuple  # the revision read: sources with the same key share one index (GalleryCache)
    shards: list[str]
    concept_tables: list[str]  # CSVs under CONCEPTS_DIR, the preferred (newest) first
    analysis_plots: list[str]  # the experiments' plots, analysis/<experiment>/<run>.png, by experiment

    def open(self, shard: str):
        raise NotImplementedError

    def reading(self):
        """A context turning this source's I/O failures into VizErrors."""
        return contextlib.nullcontext()


class FolderSource(Source):
    def __init__(self, path: Path, label: str | None = None):
        from .folder import GalleryFolder

        self.label = label or str(path)  # `label`: a name to show instead of the server's path
        self.path = path
        self.shards = [p.relative_to(path).as_posix() for p in GalleryFolder(path).require_shards()]
        tables = sorted((path / CONCEPTS_DIR).glob("*.csv"), key=lambda p: p.stat().st_mtime, reverse=True)
        self.concept_tables = [p.relative_to(path).as_posix() for p in tables]
        self.analysis_plots = [p.relative_to(path).as_posix() for p in GalleryFolder(path).analysis_paths()
                               if p.suffix == ".png"]
        self.key = ("folder", str(path.resolve()), file_versions(path, [*self.shards, *self.concept_tables]))

    def open(self, shard: str):
        return open(self.path / shard, "rb")


class HubSource(Source):
    repair = "push the gallery again, or open an earlier revision"

    def __init__(self, repo_id: str, revision: str | None, token: str | bool | None):
        from huggingface_hub import HfApi, HfFileSystem

        from .hub import REPO_TYPE, hub_endpoint, looks_like_gallery

        self.label = repo_id
        self.repo_id = repo_id
        self.endpoint = hub_endpoint()
        self.asked_revision = revision
        with self.reading():
            info = HfApi(endpoint=self.endpoint, token=token).repo_info(repo_id, repo_type=REPO_TYPE,
                                                                        revision=revision)
            paths = [s.rfilename for s in info.siblings or []]
            if not looks_like_gallery(paths):
                raise VizError(f"the dataset repo {repo_id} is not a gallery (it has no README.md and "
                               "data/*.parquet): open the id of a repo made with vit-feature-viz push")
        self.revision = info.sha  # every later read is pinned to the commit just listed
        self.key = ("hub", self.endpoint, repo_id, self.revision)
        self.shards = sorted(p for p in paths if PurePosixPath(p).parent == PurePosixPath("data")
                             and p.endswith(".parquet") and not PurePosixPath(p).name.startswith("."))
        self.concept_tables = sorted(p for p in paths if PurePosixPath(p).parent == PurePosixPath(CONCEPTS_DIR)
                                     and p.endswith(".csv"))  # no dates on the Hub: file name order
        self.analysis_plots = sorted(p for p in paths if is_analysis_plot(p))
        self.fs = HfFileSystem(endpoint=self.endpoint, token=token)
        with self.reading():  # one listing gives every shard's size: opening a shard then costs no extra request
            self.fs.ls(f"datasets/{repo_id}@{self.revision}/data", detail=True)

    def open(self, shard: str):
        # readahead in small blocks: pyarrow asks for whole column chunks, so a read-ahead past them would only
        # fetch image bytes of columns the view does not show
        return self.fs.open(f"datasets/{self.repo_id}@{self.revision}/{shard}", "rb", block_size=READ_BLOCK)

    def reading(self):
        from .hub import hub_errors

        return hub_errors(self.endpoint, self.repo_id, Path("."), pushing=False, revision=self.asked_revision)


@contextlib.contextmanager
def readable_shard(source: Source, shard: str):
    """A shard that parquet cannot read (truncated, corrupt footer or pages) as one VizError naming it. Used outside
    `source.reading()`, which has already turned network failures into VizErrors."""
    try:
        yield
    except (pa.ArrowException, OSError) as err:
        raise VizError(f"The gallery {source.label} holds {shard}, which is not a readable parquet file "
                       f"({first_error_line(err)}): {source.repair}.") from None


def is_analysis_plot(path: str) -> bool:
    """analysis/<experiment>/<run>.png, nothing hidden: what `push` uploads of an experiment's plots."""
    parts = PurePosixPath(path).parts
    return (len(parts) == 3 and parts[0] == ANALYSIS_DIR and parts[2].endswith(".png")
            and not any(part.startswith(".") for part in parts))


def normalize_source(source: Any) -> str:
    """A stripped source; Hub dataset URLs become their repo id."""
    text = str(source or "").strip().rstrip("/")
    return HUB_DATASET_URL.sub("", text) if HUB_DATASET_URL.match(text) else text


def file_versions(folder: Path, names: list[str]) -> tuple:
    """(name, size, mtime) of each file: a folder gallery's revision, for sharing its index."""
    return tuple((name, (stat := (folder / name).stat()).st_size, stat.st_mtime_ns) for name in names)
