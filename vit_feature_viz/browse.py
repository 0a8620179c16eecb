"""Browse a gallery someone already computed: a local gallery folder or a Hub dataset id, opened in seconds.

Galleries are parquet shards whose rows hold images (the visualization, its patch map, the top dataset examples
and theirs) next to a few numbers. Browsing must not wait for gigabytes of images, so this module reads parquet
by parts: opening a gallery reads only the shards' footers and the cheap columns (keys, activations, scores);
a view then reads only the image column it shows, for the row groups that hold its rows, and decodes images
only when asked. On the Hub the same reads go through `HfFileSystem` as HTTP range requests at one pinned
commit, so a gallery that changes meanwhile never mixes two versions.

    gallery = open_gallery("org/vit-b16-gallery")          # or a folder written by vit-feature-viz
    gallery.models(); gallery.layers(model); gallery.features(model, 5)
    page = gallery.feature_page(model, 5, 812)               # visualizations, examples, stats, neighbours

No Gradio here: the app's "Explore galleries" tab and any notebook use the same calls.
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from statistics import median
from typing import Any
from urllib.parse import urlencode

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from .errors import VizError
from .gallery import ANALYSIS_DIR, KEY_COLUMNS, first_error_line
from .specs import whole_number

# Cheap columns read when a gallery opens; `concept_names` (CLIP concept labels) is optional and shown if present.
INDEX_COLUMNS = (*KEY_COLUMNS, "recipe", "steps", "seed", "image_size", "activation", "activation_init",
                 "dataset", "top_scores", "top_indices")
OPTIONAL_INDEX_COLUMNS = ("concept_names",)
IMAGE_COLUMNS = ("image", "image_patch_map", "top_images", "patch_maps")
PREFERRED_OBJECTIVE = "feature"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HUB_URL = re.compile(r"^(?:https?://[^/]+/)?datasets/")  # https://huggingface.co/datasets/org/name -> org/name
EXAMPLE_ID = "org/name"
CACHE_BYTES = 128 * 2**20  # image column chunks kept in memory per gallery (neighbours often share a row group)
INDEX_THREADS = 8
# CLIP concept names written by `vit-feature-viz analyze clip-names` (vit_feature_viz.analysis.clip_names), kept
# in the gallery next to its shards: model_id, layer, feature, rank, name columns
CONCEPTS_DIR = f"{ANALYSIS_DIR}/clip_names"
READ_BLOCK = 256 * 2**10  # bytes; HTTP range reads of a Hub shard


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
    shards: list[str]
    concept_tables: list[str]  # CSVs under CONCEPTS_DIR, the preferred (newest) first

    def open(self, shard: str):
        raise NotImplementedError

    def reading(self):
        """A context turning this source's I/O failures into VizErrors."""
        return contextlib.nullcontext()


class _FolderSource(_Source):
    def __init__(self, path: Path):
        from .gallery import GalleryFolder

        self.label = str(path)
        self.path = path
        self.shards = [p.relative_to(path).as_posix() for p in GalleryFolder(path)._require_shards()]
        tables = sorted((path / CONCEPTS_DIR).glob("*.csv"), key=lambda p: p.stat().st_mtime, reverse=True)
        self.concept_tables = [p.relative_to(path).as_posix() for p in tables]

    def open(self, shard: str):
        return open(self.path / shard, "rb")


class _HubSource(_Source):
    repair = "push the gallery again, or open an earlier revision"

    def __init__(self, repo_id: str, revision: str | None, token: str | None):
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


