"""Browse a gallery someone already computed: a local gallery folder or a Hub dataset id, opened in seconds.

Galleries are parquet shards whose rows hold images (the visualization, its patch map, the top dataset examples
and theirs) next to a few numbers. Browsing must not wait for gigabytes of images, so this module reads parquet
by parts: opening a gallery reads the shards' footers (and refuses a gallery declaring more rows than `max_rows`
before reading anything else), then only the key columns and activations, into a sorted index of numpy arrays;
a view then reads only the columns it shows, for the row groups that hold its rows, and decodes images one at a
time within a pixel budget, shrunk as they are decoded. On the Hub the same reads go through `HfFileSystem` as
HTTP range requests at one pinned commit, so a gallery that changes meanwhile never mixes two versions. A
`GalleryCache` shares one index per gallery revision between all its callers (the app's visitors).

    gallery = open_gallery("org/vit-b16-gallery")          # or a folder written by vit-feature-viz
    gallery.models(); gallery.layers(model); gallery.features(model, 5)
    page = gallery.feature_page(model, 5, 812)               # visualizations, examples, stats, neighbours

No Gradio here: the app's "Explore galleries" tab and any notebook use the same calls.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from ..errors import VizError
from .folder import ANALYSIS_DIR, KEY_COLUMNS, first_error_line
from ..specs import whole_number

# Columns read for every row when a gallery opens (the sorted index); the others of a row only when it is shown.
INDEX_COLUMNS = (*KEY_COLUMNS, "activation")
DETAIL_COLUMNS = ("recipe", "steps", "seed", "image_size", "activation_init", "dataset", "top_scores",
                  "top_indices", "concept_names")  # `concept_names` (CLIP concept labels) is optional
IMAGE_COLUMNS = ("image", "image_patch_map", "top_images", "patch_maps")
PREFERRED_OBJECTIVE = "feature"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HUB_URL = re.compile(r"^(?:https?://[^/]+/)?datasets/")  # https://huggingface.co/datasets/org/name -> org/name
EXAMPLE_ID = "org/name"
CACHE_BYTES = 128 * 2**20  # image column chunks kept in memory per gallery (neighbours often share a row group)
INDEX_THREADS = 8
INDEX_SCHEMA = pa.schema([("model_id", pa.string()), ("layer", pa.int64()), ("feature", pa.int64()),
                          ("objective", pa.string()), ("activation", pa.float64())])  # INDEX_COLUMNS, as held
# CLIP concept names written by `vit-feature-viz analyze clip-names` (vit_feature_viz.analysis.clip_names), kept
# in the gallery next to its shards: model_id, layer, feature, rank, name columns
CONCEPTS_DIR = f"{ANALYSIS_DIR}/clip_names"
READ_BLOCK = 256 * 2**10  # bytes; HTTP range reads of a Hub shard
# Bounds on what any gallery, however it was written, may cost to browse (the app's preset may lower MAX_ROWS)
MAX_ROWS = 1_000_000  # rows a gallery may declare (its shards' footers) to be opened: ~45 bytes each in the index
MAX_FOOTER_BYTES = 64 * 2**20  # a shard's parquet footer (row-group metadata), checked before it is parsed
MAX_CHUNK_BYTES = 2**30  # the columns of one row group read at once (a gallery's own row groups hold 100 rows)
MAX_INDEX_BYTES = 256 * 2**20  # the key columns of all rows, read when a gallery opens (~60 bytes a row)
MAX_IMAGE_PIXELS = 2048 * 2048  # a stored image larger than this (from its header) is refused, never decoded
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")  # what galleries store (PNG) or may hold; no other decoder is tried
PAGE_PX = 1024  # images of a feature page are shrunk to this side at most
MAX_EXAMPLES = 32  # top dataset examples shown per feature, however many a row holds
CONCEPT_BYTES = 8 * 2**20  # bytes read of each clip-names table (~130k names); the rest of a bigger one is left
MAX_INDEX = 2**31 - 1  # a layer or feature index: the gallery's columns are int32


# ------------------------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class Entry:
    """One gallery row's cheap columns, plus where its images are stored (shard, row group, row)."""

    model_id: str
    layer: int
    feature: int
    objective: str
    recipe: str | None
    steps: int | None
    seed: int | None
    image_size: int | None
    activation: float | None
    activation_init: float | None
    dataset: str | None
    top_scores: tuple[float, ...]
    top_indices: tuple[int, ...]
    concept_names: tuple[str, ...]
    shard: int
    row_group: int
    row: int

    @property
    def rendered(self) -> bool:
        """Whether the row holds a visualization (rows written by a dataset scan alone have no activation)."""
        return self.activation is not None


@dataclass
class Visualization:
    """One optimized image of a feature (one per objective in the gallery), where the feature fires in it, and
    the row it comes from (objective, recipe, steps, activations)."""

    row: Entry
    image: Image.Image | None
    patch_map: Image.Image | None

    @property
    def caption(self) -> str:
        row = self.row
        parts = [row.objective, f"recipe {row.recipe}" if row.recipe else None,
                 f"{row.steps} steps" if row.steps else None,
                 f"activation {row.activation:.3f}" if row.activation is not None else None]
        return " · ".join(p for p in parts if p)


