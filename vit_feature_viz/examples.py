"""Dataset examples: the images of a dataset that activate each feature most, with their patch maps.

One pass over the data serves every requested feature: each batch is scored on all channels at once and a running
top-k per feature keeps only row indices, scores and the pixels of current candidates, so memory does not grow
with the dataset. Row indices are always indices into the full split, which is what lets per-process scans
(`num_shards`/`shard_index`) be merged into exactly the answer of a single scan.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .errors import VizError
from .models.base import VisionModel
from .core.objectives import Channel, Objective, make_objective
from .core.patchmap import heatmap_overlay, patch_values_for
from .images import uint8_to_pil
from .store.progress import Resumed, SavedProgress
from .specs import looks_like_path, parse_features

IMAGE_COLUMN_NAMES = ("image", "img", "pixel_values")
# The split scanned when none is given (CLI and app alike): held-out images first, as the model saw them least.
SPLIT_PREFERENCE = ("test", "validation", "train")
EXAMPLE_HUB_DATASET = "uoft-cs/cifar10"
DECODE_THREADS = min(8, os.cpu_count() or 1)


@dataclass
class Example:
    """One dataset image for one feature: its score, its row in the full split, and what the model saw."""

    score: float
    index: int
    image: Image.Image  # as the model saw it: through the checkpoint's own resize and crop
    patch_map: Image.Image | None  # overlay of the feature's per-patch values; None for objectives without (logit)


# --- opening a dataset ---------------------------------------------------------------------------------------
def default_split(available) -> str:
    """The split to use when none is given: the first of test, validation, train the dataset has, else its first."""
    available = list(available)
    if not available:
        raise VizError("The dataset has no splits: pass a dataset with data files, or --split NAME.")
    return next((name for name in SPLIT_PREFERENCE if name in available), available[0])


def streams(streaming: bool, max_images: int | None) -> bool:
    """Stream when asked to, and whenever a cap on images is set: then only the shards (and row groups) holding
    the first `max_images` rows are read, instead of downloading and converting the whole split first."""
    return bool(streaming) or max_images is not None


def open_image_dataset(name_or_path, *, split: str | None = None, image_column: str | None = None,
                       streaming: bool = False, token: str | bool | None = None):
    """Open one split of a Hub dataset or a local folder and find its image column.

    `split=None` picks `default_split` of the dataset's splits. `token`: None reads with the local user's own
    login; False (anonymous) or a token reads for someone else, who must be granted the Hub repo even when
    `datasets` has it cached (see `require_dataset_access`).

    Local folders may be an imagefolder (image files), parquet files or a Hub-style dataset folder (README
    configs), or a `save_to_disk` folder. Returns `(dataset, image_column)`.
    """
    name = str(name_or_path).strip()
    if not name:
        raise VizError(f"No dataset given: pass a Hub dataset id such as {EXAMPLE_HUB_DATASET} or a local folder.")
    dataset = _load_split(name, split, streaming, token)
    return dataset, find_image_column(dataset, image_column, name)


def _load_split(name: str, split: str | None, streaming: bool, token: str | bool | None = None):
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            return _load_saved(path, name, split, streaming)
    elif path.exists():
        raise VizError(
            f"'{name}' is a file, not a dataset: give its folder or a Hub dataset id such as {EXAMPLE_HUB_DATASET}."
        )
    elif looks_like_path(name):
        raise VizError(
            f"No dataset folder at '{name}': check the path, or give a Hub dataset id such as {EXAMPLE_HUB_DATASET}."
        )
    source = str(path) if path.is_dir() else name
    reader = {} if token is None else {"token": token}
    try:
        if not path.is_dir():
            require_dataset_access(name, token)
        if split is None:
            split = default_split(datasets.get_dataset_split_names(source, **reader))
        return datasets.load_dataset(source, split=split, streaming=streaming, **reader)
    except datasets.exceptions.DatasetNotFoundError:
        raise VizError(_not_found_message(name)) from None
    except ConnectionError:
        raise VizError(_unreachable_message(name)) from None
    except FileNotFoundError:
        raise VizError(
            f"'{name}' holds no data files that datasets can read: use a folder of images, of parquet files, "
            "or a Hub dataset id."
        ) from None
    except ValueError as error:
        if "split" not in str(error).lower():
            raise
        raise VizError(_split_message(name, split, _available_splits(source, error, reader))) from None


def require_dataset_access(name: str, token: str | bool | None) -> None:
    """With an explicit token, the Hub must grant it the dataset repo now: when the Hub refuses, `datasets` falls
    back to a copy in its cache, so a private dataset that another reader loaded would open for anyone.
    None (the local user's own login) asks nothing; packaged builders (imagefolder, csv, ...) are no Hub repos."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError, HfHubHTTPError, HFValidationError, OfflineModeIsEnabled, RepositoryNotFoundError,
    )

    from .models.hub_files import TransportError

    if token is None or name in packaged_builders():
        return
    try:
        HfApi(token=token).repo_info(name, repo_type="dataset")
    except (RepositoryNotFoundError, GatedRepoError):
        raise VizError(_not_found_message(name)) from None
    except HFValidationError:
        raise VizError(f"'{name}' is not a Hub dataset id: use namespace/name, e.g. {EXAMPLE_HUB_DATASET}.") from None
    except OfflineModeIsEnabled:
        raise VizError(f"Cannot check who may read dataset '{name}' while HF_HUB_OFFLINE is set: unset it, or give "
                       "a local folder.") from None
    except (ConnectionError, TimeoutError, TransportError):
        raise VizError(_unreachable_message(name)) from None
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status in (401, 403):
            raise VizError(_not_found_message(name)) from None
        raise VizError(f"The Hub answered HTTP {status} for dataset '{name}': try again later.") from None