def open_gallery(source: Any, *, revision: str | None = None, token: str | None = None,
                 allow_local: bool = True) -> Gallery:
    """Open a gallery folder or a Hub dataset repo (`org/name` or its URL) for browsing.

    With `allow_local=False` (a public Space) only Hub ids are accepted, never paths on the server.
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
        return Gallery(_FolderSource(path))
    if not HUB_ID.match(source):
        if looks_like_path(source):
            raise VizError(f"'{source}' is a local path: here enter a Hub dataset id such as {EXAMPLE_ID}.")
        raise VizError(f"'{source}' is not a Hub dataset id: use namespace/name, e.g. {EXAMPLE_ID}"
                       + (", or the path of a gallery folder." if allow_local else "."))
    return Gallery(_HubSource(source, revision, token))


# ------------------------------------------------------------------------------------------------ gallery


class Gallery:
    """An opened gallery: an index of its rows (no pixels), and image reads on demand."""

    def __init__(self, source: _Source):
        self.source = source
        self._cache: OrderedDict[tuple, Any] = OrderedDict()
        self._cache_bytes = 0
        self._lock = threading.Lock()
        self._concepts: dict | None = None
        self.entries = self._read_index()
        self._by_key = {(e.model_id, e.layer, e.feature, e.objective): e for e in self.entries}

    def __repr__(self) -> str:
        return f"Gallery({self.source.label!r}, {len(self.entries)} rows)"

    @property
    def label(self) -> str:
        return self.source.label

    # --- listing ----------------------------------------------------------------------------------------
    def models(self) -> list[str]:
        return sorted({e.model_id for e in self.entries})

    def model(self, model_id: str | None = None) -> str:
        """`model_id` checked against the gallery; the only (or first) model when not given."""
        models = self.models()
        if not model_id:
            return models[0]
        if model_id not in models:
            raise VizError(f"The gallery {self.label} has no model {model_id}: pick one of {_short_list(models)}.")
        return model_id

    def layers(self, model_id: str | None = None) -> list[int]:
        model_id = self.model(model_id)
        return sorted({e.layer for e in self.entries if e.model_id == model_id})

    def objectives(self, model_id: str | None, layer: Any) -> list[str]:
        """Objectives present for a layer, the preferred one ('feature') first."""
        model_id, layer = self.model(model_id), self._layer(model_id, layer)
        names = {e.objective for e in self.entries if e.model_id == model_id and e.layer == layer}
        return sorted(names, key=lambda n: (n != PREFERRED_OBJECTIVE, n))

    def features(self, model_id: str | None, layer: Any, objective: str | None = None) -> list[Entry]:
        """The layer's rows for one objective (the preferred one by default), by feature index."""
        model_id = self.model(model_id)
        layer = self._layer(model_id, layer)
        objective = self._objective(model_id, layer, objective)
        return sorted((e for e in self.entries if (e.model_id, e.layer, e.objective) == (model_id, layer, objective)),
                      key=lambda e: e.feature)

    def entry(self, model_id: str | None, layer: Any, feature: Any, objective: str | None = None) -> Entry:
        model_id = self.model(model_id)
        layer = self._layer(model_id, layer)
        objective = self._objective(model_id, layer, objective)
        feature = _whole(feature, "feature")
        found = self._by_key.get((model_id, layer, feature, objective))
        if found is None:
            present = [e.feature for e in self.features(model_id, layer, objective)]
            raise VizError(f"The gallery {self.label} has no feature {feature} in layer {layer} of {model_id}: "
                           f"it has {compact_ranges(present)}.")
        return found

    # --- images -----------------------------------------------------------------------------------------
    def thumbnails(self, entries: list[Entry], size: int | None = None) -> list[Image.Image | None]:
        """The visualization of each entry (None where a row has none), shrunk to `size` px if larger."""
        images = [self._image(e, "image") for e in entries]
        if size:
            for image in images:
                if image is not None:
                    image.thumbnail((size, size))
        return images

    def feature_page(self, model_id: str | None, layer: Any, feature: Any, objective: str | None = None,
                     max_examples: int | None = None) -> FeaturePage:
        """What a feature's page shows; reads the image columns of this feature's row group(s) only."""
        main = self.entry(model_id, layer, feature, objective)
        same = (main.model_id, main.layer, main.feature)
        rows = [e for e in self.entries if (e.model_id, e.layer, e.feature) == same]
        rows.sort(key=lambda e: (e is not main, e.objective))
        visualizations = [
            Visualization(e, self._image(e, "image"), self._image(e, "image_patch_map"))
            for e in rows if e.rendered
        ]
        with_examples = next((e for e in rows if e.top_scores), main)
        examples = self._examples(with_examples, max_examples)
        neighbours = [e.feature for e in self.features(main.model_id, main.layer, main.objective)]
        at = neighbours.index(main.feature)
        params = {"gallery": self.label, "layer": str(main.layer), "feature": str(main.feature)}
        if len(self.models()) > 1:
            params["model"] = main.model_id
        if main.objective != self.objectives(main.model_id, main.layer)[0]:
            params["objective"] = main.objective
        return FeaturePage(
            source=self.label, model_id=main.model_id, layer=main.layer, feature=main.feature,
            visualizations=visualizations, examples=examples, dataset=with_examples.dataset,
            stats=self._stats(main, with_examples),
            concept_names=list(next((e.concept_names for e in rows if e.concept_names), ()))
            or self.concepts().get((main.model_id, main.layer, main.feature), []),
            previous=neighbours[at - 1] if at > 0 else None,
            next=neighbours[at + 1] if at + 1 < len(neighbours) else None,
            link_params=params,
        )

    def _examples(self, entry: Entry, limit: int | None) -> list[TopExample]:
        if not entry.top_scores:
            return []
        images = self._images(entry, "top_images")
        maps = self._images(entry, "patch_maps")
        count = len(images) if limit is None else min(limit, len(images))
        return [
            TopExample(rank + 1, _at(entry.top_scores, rank), _at(entry.top_indices, rank), images[rank],
                       maps[rank] if rank < len(maps) else None)
            for rank in range(count)
        ]

    def _stats(self, main: Entry, with_examples: Entry) -> dict[str, Any]:
        """Activation statistics: the feature's own numbers and where it stands in its layer."""
        stats: dict[str, Any] = {}
        if main.rendered:
            stats["activation"] = main.activation
            if main.activation_init is not None:
                stats["activation at start"] = main.activation_init
                stats["gain"] = main.activation - main.activation_init
            layer = sorted((e.activation for e in self.features(main.model_id, main.layer, main.objective)
                            if e.rendered), reverse=True)
            stats["rank in layer"] = f"{layer.index(main.activation) + 1} of {len(layer)}"
            stats["layer median activation"] = median(layer)
        scores = with_examples.top_scores
        if scores:
            stats["top example score"] = max(scores)
            stats["mean top-k score"] = sum(scores) / len(scores)
            stats["lowest top-k score"] = min(scores)
            stats["examples from"] = with_examples.dataset or "?"
        return stats

    def concepts(self) -> dict[tuple[str, int, int], list[str]]:
        """CLIP concept names by (model, layer, feature) from the gallery's clip-names tables (read once; a
        feature named by several runs keeps the preferred run's names)."""
        with self._lock:
            if self._concepts is not None:
                return self._concepts
        found: dict[tuple[str, int, int], list[tuple[int, str]]] = {}
        with self.source.reading():
            for table in self.source.concept_tables:
                with self.source.open(table) as handle:
                    rows = list(csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8", newline="")))
                named: dict[tuple[str, int, int], list[tuple[int, str]]] = {}
                for row in rows:
                    try:
                        key = (row["model_id"], int(row["layer"]), int(row["feature"]))
                        named.setdefault(key, []).append((int(row["rank"]), row["name"]))
                    except (KeyError, TypeError, ValueError):
                        continue  # a table of another shape: not ours to read
                for key, names in named.items():
                    found.setdefault(key, names)
        concepts = {key: [name for _, name in sorted(names)] for key, names in found.items()}
        with self._lock:
            self._concepts = concepts
        return concepts

    # --- reading ----------------------------------------------------------------------------------------
    def _read_index(self) -> list[Entry]:
        """The cheap columns of every shard; shards are read in parallel (a gallery written batch by batch has
        hundreds of small shards, and on the Hub each costs a few round trips)."""
        with self.source.reading(), ThreadPoolExecutor(INDEX_THREADS, thread_name_prefix="vfv-index") as pool:
            shards = list(pool.map(self._index_shard, range(len(self.source.shards))))
        self._metadata = [metadata for metadata, _ in shards]
        entries = [entry for _, found in shards for entry in found]
        if not entries:
            raise VizError(f"The gallery {self.label} has no rows yet: render some features into it first.")
        return entries

    def _index_shard(self, number: int) -> tuple[Any, list[Entry]]:
        shard = self.source.shards[number]
        with _readable_shard(self.source, shard), self.source.reading(), self.source.open(shard) as handle:
            parquet = pq.ParquetFile(handle)
            names = set(parquet.schema_arrow.names)
            missing = [c for c in (*KEY_COLUMNS, "image") if c not in names]
            if missing:
                raise VizError(f"{self.label}: {shard} is not a gallery shard (no {missing[0]} column): "
                               "open a gallery written by vit-feature-viz.")
            columns = [c for c in (*INDEX_COLUMNS, *OPTIONAL_INDEX_COLUMNS) if c in names]
            found = [_entry(values, number, group, row)
                     for group in range(parquet.num_row_groups)
                     for row, values in enumerate(parquet.read_row_group(group, columns=columns).to_pylist())]
            return parquet.metadata, found

    def _column(self, shard: int, group: int, column: str):
        """One column chunk as an arrow array, from a small LRU cache bounded by bytes."""
        key = (shard, group, column)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        with _readable_shard(self.source, self.source.shards[shard]), self.source.reading(), \
                self.source.open(self.source.shards[shard]) as handle:
            parquet = pq.ParquetFile(handle, metadata=self._metadata[shard])
            if column not in parquet.schema_arrow.names:
                array = None
            else:
                array = parquet.read_row_group(group, columns=[column]).column(0).combine_chunks()
        with self._lock:
            self._cache[key] = array
            self._cache_bytes += array.nbytes if array is not None else 0
            while self._cache_bytes > CACHE_BYTES and len(self._cache) > 1:
                _, dropped = self._cache.popitem(last=False)
                self._cache_bytes -= dropped.nbytes if dropped is not None else 0
        return array

    def _stored(self, entry: Entry, column: str):
        array = self._column(entry.shard, entry.row_group, column)
        return None if array is None else array[entry.row].as_py()

    def _image(self, entry: Entry, column: str) -> Image.Image | None:
        return _decode(self._stored(entry, column), self.label)

    def _images(self, entry: Entry, column: str) -> list[Image.Image]:
        return [image for value in self._stored(entry, column) or [] if (image := _decode(value, self.label))]

    # --- checks -----------------------------------------------------------------------------------------
    def _layer(self, model_id: str, layer: Any) -> int:
        layer = _whole(layer, "layer")
        layers = sorted({e.layer for e in self.entries if e.model_id == model_id})
        if layer not in layers:
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


# ------------------------------------------------------------------------------------------------ caching


class GalleryCache:
    """Opened galleries by source, reused for `ttl_s` (a page's clicks then cost no re-indexing), at most
    `max_size` at once; a Hub gallery re-opened after the TTL picks up new pushes."""

    def __init__(self, max_size: int = 4, ttl_s: float = 600):
        self.max_size, self.ttl_s = max_size, ttl_s
        self._items: OrderedDict[tuple, tuple[float, Gallery]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, source: Any, *, allow_local: bool = True, opener: Callable[..., Gallery] = open_gallery) -> Gallery:
        key = (normalize_source(source), allow_local)
        with self._lock:
            hit = self._items.get(key)
            if hit and time.monotonic() - hit[0] < self.ttl_s:
                self._items.move_to_end(key)
                return hit[1]
        gallery = opener(source, allow_local=allow_local)
        with self._lock:
            self._items[key] = (time.monotonic(), gallery)
            self._items.move_to_end(key)
            while len(self._items) > self.max_size:
                self._items.popitem(last=False)
        return gallery


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
    without a gallery names a model to render and explore); bad numbers are a VizError."""
    gallery = normalize_source(params.get("gallery"))
    model = str(params.get("model") or "").strip() or None
    if not gallery and not model:
        return None
    layer, feature = params.get("layer"), params.get("feature")
    return DeepLink(
        gallery=gallery or None,
        model=model,
        layer=None if layer in (None, "") else _whole(layer, "layer", minimum=0),
        feature=None if feature in (None, "") else _whole(feature, "feature", minimum=0),
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


def _decode(value: Any, label: str) -> Image.Image | None:
    """A stored image ({'bytes': ...}) as a loaded PIL image; None for an empty cell."""
    data = value.get("bytes") if isinstance(value, dict) else value
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.copy()
    except (UnidentifiedImageError, OSError):
        raise VizError(f"The gallery {label} holds an image that cannot be decoded: push it again.") from None


def _whole(value: Any, name: str, minimum: int | None = None) -> int:
    return whole_number(value, f"the {name}", minimum=minimum)


def _at(values: tuple, index: int):
    return values[index] if index < len(values) else None


def _short_list(values: list, limit: int = 5) -> str:
    shown = ", ".join(map(str, values[:limit]))
    return shown + (f" (and {len(values) - limit} more)" if len(values) > limit else "")


def compact_ranges(numbers: list[int]) -> str:
    """0-3, 7, 9-12: a compact list of the indices a gallery holds."""
    if not numbers:
        return "none"
    spans, start = [], numbers[0]
    for previous, current in zip(numbers, numbers[1:] + [None]):
        if current is None or current != previous + 1:
            spans.append(str(start) if start == previous else f"{start}-{previous}")
            start = current
    return ", ".join(spans)