@dataclass
class TopExample:
    """A dataset image among the feature's top activators, with its patch map when the gallery has one."""

    rank: int
    score: float | None
    index: int | None
    image: Image.Image
    patch_map: Image.Image | None

    @property
    def caption(self) -> str:
        score = f" · {self.score:.3f}" if self.score is not None else ""
        row = f" · row {self.index}" if self.index is not None else ""
        return f"#{self.rank}{row}{score}"


@dataclass
class FeaturePage:
    """Everything a feature's page shows; `link_params` are its deep-link query parameters."""

    source: str
    model_id: str
    layer: int
    feature: int
    visualizations: list[Visualization]
    examples: list[TopExample]
    dataset: str | None
    stats: dict[str, Any]
    concept_names: list[str]
    previous: int | None
    next: int | None
    link_params: dict[str, str] = field(default_factory=dict)

    def link(self, base_url: str) -> str:
        """The shareable URL of this page on the app served at `base_url`."""
        return deep_link(base_url, **self.link_params)


# ------------------------------------------------------------------------------------------------ sources


class _Source:
    """Where shards are read from: `shards` (names) and `open(name)` (a binary file object)."""

    label: str
    repair = "replace it with a good copy, or move it out of the gallery's data folder"  # said of a broken shard
    revision: str | None = None
    key: tuple  # the revision read: sources with the same key share one index (GalleryCache)
    shards: list[str]
    concept_tables: list[str]  # CSVs under CONCEPTS_DIR, the preferred (newest) first

    def open(self, shard: str):
        raise NotImplementedError

    def reading(self):
        """A context turning this source's I/O failures into VizErrors."""
        return contextlib.nullcontext()


class _FolderSource(_Source):
    def __init__(self, path: Path):
        from .folder import GalleryFolder

        self.label = str(path)
        self.path = path
        self.shards = [p.relative_to(path).as_posix() for p in GalleryFolder(path)._require_shards()]
        tables = sorted((path / CONCEPTS_DIR).glob("*.csv"), key=lambda p: p.stat().st_mtime, reverse=True)
        self.concept_tables = [p.relative_to(path).as_posix() for p in tables]
        self.key = ("folder", str(path.resolve()), _file_versions(path, [*self.shards, *self.concept_tables]))

    def open(self, shard: str):
        return open(self.path / shard, "rb")


class _HubSource(_Source):
    repair = "push the gallery again, or open an earlier revision"

    def __init__(self, repo_id: str, revision: str | None, token: str | bool | None):
        from huggingface_hub import HfApi, HfFileSystem

        from .hub import REPO_TYPE, _looks_like_gallery, hub_endpoint

        self.label = repo_id
        self.repo_id = repo_id
        self.endpoint = hub_endpoint()
        self.asked_revision = revision
        with self.reading():
            info = HfApi(endpoint=self.endpoint, token=token).repo_info(repo_id, repo_type=REPO_TYPE,
                                                                        revision=revision)
            paths = [s.rfilename for s in info.siblings or []]
            if not _looks_like_gallery(paths):
                raise VizError(f"the dataset repo {repo_id} is not a gallery (it has no README.md and "
                               "data/*.parquet): open the id of a repo made with vit-feature-viz push")
        self.revision = info.sha  # every later read is pinned to the commit just listed
        self.key = ("hub", self.endpoint, repo_id, self.revision)
        self.shards = sorted(p for p in paths if PurePosixPath(p).parent == PurePosixPath("data")
                             and p.endswith(".parquet") and not PurePosixPath(p).name.startswith("."))
        self.concept_tables = sorted(p for p in paths if PurePosixPath(p).parent == PurePosixPath(CONCEPTS_DIR)
                                     and p.endswith(".csv"))  # no dates on the Hub: file name order
        self.fs = HfFileSystem(endpoint=self.endpoint, token=token)
        with self.reading():  # one listing gives every shard's size: opening a shard then costs no extra request
            self.fs.ls(f"datasets/{repo_id}@{self.revision}/data", detail=True)

    def open(self, shard: str):
        # readahead in small blocks: pyarrow asks for whole column chunks, so a read-ahead past them would only
        # fetch image bytes of columns the view does not show
        return self.fs.open(f"datasets/{self.repo_id}@{self.revision}/{shard}", "rb", block_size=READ_BLOCK)

    def reading(self):
        from .hub import _hub_errors

        return _hub_errors(self.endpoint, self.repo_id, Path("."), pushing=False, revision=self.asked_revision)


@contextlib.contextmanager
def _readable_shard(source: _Source, shard: str):
    """A shard that parquet cannot read (truncated, corrupt footer or pages) as one VizError naming it. Used outside
    `source.reading()`, which has already turned network failures into VizErrors."""
    try:
        yield
    except (pa.ArrowException, OSError) as err:
        raise VizError(f"The gallery {source.label} holds {shard}, which is not a readable parquet file "
                       f"({first_error_line(err)}): {source.repair}.") from None


def looks_like_path(source: str) -> bool:
    """Whether `source` names a local folder rather than a Hub id (absolute, relative, ~, or an existing folder)."""
    return (source.startswith(("/", ".", "~", "\\")) or ".." in source or source.count("/") > 1
            or Path(source).exists())


def normalize_source(source: Any) -> str:
    """A stripped source; Hub dataset URLs become their repo id."""
    text = str(source or "").strip().rstrip("/")
    return HUB_URL.sub("", text) if HUB_URL.match(text) else text


