"""Browse a gallery someone already computed: `open_gallery` on a folder or a Hub id, then its models, layers,
features and a feature's page (visualizations, top examples, statistics, concept names, neighbours).

    gallery = open_gallery("org/vit-b16-gallery")          # or a folder written by vit-feature-viz
    gallery.models(); gallery.layers(model); gallery.features(model, 5)
    page = gallery.feature_page(model, 5, 812)               # visualizations, examples, stats, neighbours

Rows come from the gallery's sorted index (index.py); a page reads only the columns it shows, for the row groups
that hold its rows, and decodes images within a pixel budget (encoding.decode_image). No Gradio here: the app's
"Explore galleries" tab and any notebook use the same calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import VizError
from ..lru import LRUCache
from ..specs import HUB_ID, looks_like_path, whole_number
from .builtin import builtin_gallery_path
from .encoding import decode_image
from .index import MAX_ROWS, GalleryIndex
from .records import Entry, FeaturePage, TopExample, Visualization, entry_of
from .sources import FolderSource, HubSource, Source, normalize_source

DETAIL_COLUMNS = ("recipe", "steps", "seed", "image_size", "activation_init", "dataset", "top_scores",
                  "top_indices", "concept_names")  # `concept_names` (CLIP concept labels) is optional
PREFERRED_OBJECTIVE = "feature"
EXAMPLE_ID = "org/name"
PAGE_PX = 1024  # images of a feature page are shrunk to this side at most
MAX_EXAMPLES = 32  # top dataset examples shown per feature, however many a row holds
MAX_INDEX = 2**31 - 1  # a layer or feature index: the gallery's columns are int32
MAX_PLOTS = 12  # experiment plots shown per gallery
MAX_PLOT_BYTES = 8 * 2**20  # a larger plot file is skipped unread


def open_gallery(source: Any, *, revision: str | None = None, token: str | bool | None = None,
                 allow_local: bool = True, max_rows: int = MAX_ROWS, indexes: GalleryCache | None = None) -> Gallery:
    """Open a gallery folder or a Hub dataset repo (`org/name` or its URL) for browsing; `BUILTIN_GALLERY`
    (vit-feature-viz/shapes-gallery) is the gallery shipped in the package, opened read only with no network.

    With `allow_local=False` (a public Space) only Hub ids are accepted, never paths on the server. A gallery
    declaring more than `max_rows` rows is refused from its shards' footers; `indexes` (a GalleryCache) shares one
    index per gallery revision with everyone else who opens it through the same cache.
    `token`: None reads with the local user's own login, False anonymously, else with that token (every later
    read too).
    """
    source = normalize_source(source)
    if (shipped := builtin_gallery_path(source)) is not None:  # package data: opens anywhere, read only
        return Gallery(FolderSource(shipped, label=source), max_rows=max_rows, indexes=indexes)
    if not source:
        raise VizError(f"No gallery given: enter a Hub dataset id such as {EXAMPLE_ID}"
                       + (" or a gallery folder." if allow_local else "."))
    if allow_local and looks_like_path(source):
        path = Path(source).expanduser()
        if not path.is_dir():
            raise VizError(f"Gallery folder {path} does not exist: check the path, or enter a Hub dataset id "
                           f"such as {EXAMPLE_ID}.")
        return Gallery(FolderSource(path), max_rows=max_rows, indexes=indexes)
    if not HUB_ID.match(source):
        if looks_like_path(source):
            raise VizError(f"'{source}' is a local path: here enter a Hub dataset id such as {EXAMPLE_ID}.")
        raise VizError(f"'{source}' is not a Hub dataset id: use namespace/name, e.g. {EXAMPLE_ID}"
                       + (", or the path of a gallery folder." if allow_local else "."))
    return Gallery(HubSource(source, revision, token), max_rows=max_rows, indexes=indexes)


class Gallery:
    """An opened gallery: a sorted index of its rows (no pixels, see GalleryIndex), and reads of the rest on
    demand through `source` (the caller's own access to the gallery)."""

    def __init__(self, source: Source, *, max_rows: int = MAX_ROWS, indexes: GalleryCache | None = None):
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
        return self._objectives_of(model_id, self._layer(model_id, layer))

    def key(self, model_id: str | None, layer: Any, objective: str | None = None) -> LayerKey:
        """(model, layer, objective) checked against the gallery once (defaults filled in): the calls that take
        a key trust it, so a page resolves its layer once however many reads it makes."""
        model_id = self.model(model_id)
        layer = self._layer(model_id, layer)
        return LayerKey(model_id, layer, self._objective(model_id, layer, objective))

    def layer_rows(self, model_id: str | None, layer: Any, objective: str | None = None) -> LayerRows:
        """A layer's rows for one objective (the preferred one by default), sorted by feature, without reading
        them: what a grid pages through and a lookup searches."""
        return self.rows_at(self.key(model_id, layer, objective))

    def rows_at(self, key: LayerKey) -> LayerRows:
        """The rows of a resolved key (see `layer_rows`)."""
        start, stop = self.index.groups[(key.model_id, key.layer, key.objective)]
        return LayerRows(self, key.model_id, key.layer, key.objective, start, stop)

    def features(self, model_id: str | None, layer: Any, objective: str | None = None) -> list[Entry]:
        """Every row of a layer for one objective, by feature index (views of big layers page through
        `layer_rows` instead)."""
        return self.layer_rows(model_id, layer, objective).entries()

    def entry(self, model_id: str | None, layer: Any, feature: Any, objective: str | None = None) -> Entry:
        return self.entry_in(self.layer_rows(model_id, layer, objective), feature)

    def entry_in(self, rows: LayerRows, feature: Any) -> Entry:
        """The row of `feature` among a layer's rows, or a one-line error naming the features it has."""
        feature = whole(feature, "feature")
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
        return self.page_at(self.key(model_id, layer, objective), feature, max_examples, image_px)

    def page_at(self, key: LayerKey, feature: Any, max_examples: int | None = MAX_EXAMPLES,
                image_px: int | None = PAGE_PX) -> FeaturePage:
        """The page of `feature` under a resolved key (see `feature_page`), for a caller that resolved it already."""
        layer_rows = self.rows_at(key)
        main = self.entry_in(layer_rows, feature)
        rows = [main, *self._other_objectives(key, main.feature)]
        rows.sort(key=lambda e: (e is not main, e.objective))
        visualizations = [
            Visualization(e, self._image(e, "image", image_px), self._image(e, "image_patch_map", image_px))
            for e in rows if e.rendered
        ]
        with_examples = next((e for e in rows if e.top_scores), main)
        examples = self._examples(with_examples, max_examples, image_px)
        previous, following = layer_rows.neighbours(main.feature)
        params = {"gallery": self.label, "layer": str(main.layer), "feature": str(main.feature)}
        if len(self.index.models) > 1:
            params["model"] = main.model_id
        if main.objective != self._objectives_of(key.model_id, key.layer)[0]:
            params["objective"] = main.objective
        return FeaturePage(
            source=self.label, model_id=main.model_id, layer=main.layer, feature=main.feature,
            visualizations=visualizations, examples=examples, dataset=with_examples.dataset,
            stats=self._stats(main, with_examples, layer_rows),
            concept_names=list(next((e.concept_names for e in rows if e.concept_names), ()))
            or self.concepts().get((main.model_id, main.layer, main.feature), []),
            previous=previous, next=following, link_params=params,
        )

    def _other_objectives(self, key: LayerKey, feature: int) -> list[Entry]:
        """The rows of the same feature for the layer's other objectives (names from the index: no checks)."""
        found = []
        for objective in self.index.objectives[(key.model_id, key.layer)]:
            if objective != key.objective:
                rows = self.rows_at(LayerKey(key.model_id, key.layer, objective))
                at = rows.position(feature)
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
            made_with = Visualization(main, None, None).made_with
            if made_with:
                stats["made with"] = made_with
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
        return [entry_of(values, *where) for values, where in rows]

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

    def analysis_plots(self, limit: int = MAX_PLOTS, size: int | None = PAGE_PX) -> list[tuple[Image.Image, str]]:
        """The plots of the paper's experiments kept in the gallery (analysis/<experiment>/<run>.png) with their
        experiment's name, at most `limit`, each read only if small and decoded within the page's pixel budget."""
        plots = []
        with self.source.reading():
            for name in self.source.analysis_plots[:limit]:
                with self.source.open(name) as file:
                    data = file.read(MAX_PLOT_BYTES + 1)
                if len(data) <= MAX_PLOT_BYTES and (image := decode_image(data, self.label, size)) is not None:
                    plots.append((image, Path(name).parent.name.replace("_", "-")))
        return plots

    # --- checks -----------------------------------------------------------------------------------------
    def _layer(self, model_id: str, layer: Any) -> int:
        layer = whole(layer, "layer")
        if (model_id, layer) not in self.index.objectives:
            layers = self.index.layers[model_id]
            raise VizError(f"The gallery {self.label} has no layer {layer} for {model_id}: "
                           f"pick one of {compact_ranges(layers)}.")
        return layer

    def _objectives_of(self, model_id: str, layer: int) -> list[str]:
        """The objectives of a checked (model, layer), the preferred one first."""
        return sorted(self.index.objectives[(model_id, layer)], key=lambda n: (n != PREFERRED_OBJECTIVE, n))

    def _objective(self, model_id: str, layer: int, objective: str | None) -> str:
        names = self._objectives_of(model_id, layer)
        if not objective:
            return names[0]
        if objective not in names:
            raise VizError(f"Layer {layer} of {model_id} in {self.label} has no '{objective}' rows: "
                           f"pick one of {', '.join(names)}.")
        return objective


@dataclass(frozen=True)
class LayerKey:
    """A (model, layer, objective) that `Gallery.key` checked against the gallery."""

    model_id: str
    layer: int
    objective: str


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


def whole(value: Any, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    return whole_number(value, f"the {name}", minimum=minimum, maximum=maximum)


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


class GalleryCache:
    """Gallery indexes shared by every caller (all of the app's visitors): one per gallery revision (a Hub
    commit, or a folder's shards with their sizes and times), built once even when several callers open the same
    gallery at the same moment, at most `max_size` kept, each refusing galleries of more than `max_rows` rows.

    `get` still lists the gallery with the caller's own access every time (one Hub request), so a shared index is
    only used for someone who can read that revision, and a new push is seen at once."""

    def __init__(self, max_size: int = 4, max_rows: int = MAX_ROWS):
        self.max_size, self.max_rows = max_size, max_rows
        self._indexes = LRUCache(max_size)  # source.key -> GalleryIndex

    def get(self, source: Any, *, allow_local: bool = True, token: str | bool | None = None,
            revision: str | None = None) -> Gallery:
        return open_gallery(source, revision=revision, token=token, allow_local=allow_local, max_rows=self.max_rows,
                            indexes=self)

    def index(self, source: Source) -> GalleryIndex:
        """The index of `source`'s revision: the shared one, or built now (once, whoever else waits for it)."""
        return self._indexes.get_or_build(source.key, lambda: GalleryIndex(source, self.max_rows))