@functools.cache
def packaged_builders() -> frozenset[str]:
    """The names `datasets` reads as its own builders (imagefolder, csv, parquet, json, webdataset, ...), which load
    files from the working directory, not from the Hub. `datasets` keeps the list in a private module constant
    (there is no public one), read here only; the builder modules it ships (sql, spark, generator, ...) count too."""
    import pkgutil

    from datasets import packaged_modules

    shipped = {module.name for module in pkgutil.iter_modules(packaged_modules.__path__)}
    return frozenset(shipped | set(packaged_modules._PACKAGED_DATASETS_MODULES))


def _not_found_message(name: str) -> str:
    return (f"Dataset '{name}' was not found on the Hub or as a local folder: check the name (e.g. "
            f"{EXAMPLE_HUB_DATASET}), and run `hf auth login` if it is private or gated.")


def _load_saved(path: Path, name: str, split: str | None, streaming: bool):
    """A folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`."""
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        split = default_split(loaded) if split is None else split
        if split not in loaded:
            raise VizError(_split_message(name, split, list(loaded)))
        loaded = loaded[split]
    return loaded.to_iterable_dataset() if streaming else loaded


def _unreachable_message(name: str) -> str:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return (
            f"Dataset '{name}' is not in the local cache and HF_HUB_OFFLINE is set: check the name, unset "
            "HF_HUB_OFFLINE to download it, or give a local folder."
        )
    return (
        f"Could not reach the Hub for dataset '{name}': check the name and your network, or set HF_HUB_OFFLINE=1 "
        "to use a cached copy."
    )


def _split_message(name: str, split: str, available: list[str]) -> str:
    choices = ", ".join(available) if available else "the dataset's splits"
    return f"Dataset '{name}' has no split '{split}': use --split with one of {choices}."


def _available_splits(source: str, error: Exception, reader: dict | None = None) -> list[str]:
    """The splits datasets' own message lists, else asked for again (by the same reader)."""
    quoted = re.search(r"\[(.*?)\]", str(error))
    if quoted:
        return re.findall(r"'([^']+)'", quoted.group(1))
    try:
        return list(datasets.get_dataset_split_names(source, **(reader or {})))
    except (OSError, ValueError):
        return []