def open_gallery(source: Any, *, revision: str | None = None, token: str | bool | None = None,
                 allow_local: bool = True, max_rows: int = MAX_ROWS, indexes: GalleryCache | None = None) -> Gallery:
    """Open a gallery folder or a Hub dataset repo (`org/name` or its URL) for browsing.

    With `allow_local=False` (a public Space) only Hub ids are accepted, never paths on the server. A gallery
    declaring more than `max_rows` rows is refused from its shards' footers; `indexes` (a GalleryCache) shares one
    index per gallery revision with everyone else who opens it through the same cache.
    `token`: None reads with the local user's own login, False anonymously, else with that token (every later
    read too).
    """
    source = normalize_source(source)
    if not source:
        raise VizError(f"No gallery given: enter a Hub dataset id such as {EXAMPLE_ID}"
                       + (" or a gallery folder." if allow_local else "."))
    if allow_local and looks_like_path(source):
        path = Path(source).expanduser()
        if not path.is_dir():
            raise VizError(f"Gallery folder {path} does not exist: check the path, or enter a Hub dataset id "
                           f"such as {EXAMPLE_ID}.")
        return Gallery(_FolderSource(path), max_rows=max_rows, indexes=indexes)
    if not HUB_ID.match(source):
        if looks_like_path(source):
            raise VizError(f"'{source}' is a local path: here enter a Hub dataset id such as {EXAMPLE_ID}.")
        raise VizError(f"'{source}' is not a Hub dataset id: use namespace/name, e.g. {EXAMPLE_ID}"
                       + (", or the path of a gallery folder." if allow_local else "."))
    return Gallery(_HubSource(source, revision, token), max_rows=max_rows, indexes=indexes)


# ------------------------------------------------------------------------------------------------ gallery


