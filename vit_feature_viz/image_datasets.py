"""Opening image datasets: a Hub dataset id, a local folder (saved with `save_to_disk`, or files `datasets`
reads), or a built-in set; picking the split and the image column; reading rows as PIL images; and reading a
split in batches, one share per process, streaming when only the first rows are needed.

The dataset scans (examples.py) and the analyses read their images through here, so every command accepts the
same names and fails the same way. (Named image_datasets, not datasets, so it never reads as the `datasets`
library it wraps.)
"""

from __future__ import annotations

import functools
import itertools
import os
import re
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .errors import VizError
from .images import to_pil
from .specs import looks_like_path

IMAGE_COLUMN_NAMES = ("image", "img", "pixel_values")
# The split scanned when none is given (CLI and app alike): held-out images first, as the model saw them least.
SPLIT_PREFERENCE = ("test", "validation", "train")
EXAMPLE_HUB_DATASET = "uoft-cs/cifar10"
# Generated offline by vit_feature_viz.data.shapes, with labels and boxes, under Hub-style names that every command
# and tab accepts with no network. Split "test" holds the test images of the trained shapes fixtures (the seed
# their validation used, which no training batch uses); "train" other images, e.g. to fit a linear probe on.
BUILTIN_DATASETS = {"vit-feature-viz/shapes-color": "color", "vit-feature-viz/shapes-shape": "shape",
                    "vit-feature-viz/shapes-cue-conflict": "cue-conflict"}  # columns shape and color: cue-conflict
BUILTIN_SPLITS = {"test": 999_983, "train": 999_979}  # split -> seed
BUILTIN_COUNT = 1200
DEFAULT_BUILTIN_DATASET = "vit-feature-viz/shapes-shape"


def default_split(available) -> str:
    """The split to use when none is given: the first of test, validation, train the dataset has, else its first."""
    available = list(available)
    if not available:
        raise VizError("The dataset has no splits", option="split", fix="pass a dataset with data files, or {option} NAME.")
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
    if name in BUILTIN_DATASETS:
        dataset = builtin_dataset(name, split)  # in memory already: nothing to stream
        return dataset, find_image_column(dataset, image_column, name)
    dataset = _load_split(name, split, streaming, token)
    return dataset, find_image_column(dataset, image_column, name)


@functools.lru_cache(maxsize=6)  # every built-in set's two splits
def builtin_dataset(name: str, split: str | None = None) -> datasets.Dataset:
    """A built-in shapes set (BUILTIN_DATASETS), generated once per process and split."""
    split = default_split(BUILTIN_SPLITS) if split is None else split
    if split not in BUILTIN_SPLITS:
        raise _no_split(name, split, list(BUILTIN_SPLITS))
    from .data.shapes import shapes_dataset

    generated = shapes_dataset(BUILTIN_COUNT, variant=BUILTIN_DATASETS[name], seed=BUILTIN_SPLITS[split])
    return datasets.Dataset(generated.data, info=generated.info, split=datasets.NamedSplit(split))


def split_of(dataset, requested: str | None = None) -> str | None:
    """The split a dataset was opened at: the one asked for, else the one `datasets` recorded when it picked."""
    if requested:
        return requested
    recorded = getattr(dataset, "split", None)
    return str(recorded) if recorded is not None else None


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
        raise _not_found(name) from None
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
        raise _no_split(name, split, _available_splits(source, error, reader)) from None


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
        raise _not_found(name) from None
    except HFValidationError:
        raise VizError(f"'{name}' is not a Hub dataset id: use namespace/name, e.g. {EXAMPLE_HUB_DATASET}.") from None
    except OfflineModeIsEnabled:
        raise VizError(f"Cannot check who may read dataset '{name}' while HF_HUB_OFFLINE is set", option="hub_offline",
                       fix="unset it, or give a local folder") from None
    except (ConnectionError, TimeoutError, TransportError):
        raise VizError(_unreachable_message(name)) from None
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status in (401, 403):
            raise _not_found(name) from None
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


def _not_found(name: str) -> VizError:
    return VizError(f"Dataset '{name}' was not found on the Hub or as a local folder", option="token",
                    fix=f"check the name (e.g. {EXAMPLE_HUB_DATASET}), and run `hf auth login` if it is private or "
                        "gated.")


def _load_saved(path: Path, name: str, split: str | None, streaming: bool):
    """A folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`."""
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        split = default_split(loaded) if split is None else split
        if split not in loaded:
            raise _no_split(name, split, list(loaded))
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


def _no_split(name: str, split: str, available: list[str]) -> VizError:
    choices = ", ".join(available) if available else "the dataset's splits"
    return VizError(f"Dataset '{name}' has no split '{split}'", option="split", value=split,
                    fix=f"{{option:use with}} one of {choices}.")


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
            raise VizError(f"Dataset '{name}' has no column '{image_column}'", option="image_column",
                           value=image_column, fix=f"{{option:use with}} one of {', '.join(columns)}.")
        return image_column
    if images:
        return images[0]
    named = [c for c in columns if c.lower() in IMAGE_COLUMN_NAMES]
    if named:
        return named[0]
    raise VizError(f"Dataset '{name}' has no image column (columns: {', '.join(columns) or 'none'})",
                   option="image_column", fix="{option:pass} NAME.")


def _dataset_name(dataset) -> str:
    info = getattr(dataset, "info", None)
    return getattr(info, "dataset_name", None) or "dataset"


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
        return to_pil(np.asarray(value))
    raise VizError(f"Column '{column}' holds {type(value).__name__} values, not images", option="image_column",
                   value=column, fix="{option:pass with} an image column.")


def select_split(dataset, split: str | None):
    """One split of a dataset dict (the preferred one when `split` is None); a single split as it is."""
    if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        split = default_split(dataset) if split is None else split
        if split not in dataset:
            raise _no_split("dataset", split, list(dataset))
        return dataset[split]
    return dataset


def _undecoded(dataset, column: str):
    """Only the image column, left encoded: only this process's rows get decoded, in parallel threads."""
    dataset = dataset.select_columns([column])
    feature = dataset.features.get(column) if dataset.features is not None else None
    if isinstance(feature, datasets.Image) and feature.decode:
        dataset = dataset.cast_column(column, datasets.Image(decode=False))
    return dataset


def shard_batches(dataset, column, *, batch_size, max_images, num_shards, shard_index, progress, desc, done=0):
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