def find_image_column(dataset, image_column: str | None = None, name: str | None = None) -> str:
    """The given column (checked), else the first `Image` column, else one named image/img/pixel_values."""
    name = name or _dataset_name(dataset)
    features = dataset.features
    if features is None:  # a stream that does not declare its features: look at its first row
        first = next(iter(dataset), {})
        columns = list(first)
        images = [c for c, v in first.items() if isinstance(v, Image.Image)]
    else:
        columns = list(features)
        images = [c for c, f in features.items() if isinstance(f, datasets.Image)]
    if image_column:
        if image_column not in columns:
            raise VizError(
                f"Dataset '{name}' has no column '{image_column}': use --image-column with one of {', '.join(columns)}."
            )
        return image_column
    if images:
        return images[0]
    named = [c for c in columns if c.lower() in IMAGE_COLUMN_NAMES]
    if named:
        return named[0]
    raise VizError(
        f"Dataset '{name}' has no image column (columns: {', '.join(columns) or 'none'}): pass --image-column NAME."
    )


def _dataset_name(dataset) -> str:
    info = getattr(dataset, "info", None)
    return getattr(info, "dataset_name", None) or "dataset"


# --- reading rows ---------------------------------------------------------------------------------------------
def as_pil(value, column: str) -> Image.Image:
    """A decoded image from whatever an image column holds: PIL, {bytes, path}, a path, or a pixel array."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, (bytes, bytearray)):  # a binary column of encoded PNG/JPEG files
        value = {"bytes": bytes(value), "path": None}
    if isinstance(value, (dict, str)):
        encoded = value if isinstance(value, dict) else {"path": value, "bytes": None}
        return datasets.Image().decode_example(encoded)
    if isinstance(value, (list, np.ndarray, torch.Tensor)):
        return _array_to_pil(np.asarray(value))
    raise VizError(
        f"Column '{column}' holds {type(value).__name__} values, not images: pass --image-column with an image column."
    )


def _array_to_pil(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)  # CHW -> HWC
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.dtype != np.uint8:
        array = array.astype(np.float64)
        array = array * 255 if array.max(initial=0) <= 1 else array
        array = array.clip(0, 255).round().astype(np.uint8)
    return Image.fromarray(array)


def _select_split(dataset, split: str | None):
    if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        split = default_split(dataset) if split is None else split
        if split not in dataset:
            raise VizError(_split_message("dataset", split, list(dataset)))
        return dataset[split]
    return dataset


def _undecoded(dataset, column: str):
    """Only the image column, left encoded: only this process's rows get decoded, in parallel threads."""
    dataset = dataset.select_columns([column])
    feature = dataset.features.get(column) if dataset.features is not None else None
    if isinstance(feature, datasets.Image) and feature.decode:
        dataset = dataset.cast_column(column, datasets.Image(decode=False))
    return dataset