class Gallery:
    """An opened gallery: a sorted index of its rows (no pixels, see GalleryIndex), and reads of the rest on
    demand through `source` (the caller's own access to the gallery)."""

    def __init__(self, source: _Source, *, max_rows: int = MAX_ROWS, indexes: GalleryCache | None = None):
        self.source = source
        self.index = indexes.index(source) if indexes is not None else GalleryIndex(source, max_rows)

    def __repr__(self) -> str:
        return f"Gallery({self.source.label!r}, {self.index.row_count} rows)"

    @property
    def label(self) -> str:
        return self.source.label

    @property
    def row_count(self) -> int:
        return self.index.row_count

    @property
    def feature_count(self) -> int:
        """Distinct (model, layer, feature) the gallery holds, whatever the objectives."""
        return self.index.feature_count

    @property
    def layer_count(self) -> int:
        """Distinct (model, layer) the gallery holds."""
        return sum(len(layers) for layers in self.index.layers.values())

    # --- listing ----------------------------------------------------------------------------------------
    def models(self) -> list[str]:
        return list(self.index.models)

    def model(self, model_id: str | None = None) -> str:
        """`model_id` checked against the gallery; the only (or first) model when not given."""
        models = self.index.models
        if not model_id:
            return models[0]
        if model_id not in self.index.layers:
            raise VizError(f"The gallery {self.label} has no model {model_id}: pick one of {_short_list(models)}.")
        return model_id

    def layers(self, model_id: str | None = None) -> list[int]:
        return list(self.index.layers[self.model(model_id)])

    def objectives(self, model_id: str | None, layer: Any) -> list[str]:
        """Objectives present for a layer, the preferred one ('feature') first."""
        model_id = self.model(model_id)
        names = self.index.objectives[(model_id, self._layer(model_id, layer))]
        return sorted(names, key=lambda n: (n != PREFERRED_OBJECTIVE, n))

    def layer_rows(self, model_id: str | None, layer: Any, objective: str | None = None) -> LayerRows:
        """A layer's rows for one objective (the preferred one by default), sorted by feature, without reading
        them: what a grid pages through and a lookup searches."""
        model_id = self.model(model_id)
        layer = self._layer(model_id, layer)
        objective = self._objective(model_id, layer, objective)
        start, stop = self.index.groups[(model_id, layer, objective)]
        return LayerRows(self, model_id, layer, objective, start, stop)

    def features(self, model_id: str | None, layer: Any, objective: str | None = None) -> list[Entry]:
        """Every row of a layer for one objective, by feature index (views of big layers page through
        `layer_rows` instead)."""
        return self.layer_rows(model_id, layer, objective).entries()

    def entry(self, model_id: str | None, layer: Any, feature: Any, objective: str | None = None) -> Entry:
        rows = self.layer_rows(model_id, layer, objective)
        feature = _whole(feature, "feature")
        at = rows.position(feature)
        if at is None:
            raise VizError(f"The gallery {self.label} has no feature {feature} in layer {rows.layer} of "
                           f"{rows.model_id}: it has {compact_ranges(rows.features)}.")
        return rows.entries(at, at + 1)[0]

    # --- images -----------------------------------------------------------------------------------------
    def thumbnails(self, entries: list[Entry], size: int | None = None) -> list[Image.Image | None]:
        """The visualization of each entry (None where a row has none), shrunk to `size` px as it is decoded:
        one image at full size at most at any time, never a whole page."""
        return [self._image(e, "image", size) for e in entries]

    def feature_page(self, model_id: str | None, layer: Any, feature: Any, objective: str | None = None,
                     max_examples: int | None = MAX_EXAMPLES, image_px: int | None = PAGE_PX) -> FeaturePage:
        """What a feature's page shows; reads this feature's row group(s) only, decodes at most `max_examples`
        top examples (None: all the row holds), each shrunk to `image_px`."""
        main = self.entry(model_id, layer, feature, objective)
        rows = [main, *self._other_objectives(main)]
        rows.sort(key=lambda e: (e is not main, e.objective))
        visualizations = [
            Visualization(e, self._image(e, "image", image_px), self._image(e, "image_patch_map", image_px))
            for e in rows if e.rendered
        ]
        with_examples = next((e for e in rows if e.top_scores), main)
        examples = self._examples(with_examples, max_examples, image_px)
        layer_rows = self.layer_rows(main.model_id, main.layer, main.objective)
        previous, following = layer_rows.neighbours(main.feature)
        params = {"gallery": self.label, "layer": str(main.layer), "feature": str(main.feature)}
        if len(self.index.models) > 1:
            params["model"] = main.model_id
        if main.objective != self.objectives(main.model_id, main.layer)[0]:
            params["objective"] = main.objective
        return FeaturePage(
            source=self.label, model_id=main.model_id, layer=main.layer, feature=main.feature,
            visualizations=visualizations, examples=examples, dataset=with_examples.dataset,
            stats=self._stats(main, with_examples, layer_rows),
            concept_names=list(next((e.concept_names for e in rows if e.concept_names), ()))
            or self.concepts().get((main.model_id, main.layer, main.feature), []),
            previous=previous, next=following, link_params=params,
        )

    def _other_objectives(self, main: Entry) -> list[Entry]:
        """The rows of the same feature for the layer's other objectives."""
        found = []
        for objective in self.index.objectives[(main.model_id, main.layer)]:
            if objective != main.objective:
                rows = self.layer_rows(main.model_id, main.layer, objective)
                at = rows.position(main.feature)
                if at is not None:
                    found += rows.entries(at, at + 1)
        return found

    def _examples(self, entry: Entry, limit: int | None, image_px: int | None) -> list[TopExample]:
        if not entry.top_scores:
            return []
        images = self._images(entry, "top_images", limit, image_px)
        maps = self._images(entry, "patch_maps", limit, image_px)
        return [
            TopExample(rank + 1, _at(entry.top_scores, rank), _at(entry.top_indices, rank), images[rank],
                       maps[rank] if rank < len(maps) else None)
            for rank in range(len(images))
        ]

    @staticmethod
    def _stats(main: Entry, with_examples: Entry, layer_rows: LayerRows) -> dict[str, Any]:
        """Activation statistics: the feature's own numbers and where it stands in its layer."""
        stats: dict[str, Any] = {}
        if main.rendered:
            stats["activation"] = main.activation
            if main.activation_init is not None:
                stats["activation at start"] = main.activation_init
                stats["gain"] = main.activation - main.activation_init
            layer = layer_rows.activations[layer_rows.rendered]
            stats["rank in layer"] = f"{int(np.count_nonzero(layer > main.activation)) + 1} of {len(layer)}"
            stats["layer median activation"] = float(np.median(layer))
        scores = with_examples.top_scores
        if scores:
            stats["top example score"] = max(scores)
            stats["mean top-k score"] = sum(scores) / len(scores)
            stats["lowest top-k score"] = min(scores)
            stats["examples from"] = with_examples.dataset or "?"
        return stats

    def concepts(self) -> dict[tuple[str, int, int], list[str]]:
        """CLIP concept names by (model, layer, feature) from the gallery's clip-names tables (read once per
        gallery revision, at most CONCEPT_BYTES in all; a feature named by several runs keeps the preferred
        run's names)."""
        return self.index.concepts(self.source)

    # --- reading ----------------------------------------------------------------------------------------
    def _entries(self, positions) -> list[Entry]:
        """Full rows at these positions of the index: the key columns from the index, the rest from the row
        groups that hold them."""
        rows = [self.index.keys_at(at) for at in positions]
        by_group: dict[tuple[int, int], list[int]] = {}
        for number, (_, (shard, group, _)) in enumerate(rows):
            by_group.setdefault((shard, group), []).append(number)
        for (shard, group), numbers in by_group.items():
            details = self.index.read(self.source, shard, group, DETAIL_COLUMNS)
            stored = details.take([rows[n][1][2] for n in numbers]).to_pylist()
            for number, values in zip(numbers, stored):
                rows[number][0].update(values)
        return [_entry(values, *where) for values, where in rows]

    def _cell(self, entry: Entry, column: str):
        """The stored value of one cell of `entry`'s row, as an arrow scalar (None when the shard lacks it)."""
        table = self.index.read(self.source, entry.shard, entry.row_group, (column,))
        return table.column(column)[entry.row] if column in table.column_names else None

    def _image(self, entry: Entry, column: str, size: int | None = None) -> Image.Image | None:
        cell = self._cell(entry, column)
        return None if cell is None else decode_image(cell.as_py(), self.label, size)

    def _images(self, entry: Entry, column: str, limit: int | None, size: int | None) -> list[Image.Image]:
        """The first `limit` images of a list cell (only those are converted and decoded), empty ones left out."""
        cell = self._cell(entry, column)
        values = None if cell is None else cell.values
        if values is None:
            return []
        values = values if limit is None else values.slice(0, limit)
        return [image for value in values.to_pylist() if (image := decode_image(value, self.label, size))]

    # --- checks -----------------------------------------------------------------------------------------
    def _layer(self, model_id: str, layer: Any) -> int:
        layer = _whole(layer, "layer")
        if (model_id, layer) not in self.index.objectives:
            layers = self.index.layers[model_id]
            raise VizError(f"The gallery {self.label} has no layer {layer} for {model_id}: "
                           f"pick one of {compact_ranges(layers)}.")
        return layer

    def _objective(self, model_id: str, layer: int, objective: str | None) -> str:
        names = self.objectives(model_id, layer)
        if not objective:
            return names[0]
        if objective not in names:
            raise VizError(f"Layer {layer} of {model_id} in {self.label} has no '{objective}' rows: "
                           f"pick one of {', '.join(names)}.")
        return objective


