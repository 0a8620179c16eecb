"""The sorted index of one gallery revision, and the cache that shares it between everyone browsing it.

Galleries are parquet shards whose rows hold images next to a few numbers. Browsing must not wait for gigabytes
of images, so opening a gallery reads the shards' footers (and refuses a gallery declaring more rows than
`max_rows` before reading anything else), then only the key columns and activations, into numpy arrays sorted
by (model, layer, objective, feature); row groups are then read on demand, only the columns a view shows. On the
Hub the same reads go through `HfFileSystem` as HTTP range requests at one pinned commit (sources.py), so a
gallery that changes meanwhile never mixes two versions. A `GalleryCache` shares one index per gallery revision
between all its callers (the app's visitors).
"""

from __future__ import annotations

import csv
import io
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import VizError
from ..lru import LRUCache
from .schema import KEY_COLUMNS
from .sources import Source, readable_shard


# Columns read for every row when a gallery opens (the sorted index); the others of a row only when it is shown.
INDEX_COLUMNS = (*KEY_COLUMNS, "activation")
CACHE_BYTES = 128 * 2**20  # image column chunks kept in memory per gallery (neighbours often share a row group)
INDEX_THREADS = 8
INDEX_SCHEMA = pa.schema([("model_id", pa.string()), ("layer", pa.int64()), ("feature", pa.int64()),
                          ("objective", pa.string()), ("activation", pa.float64())])  # INDEX_COLUMNS, as held
# Bounds on what any gallery, however it was written, may cost to browse (the app's preset may lower MAX_ROWS)
MAX_ROWS = 1_000_000  # rows a gallery may declare (its shards' footers) to be opened: ~45 bytes each in the index
MAX_FOOTER_BYTES = 64 * 2**20  # a shard's parquet footer (row-group metadata), checked before it is parsed
MAX_CHUNK_BYTES = 2**30  # the columns of one row group read at once (a gallery's own row groups hold 100 rows)
MAX_INDEX_BYTES = 256 * 2**20  # the key columns of all rows, read when a gallery opens (~60 bytes a row)
CONCEPT_BYTES = 8 * 2**20  # bytes read of each clip-names table (~130k names); the rest of a bigger one is left


# ------------------------------------------------------------------------------------------------ records


# ------------------------------------------------------------------------------------------------ sources


# ------------------------------------------------------------------------------------------------ gallery


class GalleryIndex:
    """The rows of one gallery revision sorted by (model, layer, objective, feature) into numpy arrays (~45 bytes
    a row, no Python object per row), plus the row groups and concept names read since: built once per revision
    and shared by every Gallery opened on it (GalleryCache).

    Building reads each shard's footer first (refusing a gallery that declares more than `max_rows` rows, or an
    oversized footer, before anything else is read), then only the key columns and the activation."""

    def __init__(self, source: Source, max_rows: int = MAX_ROWS):
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
        self._chunks = LRUCache(CACHE_BYTES, weight=lambda table: table.nbytes)  # (shard, group, columns) -> table
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

    def _key_columns(self, source: Source, number: int) -> pa.Table:
        """A shard's key columns and activation, in fixed types, with where each row is stored."""
        shard, metadata = source.shards[number], self.metadata[number]
        present = [c for c in INDEX_COLUMNS if c in self.columns[number]]
        with readable_shard(source, shard), source.reading(), source.open(shard) as handle:
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

    def read(self, source: Source, shard: int, group: int, columns: tuple[str, ...]) -> pa.Table:
        """Some columns of one row group (those the shard has), from a small LRU cache bounded by bytes; a row
        group bigger than MAX_CHUNK_BYTES is refused from its metadata before it is read."""
        key = (shard, group, columns)
        cached = self._chunks.get(key)
        if cached is not None:
            return cached
        metadata = self.metadata[shard]
        present = [c for c in columns if c in self.columns[shard]]
        size = _chunk_bytes(metadata.row_group(group), present)
        if size > MAX_CHUNK_BYTES:
            raise VizError(f"The gallery {self.label} stores {size / 2**20:,.0f} MB in one row group of "
                           f"{source.shards[shard]}, more than this browser reads at once: open a gallery written "
                           "by vit-feature-viz.")
        name = source.shards[shard]
        with readable_shard(source, name), source.reading(), source.open(name) as handle:
            table = pq.ParquetFile(handle, metadata=metadata).read_row_group(group, columns=present)
        return self._chunks.put(key, table)

    def concepts(self, source: Source) -> dict[tuple[str, int, int], list[str]]:
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


# ------------------------------------------------------------------------------------------------ helpers


def _footer(source: Source, shard: str) -> pq.FileMetaData:
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
        with readable_shard(source, shard):
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