def _shard_batches(dataset, column, *, batch_size, max_images, num_shards, shard_index, progress, desc, done=0):
    """Batches of (row indices in the full split, undecoded images) for this process: the rows with
    index % num_shards == shard_index among the first `max_images` rows, after the first `done` of them (scanned
    by a stopped run; a multiple of `batch_size`, so the batches are the ones an uninterrupted run makes)."""
    dataset = _undecoded(dataset, column)
    if not isinstance(dataset, datasets.Dataset):
        yield from _stream_batches(dataset, column, batch_size, max_images, num_shards, shard_index, progress, desc,
                                   done)
        return
    total = len(dataset) if max_images is None else min(len(dataset), max_images)
    rows = range(shard_index, total, num_shards)
    with tqdm(total=len(rows), initial=min(done, len(rows)), unit="img", desc=desc, disable=not progress) as bar:
        for start in range(done, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            key = slice(chunk.start, chunk.stop) if chunk.step == 1 else list(chunk)
            values = dataset[key][column]
            bar.update(len(chunk))
            yield list(chunk), values


def _stream_batches(dataset, column, batch_size, max_images, num_shards, shard_index, progress, desc, done=0):
    """An IterableDataset has no length: count rows as they stream by, keeping only this process's. The stream
    stops at row `max_images` without asking for one more row (which could open the next shard)."""
    total = None if max_images is None else len(range(shard_index, max_images, num_shards))
    indices, values = [], []
    with tqdm(total=total, initial=done, unit="img", desc=desc, disable=not progress) as bar:
        for index, row in enumerate(itertools.islice(dataset, max_images)):
            if index % num_shards != shard_index:
                continue
            if done:  # scanned by a stopped run: read past, not decoded
                done -= 1
                continue
            indices.append(index)
            values.append(row[column])
            if len(indices) == batch_size:
                bar.update(len(indices))
                yield indices, values
                indices, values = [], []
        if indices:
            bar.update(len(indices))
            yield indices, values


class UnreadableImages(UserWarning):
    """Some dataset rows held broken image files; the scan skipped them (the CLI prints the count)."""


def _readable(load, value):
    """A broken image file in a large dataset should cost one row, not the whole scan."""
    try:
        return load(value)
    except (OSError, ValueError, SyntaxError):  # PIL's UnidentifiedImageError is an OSError; truncated PNGs raise these
        return None


def _load_pixels(value, column: str, model: VisionModel) -> torch.Tensor:
    return model.preprocess_uint8(as_pil(value, column))


# --- scanning -------------------------------------------------------------------------------------------------
class RunningTopK:
    """The best `k` rows per feature seen so far, as [F, k] score and row-index tensors.

    Rows must arrive in increasing index order: then a stable descending sort of [kept, new] breaks ties by
    lower row index, the same order `merge_examples` uses.
    """

    def __init__(self, num_features: int, k: int):
        self.k = k
        self.scores = torch.empty(num_features, 0)
        self.indices = torch.empty(num_features, 0, dtype=torch.long)

    def add(self, scores: torch.Tensor, indices: torch.Tensor) -> None:
        """`scores` [B, F] for rows `indices` [B]."""
        scores = torch.nan_to_num(scores.float().T, nan=float("-inf"))
        all_scores = torch.cat([self.scores, scores], dim=1)
        all_indices = torch.cat([self.indices, indices.view(1, -1).expand_as(scores)], dim=1)
        order = torch.sort(all_scores, dim=1, descending=True, stable=True).indices[:, : self.k]
        self.scores, self.indices = all_scores.gather(1, order), all_indices.gather(1, order)

    def rows(self) -> set[int]:
        return set(self.indices.unique().tolist())


def scan_examples(
    model: VisionModel,
    layer: int,
    features,
    dataset,
    *,
    objective="feature",
    split: str | None = None,
    image_column: str | None = None,
    max_images: int | None = None,
    top_k: int = 8,
    streaming: bool = False,
    batch_size: int = 32,
    num_shards: int = 1,
    shard_index: int = 0,
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
    token: str | bool | None = None,
) -> dict[int, list[Example]]:
    """Top-`top_k` dataset images per feature of `layer`, best first, from one pass over the data.

    `features`: a spec ("7", "0-63", "all") or list. `dataset`: a Hub id, a local folder, or an opened
    (Iterable)Dataset(Dict); `split=None` uses `default_split` (test, else validation, else train). `max_images` caps the rows of the split considered (the first `max_images`, shared by all
    shards, which a named dataset then streams); this process scans the rows whose index % `num_shards` == `shard_index`.
    `checkpoint`: a folder the scan saves its progress in after every batch and resumes from (a dataset given by
    name only); the caller removes it once the results are saved (`examples_to_folder` does). `token` reads a Hub
    dataset as in `open_image_dataset` (None: the local user's own login).
    """
    objective = make_objective(objective, layer)
    if not isinstance(objective, Channel):
        raise VizError(
            f"Objective '{objective.name}' is a combination: dataset examples need one of feature, neuron, cls, "
            "residual or logit."
        )
    objective.check(model)
    wanted = parse_features(features, objective.num_channels(model))
    _check_scan_options(top_k, batch_size, num_shards, shard_index, max_images)
    saved = None
    if checkpoint is not None:
        if not isinstance(dataset, (str, os.PathLike)):
            raise VizError("A checkpoint needs the dataset given by name (a Hub id or a folder), so that a rerun "
                           "can tell it is the same: pass its name, or no checkpoint.")
        saved = _SavedScan(checkpoint, {
            "model": model.model_id, "layer": int(layer), "objective": objective.name, "features": wanted,
            "dataset": str(dataset), "split": split, "image_column": image_column, "max_images": max_images,
            "top_k": top_k, "batch_size": batch_size, "num_shards": num_shards, "shard_index": shard_index,
        })
    if isinstance(dataset, (str, os.PathLike)):
        dataset, column = open_image_dataset(dataset, split=split, image_column=image_column,
                                             streaming=streams(streaming, max_images), token=token)
    else:
        dataset = _select_split(dataset, split)
        column = find_image_column(dataset, image_column)

    best = RunningTopK(len(wanted), top_k)
    # rows scanned, unreadable ones among them, and row -> uint8 pixels for the rows some feature currently keeps
    done, unreadable, candidates = saved.restore(best) if saved else (0, 0, {})
    if done:
        warnings.warn(f"Resumed a stopped scan: the {done} image(s) it had scanned are skipped.", Resumed, stacklevel=2)
    channels = torch.tensor(wanted)
    batches = _shard_batches(
        dataset, column, batch_size=batch_size, max_images=max_images, num_shards=num_shards,
        shard_index=shard_index, progress=progress, desc=f"Scanning layer {layer}", done=done,
    )
    wanted_on_device = channels.to(model.device)
    load = functools.partial(_load_pixels, column=column, model=model)
    with ThreadPoolExecutor(DECODE_THREADS) as pool:  # PIL decodes and resizes outside the GIL
        for indices, encoded in batches:
            done += len(indices)
            decoded = list(pool.map(functools.partial(_readable, load), encoded))
            unreadable += decoded.count(None)
            indices = [i for i, p in zip(indices, decoded) if p is not None]
            new = {}
            if indices:
                pixels = torch.stack([p for p in decoded if p is not None])
                with torch.no_grad():
                    values = objective.values(model.activations(pixels.float() / 255, objective.needs))
                best.add(values[:, wanted_on_device].cpu(), torch.tensor(indices))
                keep = best.rows()
                new = {i: p.clone() for i, p in zip(indices, pixels) if i in keep}  # not views of the batch
                candidates.update(new)
                candidates = {i: p for i, p in candidates.items() if i in keep}
            if saved:
                saved.save(done, unreadable, best, new, candidates)

    if unreadable:
        warnings.warn(f"Skipped {unreadable} unreadable image(s) in column '{column}'.", UnreadableImages, stacklevel=2)
    maps = _patch_maps(model, objective, best, candidates, channels, batch_size)
    images = {i: uint8_to_pil(p) for i, p in candidates.items()}
    return {
        feature: [
            Example(score, index, images[index], maps.get((position, index)))
            for score, index in zip(best.scores[position].tolist(), best.indices[position].tolist())
        ]
        for position, feature in enumerate(wanted)
    }


class _SavedScan:
    """A scan's progress on disk (progress.SavedProgress): rows done, unreadable rows, the running top-k, and the
    pixels of the current candidates, the new ones of each batch in one part file."""

    def __init__(self, folder, settings: dict):
        self.store = SavedProgress(folder, settings)
        self.part_of_row: dict[int, str] = {}

    def restore(self, best: RunningTopK) -> tuple[int, int, dict[int, torch.Tensor]]:
        """(rows done, unreadable rows, candidate pixels) of a stopped run, its top-k loaded into `best`;
        (0, 0, {}) when there is none."""
        state = self.store.load()
        if state is None:
            return 0, 0, {}
        best.scores, best.indices = state["scores"], state["indices"]
        keep = best.rows()
        candidates = {}
        for name in state["parts"]:
            part = self.store.part(name)
            for row, pixels in zip(part["rows"].tolist(), part["pixels"]):
                if row in keep:
                    candidates[row], self.part_of_row[row] = pixels, name
        return state["done"], state["unreadable"], candidates

    def save(self, done: int, unreadable: int, best: RunningTopK, new: dict[int, torch.Tensor], candidates) -> None:
        """After a batch: its newly kept pixels as one part, then the state; parts of dropped rows go."""
        parts = {}
        if new:
            name = f"rows-{done}"
            parts[name] = {"rows": torch.tensor(list(new)), "pixels": torch.stack(list(new.values()))}
            self.part_of_row.update((row, name) for row in new)
        self.part_of_row = {row: name for row, name in self.part_of_row.items() if row in candidates}
        state = {"done": done, "unreadable": unreadable, "scores": best.scores, "indices": best.indices}
        self.store.save(state, parts, self.part_of_row.values())


def _check_scan_options(top_k, batch_size, num_shards, shard_index, max_images) -> None:
    if top_k < 1:
        raise VizError(f"top_k must be at least 1, not {top_k}: use e.g. --top-k 8.")
    if batch_size < 1:
        raise VizError(f"Batch size must be at least 1, not {batch_size}: use e.g. --scan-batch-size 32.")
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise VizError(
            f"Shard {shard_index} of {num_shards} does not exist: use a shard index in 0-{max(num_shards, 1) - 1}."
        )
    if max_images is not None and max_images < 0:
        raise VizError(f"max_images must be 0 or more, not {max_images}: leave it unset to scan the whole split.")


def _patch_maps(model, objective, best: RunningTopK, candidates, channels, batch_size) -> dict[tuple, Image.Image]:
    """(feature position, row) -> overlay, recomputing per-patch values for the kept rows only.

    Each map uses its own value range, so a map depends only on its image and feature, never on which shard
    or batch found it.
    """
    if not candidates:
        return {}
    kept_by_row: dict[int, list[int]] = {}
    for position, row_indices in enumerate(best.indices.tolist()):
        for row in row_indices:
            kept_by_row.setdefault(row, []).append(position)
    rows = sorted(candidates)
    maps = {}
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        pixels = torch.stack([candidates[r] for r in chunk])
        values = patch_values_for(model, objective, pixels.float() / 255)
        if values is None:  # the objective has no per-patch values (logit): examples without maps
            return {}
        for b, row in enumerate(chunk):
            for position in kept_by_row[row]:
                grid = values[b, :, :, channels[position]].numpy()
                maps[(position, row)] = heatmap_overlay(uint8_to_pil(candidates[row]), grid)
    return maps


# --- combining and saving -------------------------------------------------------------------------------------
def merge_examples(parts: list[dict[int, list[Example]]], top_k: int) -> dict[int, list[Example]]:
    """Per-process scans -> the answer of one scan: best `top_k` per feature by score, ties to the lower row."""
    pooled: dict[int, dict[int, Example]] = {}
    for part in parts:
        for feature, examples in part.items():
            by_row = pooled.setdefault(feature, {})
            for example in examples:
                by_row.setdefault(example.index, example)
    return {
        feature: sorted(by_row.values(), key=lambda e: (-e.score, e.index))[:top_k]
        for feature, by_row in sorted(pooled.items())
    }


def example_rows(
    model: VisionModel, layer: int, objective_name, dataset_name: str, examples: dict[int, list[Example]]
) -> list[dict]:
    """Gallery rows (see gallery.FEATURES), one per feature; they merge with rendered rows by key."""
    objective = objective_name.name if isinstance(objective_name, Objective) else str(objective_name)
    return [
        {
            "model_id": model.model_id,
            "layer": int(layer),
            "feature": int(feature),
            "objective": objective,
            "dataset": str(dataset_name),
            "top_images": [e.image for e in found],
            "top_scores": [float(e.score) for e in found],
            "top_indices": [int(e.index) for e in found],
            "patch_maps": [e.patch_map for e in found if e.patch_map is not None],
        }
        for feature, found in sorted(examples.items())
    ]