@dataclass(frozen=True)
class LayerRows:
    """The rows of one layer and objective, sorted by feature: a slice of the gallery's index, so paging, lookups
    and layer statistics build no Entry objects; `entries(start, stop)` reads only the rows a view shows."""

    gallery: Gallery
    model_id: str
    layer: int
    objective: str
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def features(self) -> np.ndarray:
        return self.gallery.index.feature[self.start:self.stop]

    @property
    def activations(self) -> np.ndarray:
        """Activation after optimization (NaN where a row has none: see `rendered`)."""
        return self.gallery.index.activation[self.start:self.stop]

    @property
    def rendered(self) -> np.ndarray:
        return self.gallery.index.rendered[self.start:self.stop]

    def position(self, feature: int) -> int | None:
        """Where `feature` is among the layer's rows (the last of duplicates: a later shard wins), or None."""
        if not -(2**63) <= feature < 2**63:
            return None
        features = self.features
        at = int(np.searchsorted(features, feature, side="right")) - 1
        return at if at >= 0 and features[at] == feature else None

    def neighbours(self, feature: int) -> tuple[int | None, int | None]:
        """The features just before and after `feature` in this layer (None at either end)."""
        features = self.features
        before = int(np.searchsorted(features, feature, side="left"))
        after = int(np.searchsorted(features, feature, side="right"))
        return (int(features[before - 1]) if before > 0 else None,
                int(features[after]) if after < len(features) else None)

    def entries(self, start: int = 0, stop: int | None = None) -> list[Entry]:
        """The full rows from `start` to `stop` (positions in this layer)."""
        stop = len(self) if stop is None else min(stop, len(self))
        return self.gallery._entries(range(self.start + max(start, 0), self.start + stop))

    def find(self, features: list[int]) -> dict[int, Entry]:
        """The rows of those `features` this layer holds, by feature."""
        found = {f: at for f in features if (at := self.position(f)) is not None}
        return dict(zip(found, self.gallery._entries(self.start + at for at in found.values())))


class GalleryIndex:
    """The rows of one gallery revision sorted by (model, layer, objective, feature) into numpy arrays (~45 bytes
    a row, no Python object per row), plus the row groups and concept names read since: built once per revision
    and shared by every Gallery opened on it (GalleryCache).

    Building reads each shard's footer first (refusing a gallery that declares more than `max_rows` rows, or an
    oversized footer, before anything else is read), then only the key columns and the activation."""

    def __init__(self, source: _Source, max_rows: int = MAX_ROWS):
        self.label = source.label
        count = len(source.shards)
        with source.reading(), ThreadPoolExecutor(INDEX_THREADS, thread_name_prefix="vfv-index") as pool:
            self.metadata = list(pool.map(lambda shard: _footer(source, shard), source.shards))
            self.columns = [set(metadata.schema.to_arrow_schema().names) for metadata in self.metadata]
            self.row_count = sum(metadata.num_rows for metadata in self.metadata)
            if self.row_count > max_rows:
                raise VizError(f"The gallery {self.label} declares {self.row_count:,} rows, more than the "
                               f"{max_rows:,} that can be opened at once: open a smaller gallery (split it by "
                               "model or by layers).")
            self._check_index_bytes()
            tables = list(pool.map(lambda number: self._key_columns(source, number), range(count)))
        self._sort(tables)
        self._chunks: OrderedDict[tuple, pa.Table] = OrderedDict()
        self._chunk_bytes = 0
        self._lock = threading.Lock()
        self._concepts: dict | None = None

    # --- building ---------------------------------------------------------------------------------------
    def _check_index_bytes(self) -> None:
        """Refuse, from the footers alone, key columns too big to hold (e.g. megabyte-long model ids)."""
        size = sum(_chunk_bytes(metadata.row_group(g), [c for c in INDEX_COLUMNS if c in columns])
                   for metadata, columns in zip(self.metadata, self.columns) for g in range(metadata.num_row_groups))
        if size > MAX_INDEX_BYTES:
            raise VizError(f"The gallery {self.label} stores {size / 2**20:,.0f} MB of keys (model ids, layers, "
                           f"features), more than the {MAX_INDEX_BYTES // 2**20} MB this browser indexes: open a "
                           "gallery written by vit-feature-viz.")

    def _key_columns(self, source: _Source, number: int) -> pa.Table:
        """A shard's key columns and activation, in fixed types, with where each row is stored."""
        shard, metadata = source.shards[number], self.metadata[number]
        present = [c for c in INDEX_COLUMNS if c in self.columns[number]]
        with _readable_shard(source, shard), source.reading(), source.open(shard) as handle:
            table = pq.ParquetFile(handle, metadata=metadata).read(columns=present)
        if "activation" not in present:
            table = table.append_column("activation", pa.nulls(table.num_rows, pa.float64()))
        try:
            table = table.select(list(INDEX_COLUMNS)).cast(INDEX_SCHEMA)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise VizError(f"{self.label}: {shard} is not a gallery shard (its key columns have other types): "
                           "open a gallery written by vit-feature-viz.") from None
        for name in KEY_COLUMNS:
            if table.column(name).null_count:
                raise VizError(f"{self.label}: {shard} has rows without a {name}: open a gallery written by "
                               "vit-feature-viz.")
        sizes = [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
        groups = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
        firsts = np.repeat(np.cumsum([0, *sizes[:-1]]).astype(np.int32), sizes)
        return table.append_column("shard", pa.array(np.full(table.num_rows, number, np.int32))) \
            .append_column("row_group", pa.array(groups)) \
            .append_column("row", pa.array(np.arange(table.num_rows, dtype=np.int32) - firsts))

    def _sort(self, tables: list[pa.Table]) -> None:
        """One set of arrays for all shards, sorted, and the (model, layer, objective) spans within them."""
        table = pa.concat_tables(tables)
        if not table.num_rows:
            raise VizError(f"The gallery {self.label} has no rows yet: render some features into it first.")
        model, self.model_names = _codes(table.column("model_id"))
        objective, self.objective_names = _codes(table.column("objective"))
        layer = table.column("layer").to_numpy()
        feature = table.column("feature").to_numpy()
        order = np.lexsort((feature, objective, layer, model))
        self.model, self.objective = model[order], objective[order]
        self.layer, self.feature = layer[order], feature[order]
        activation = table.column("activation")
        self.rendered = activation.is_valid().to_numpy(zero_copy_only=False)[order]
        self.activation = activation.fill_null(math.nan).to_numpy()[order]
        self.shard, self.group, self.row = (table.column(c).to_numpy()[order] for c in ("shard", "row_group", "row"))
        changes = np.flatnonzero((np.diff(self.model) != 0) | (np.diff(self.layer) != 0)
                                 | (np.diff(self.objective) != 0))
        starts = [0, *(changes + 1).tolist()]
        stops = [*starts[1:], len(order)]
        self.groups: dict[tuple[str, int, str], tuple[int, int]] = {}
        self.layers: dict[str, list[int]] = {}
        self.objectives: dict[tuple[str, int], list[str]] = {}
        for start, stop in zip(starts, stops):
            model_id, layer_index = self.model_names[self.model[start]], int(self.layer[start])
            self.groups[(model_id, layer_index, self.objective_names[self.objective[start]])] = (start, stop)
            if not self.objectives.setdefault((model_id, layer_index), []):
                self.layers.setdefault(model_id, []).append(layer_index)
            self.objectives[(model_id, layer_index)].append(self.objective_names[self.objective[start]])
        self.models = sorted(self.layers)
        by_feature = np.lexsort((self.feature, self.layer, self.model))
        keys = np.stack([self.model[by_feature], self.layer[by_feature], self.feature[by_feature]])
        self.feature_count = 1 + int(np.count_nonzero(np.any(np.diff(keys, axis=1) != 0, axis=0)))

    @property
    def nbytes(self) -> int:
        """Memory held by the sorted arrays (not the row groups read since): what opening costs per row."""
        return sum(array.nbytes for array in (self.model, self.objective, self.layer, self.feature, self.rendered,
                                               self.activation, self.shard, self.group, self.row))

    # --- reading ----------------------------------------------------------------------------------------
    def keys_at(self, at: int) -> tuple[dict, tuple[int, int, int]]:
        """The indexed values of the row at position `at`, and where it is stored (shard, row group, row)."""
        values = {"model_id": self.model_names[self.model[at]], "layer": int(self.layer[at]),
                  "feature": int(self.feature[at]), "objective": self.objective_names[self.objective[at]],
                  "activation": float(self.activation[at]) if self.rendered[at] else None}
        return values, (int(self.shard[at]), int(self.group[at]), int(self.row[at]))

    def read(self, source: _Source, shard: int, group: int, columns: tuple[str, ...]) -> pa.Table:
        """Some columns of one row group (those the shard has), from a small LRU cache bounded by bytes; a row
        group bigger than MAX_CHUNK_BYTES is refused from its metadata before it is read."""
        key = (shard, group, columns)
        with self._lock:
            if key in self._chunks:
                self._chunks.move_to_end(key)
                return self._chunks[key]
        metadata = self.metadata[shard]
        present = [c for c in columns if c in self.columns[shard]]
        size = _chunk_bytes(metadata.row_group(group), present)
        if size > MAX_CHUNK_BYTES:
            raise VizError(f"The gallery {self.label} stores {size / 2**20:,.0f} MB in one row group of "
                           f"{source.shards[shard]}, more than this browser reads at once: open a gallery written "
                           "by vit-feature-viz.")
        name = source.shards[shard]
        with _readable_shard(source, name), source.reading(), source.open(name) as handle:
            table = pq.ParquetFile(handle, metadata=metadata).read_row_group(group, columns=present)
        with self._lock:
            if key not in self._chunks:
                self._chunks[key] = table
                self._chunk_bytes += table.nbytes
            while self._chunk_bytes > CACHE_BYTES and len(self._chunks) > 1:
                _, dropped = self._chunks.popitem(last=False)
                self._chunk_bytes -= dropped.nbytes
        return table

    def concepts(self, source: _Source) -> dict[tuple[str, int, int], list[str]]:
        """CLIP concept names from the clip-names tables, the preferred first, reading at most CONCEPT_BYTES of
        them in all (a bigger table is read up to its last whole line within that budget)."""
        with self._lock:
            if self._concepts is not None:
                return self._concepts
        found: dict[tuple[str, int, int], list[tuple[int, str]]] = {}
        budget = CONCEPT_BYTES
        with source.reading():
            for table in source.concept_tables:
                if budget <= 0:
                    break
                with source.open(table) as handle:
                    text = handle.read(budget + 1)
                budget -= len(text)
                if len(text) > CONCEPT_BYTES or budget < 0:
                    text = text[:text.rfind(b"\n") + 1]  # the last line may be cut: leave it
                for key, names in _concept_rows(text).items():
                    found.setdefault(key, names)
        concepts = {key: [name for _, name in sorted(names)] for key, names in found.items()}
        with self._lock:
            self._concepts = concepts
        return concepts


# ------------------------------------------------------------------------------------------------ caching


class GalleryCache:
    """Gallery indexes shared by every caller (all of the app's visitors): one per gallery revision (a Hub
    commit, or a folder's shards with their sizes and times), built once even when several callers open the same
    gallery at the same moment, at most `max_size` kept, each refusing galleries of more than `max_rows` rows.

    `get` still lists the gallery with the caller's own access every time (one Hub request), so a shared index is
    only used for someone who can read that revision, and a new push is seen at once."""

    def __init__(self, max_size: int = 4, max_rows: int = MAX_ROWS):
        self.max_size, self.max_rows = max_size, max_rows
        self._indexes: OrderedDict[tuple, GalleryIndex] = OrderedDict()
        self._building: dict[tuple, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, source: Any, *, allow_local: bool = True, token: str | bool | None = None,
            revision: str | None = None) -> Gallery:
        return open_gallery(source, revision=revision, token=token, allow_local=allow_local, max_rows=self.max_rows,
                            indexes=self)

    def index(self, source: _Source) -> GalleryIndex:
        """The index of `source`'s revision: the shared one, or built now (once, whoever else waits for it)."""
        key = source.key
        with self._lock:
            if key in self._indexes:
                self._indexes.move_to_end(key)
                return self._indexes[key]
            building = self._building.setdefault(key, threading.Lock())
        with building:
            with self._lock:
                if key in self._indexes:
                    return self._indexes[key]
            try:
                index = GalleryIndex(source, self.max_rows)
                with self._lock:
                    self._indexes[key] = index
                    while len(self._indexes) > self.max_size:
                        self._indexes.popitem(last=False)
            finally:
                with self._lock:
                    self._building.pop(key, None)
        return index


# ------------------------------------------------------------------------------------------------ deep links


@dataclass(frozen=True)
class DeepLink:
    """What a URL asks to show: a gallery, and optionally a model, layer, feature and objective in it; or, without a
    gallery, a model (and layer and feature) to render and explore."""

    gallery: str | None
    model: str | None = None
    layer: int | None = None
    feature: int | None = None
    objective: str | None = None


LINK_KEYS = ("gallery", "model", "layer", "feature", "objective")


def deep_link(base_url: str, **params: Any) -> str:
    """`base_url` with the page's query parameters (in a fixed order, empty ones left out)."""
    query = urlencode([(k, str(params[k])) for k in LINK_KEYS if params.get(k) not in (None, "")], safe="/")
    return f"{base_url.split('?')[0]}?{query}"


def parse_deep_link(params: Mapping[str, Any]) -> DeepLink | None:
    """The request a page's query parameters make, or None when they name neither a gallery nor a model (a link
    without a gallery names a model to render and explore); bad numbers, and numbers no gallery column can hold
    (they would overflow the page's number boxes), are a VizError."""
    gallery = normalize_source(params.get("gallery"))
    model = str(params.get("model") or "").strip() or None
    if not gallery and not model:
        return None
    layer, feature = params.get("layer"), params.get("feature")
    return DeepLink(
        gallery=gallery or None,
        model=model,
        layer=None if layer in (None, "") else _whole(layer, "layer", minimum=0, maximum=MAX_INDEX),
        feature=None if feature in (None, "") else _whole(feature, "feature", minimum=0, maximum=MAX_INDEX),
        objective=str(params.get("objective") or "").strip() or None,
    )


# ------------------------------------------------------------------------------------------------ helpers


def _entry(values: dict, shard: int, group: int, row: int) -> Entry:
    return Entry(
        model_id=str(values["model_id"]), layer=int(values["layer"]), feature=int(values["feature"]),
        objective=str(values["objective"]), recipe=values.get("recipe"), steps=values.get("steps"),
        seed=values.get("seed"), image_size=values.get("image_size"), activation=values.get("activation"),
        activation_init=values.get("activation_init"), dataset=values.get("dataset"),
        top_scores=tuple(values.get("top_scores") or ()), top_indices=tuple(values.get("top_indices") or ()),
        concept_names=tuple(str(n) for n in values.get("concept_names") or ()),
        shard=shard, row_group=group, row=row,
    )


def decode_image(value: Any, label: str, size: int | None = None) -> Image.Image | None:
    """A stored image ({'bytes': ...}) decoded within a pixel budget, shrunk to `size` px (if given) as it is
    decoded; None for an empty cell.

    The size in the header is checked against MAX_IMAGE_PIXELS before any pixel is decoded (whatever PIL's global
    Image.MAX_IMAGE_PIXELS says), a JPEG is decoded at a reduced scale (`draft`), and only PNG, JPEG and WebP
    decoders are tried: a decompression bomb in a gallery costs one line of error, not gigabytes."""
    data = value.get("bytes") if isinstance(value, dict) else value
    if not data:
        return None
    too_large = (f"The gallery {label} holds an image larger than {MAX_IMAGE_PIXELS // 2**20} megapixels, more "
                 "than this browser decodes: push it again with images of the size they were rendered at.")
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise VizError(too_large.replace("an image larger than", f"a {image.width}x{image.height} image, "
                                                 "larger than"))
            if size:
                image.draft("RGB", (size, size))
                image.thumbnail((size, size))  # loads (a JPEG at its reduced scale), then shrinks
            image.load()
            return image.copy()
    except Image.DecompressionBombError:
        raise VizError(too_large) from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise VizError(f"The gallery {label} holds an image that cannot be decoded: push it again.") from None


def _whole(value: Any, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    return whole_number(value, f"the {name}", minimum=minimum, maximum=maximum)


def _footer(source: _Source, shard: str) -> pq.FileMetaData:
    """A shard's parquet footer, its size checked before it is parsed, and its columns checked to be a gallery's."""
    with source.reading(), source.open(shard) as handle:
        size = handle.seek(0, io.SEEK_END)
        if size >= 12:
            handle.seek(size - 8)
            tail = handle.read(8)
        if size < 12 or tail[4:] != b"PAR1":
            raise VizError(f"The gallery {source.label} holds {shard}, which is not a readable parquet file (no "
                           f"parquet footer): {source.repair}.")
        footer = int.from_bytes(tail[:4], "little")
        if footer > MAX_FOOTER_BYTES:
            raise VizError(f"{source.label}: {shard} has a {footer / 2**20:,.0f} MB parquet footer, more than "
                           "this browser reads: open a gallery written by vit-feature-viz.")
        handle.seek(0)
        with _readable_shard(source, shard):
            metadata = pq.ParquetFile(handle).metadata
    names = metadata.schema.to_arrow_schema().names
    missing = [c for c in (*KEY_COLUMNS, "image") if c not in names]
    if missing:
        raise VizError(f"{source.label}: {shard} is not a gallery shard (no {missing[0]} column): "
                       "open a gallery written by vit-feature-viz.")
    return metadata


def _chunk_bytes(row_group: pq.RowGroupMetaData, columns: list[str]) -> int:
    """Uncompressed bytes of these columns in one row group, from the footer alone."""
    return sum(row_group.column(i).total_uncompressed_size for i in range(row_group.num_columns)
               if row_group.column(i).path_in_schema.split(".")[0] in columns)


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """A string column as small integer codes numbering its distinct values in sorted order, and those values."""
    encoded = pc.dictionary_encode(column.combine_chunks())
    names = encoded.dictionary.to_pylist()
    rank = np.empty(len(names), dtype=np.int32)
    rank[sorted(range(len(names)), key=names.__getitem__)] = np.arange(len(names), dtype=np.int32)
    return rank[encoded.indices.to_numpy(zero_copy_only=False)], sorted(names)


def _concept_rows(text: bytes) -> dict[tuple[str, int, int], list[tuple[int, str]]]:
    """(rank, name) pairs by (model, layer, feature) from one clip-names CSV; rows of another shape are skipped,
    and a table that is not CSV at all gives nothing."""
    named: dict[tuple[str, int, int], list[tuple[int, str]]] = {}
    try:
        for row in csv.DictReader(io.StringIO(text.decode("utf-8", errors="replace"), newline="")):
            try:
                key = (row["model_id"], int(row["layer"]), int(row["feature"]))
                named.setdefault(key, []).append((int(row["rank"]), row["name"]))
            except (KeyError, TypeError, ValueError):
                continue  # a table of another shape: not ours to read
    except csv.Error:
        pass  # e.g. a field longer than csv's limit: what was read so far stays
    return named


def _file_versions(folder: Path, names: list[str]) -> tuple:
    """(name, size, mtime) of each file: a folder gallery's revision, for sharing its index."""
    return tuple((name, (stat := (folder / name).stat()).st_size, stat.st_mtime_ns) for name in names)


def _at(values: tuple, index: int):
    return values[index] if index < len(values) else None


def _short_list(values: list, limit: int = 5) -> str:
    shown = ", ".join(map(str, values[:limit]))
    return shown + (f" (and {len(values) - limit} more)" if len(values) > limit else "")


def compact_ranges(numbers, limit: int = 12) -> str:
    """0-3, 7, 9-12: a compact list of the indices a gallery holds (sorted), its first `limit` runs at most."""
    numbers = np.asarray(numbers, dtype=np.int64)
    if not len(numbers):
        return "none"
    breaks = np.flatnonzero(np.diff(numbers) > 1)
    starts, stops = numbers[np.r_[0, breaks + 1]], numbers[np.r_[breaks, len(numbers) - 1]]
    spans = [str(a) if a == b else f"{a}-{b}" for a, b in zip(starts[:limit].tolist(), stops[:limit].tolist())]
    more = f" and {len(starts) - limit} more runs" if len(starts) > limit else ""
    return ", ".join(spans) + more
