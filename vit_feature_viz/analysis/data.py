"""The one loop over a labelled image dataset that every experiment shares.

It opens a Hub dataset or local folder (streaming where asked), finds the image, label and optional box/mask
columns, decodes images in threads (each model then prepares them with its own pipeline), and maps the dataset's labels to each model's
classes by name. A progress bar counts images.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import reprlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import datasets
import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..errors import VizError
from ..image_datasets import as_pil, find_image_column, open_image_dataset, split_of
from ..images import to_rgb

LABEL_COLUMN_NAMES = ("label", "labels", "fine_label", "class", "target", "category")
BOX_COLUMN_NAMES = ("bbox", "box", "boxes", "bboxes")
MASK_COLUMN_NAMES = ("mask", "foreground", "segmentation")
DECODE_THREADS = min(8, os.cpu_count() or 1)


@dataclass
class LabeledData:
    """An opened split with the columns an experiment reads."""

    dataset: datasets.Dataset | datasets.IterableDataset
    name: str
    image_column: str
    label_column: str | None  # None only where labels are not needed (naming features)
    label_names: list[str] | None  # None when labels are bare integers (taken as the model's class index)
    box_column: str | None = None
    mask_column: str | None = None
    box_format: str = "xyxy"
    split: str | None = None  # the split read (the default one when none was asked for)
    extra_columns: tuple[str, ...] = ()  # more columns each Batch carries as they are (a second label, ...)


@dataclass
class Batch:
    """Decoded images at their own resolution: each model prepares them with its own pipeline."""

    images: list[Image.Image]  # RGB
    labels: list  # dataset labels: ints (ClassLabel ids / class indices) or strings; [] without a label column
    masks: list[Image.Image] | None  # "L" foreground masks (255 = object) at the images' size, when asked for
    extra: dict[str, list] = field(default_factory=dict)  # LabeledData.extra_columns' values, by column


def open_labeled(
    dataset,
    *,
    split: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    box_column: str | None = None,
    mask_column: str | None = None,
    need_region: bool = False,
    need_label: bool = True,
    box_format: str = "xyxy",
    streaming: bool = False,
    token: str | bool | None = None,
) -> LabeledData:
    """Open `dataset` (Hub id, local folder, a built-in shapes set name (image_datasets.BUILTIN_DATASETS) or (Iterable)Dataset)
    and find its columns, failing in one line. `token` is the reader's, as in `image_datasets.open_image_dataset`."""
    if isinstance(dataset, (str, os.PathLike)):
        name = str(dataset).strip()
        opened, image = open_image_dataset(name, split=split, image_column=image_column, streaming=streaming,
                                           token=token)
    else:
        if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
            if split not in dataset:
                raise VizError(f"The dataset has no split '{split}': use one of {', '.join(dataset)}.")
            dataset = dataset[split]
        opened, name = dataset, getattr(dataset.info, "dataset_name", None) or "dataset"
        image = find_image_column(opened, image_column, name)
    columns = _columns(opened)
    label = _pick(columns, label_column, LABEL_COLUMN_NAMES, name, "label", "label_column")
    if label is None and need_label:
        raise VizError(f"Dataset '{name}' has no label column (columns: {', '.join(columns)})", option="label_column",
                       fix="{option:pass} NAME.")
    box = mask = None
    if need_region or box_column or mask_column:
        mask = _pick(columns, mask_column, MASK_COLUMN_NAMES, name, "mask", "mask_column") if not box_column else None
        box = _pick(columns, box_column, BOX_COLUMN_NAMES, name, "box", "box_column") if mask is None else None
        if need_region and box is None and mask is None:
            raise VizError(f"Dataset '{name}' has no bounding-box or mask column (columns: {', '.join(columns)})",
                           option="box_column", fix="{option:pass} NAME (x0, y0, x1, y1 pixels) or {mask_column} NAME.")
    if box_format not in ("xyxy", "xywh"):
        raise VizError(f"Unknown box format '{box_format}': use xyxy (x0, y0, x1, y1) or xywh (x, y, width, height).")
    names = _label_names(opened, label) if label else None
    return LabeledData(opened, name, image, label, names, box, mask, box_format, split_of(opened, split))


def _columns(dataset) -> list[str]:
    if dataset.features is not None:
        return list(dataset.features)
    return list(next(iter(dataset), {}))


def _pick(columns, given, candidates, name, what, option) -> str | None:
    if given:
        if given not in columns:
            raise VizError(f"Dataset '{name}' has no column '{given}'", option=option, value=given,
                           fix=f"{{option:use with}} one of {', '.join(columns)}.")
        return given
    return next((c for c in columns if c.lower() in candidates), None)


def _label_names(dataset, column: str) -> list[str] | None:
    feature = (dataset.features or {}).get(column)
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    return None


# --- labels ---------------------------------------------------------------------------------------------------
def _normal(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", str(name)).strip().lower()


class LabelMap:
    """Dataset labels -> one model's class indices, by name (synonyms such as ImageNet's 'tench, Tinca tinca'
    count), or by index when the dataset's labels are bare integers."""

    def __init__(self, data: LabeledData, class_names: Sequence[str], model_id: str):
        self.model_id = model_id
        self.num_classes = len(class_names)
        self.by_name: dict[str, int] = {}
        for index, full in enumerate(class_names):
            for synonym in [full, *str(full).split(",")]:
                self.by_name.setdefault(_normal(synonym), index)
        self.ids: list[int] | None = None
        if data.label_names is not None:
            if [_normal(n) for n in data.label_names] == [_normal(n) for n in class_names]:
                self.ids = list(range(len(class_names)))
            else:
                missing = [n for n in data.label_names if _normal(n) not in self.by_name]
                if missing:
                    raise VizError(
                        f"{len(missing)} label(s) of '{data.name}' ({', '.join(map(str, missing[:3]))}"
                        f"{', ...' if len(missing) > 3 else ''}) are not classes of '{model_id}': pick a dataset "
                        "whose labels the model knows, or a model trained on these classes."
                    )
                self.ids = [self.by_name[_normal(n)] for n in data.label_names]

    def __call__(self, labels: list) -> torch.Tensor:
        return torch.tensor([self._one(v) for v in labels], dtype=torch.long)

    def _one(self, value) -> int:
        if isinstance(value, str):
            found = self.by_name.get(_normal(value))
            if found is None:
                raise VizError(f"Label '{value}' is not a class of '{self.model_id}': pick a dataset whose labels it knows.")
            return found
        value = int(value)
        if self.ids is not None:
            return self.ids[value]
        if not 0 <= value < self.num_classes:
            raise VizError(
                f"Label {value} is out of range for '{self.model_id}' ({self.num_classes} classes): pick a dataset "
                "labelled with this model's classes."
            )
        return value


# --- iterating ------------------------------------------------------------------------------------------------
def batches(
    data: LabeledData,
    *,
    max_images: int | None = None,
    batch_size: int = 32,
    progress: bool = True,
    desc: str = "Evaluating",
    done: int = 0,
) -> Iterator[Batch]:
    """Batches of decoded images with their labels and foreground masks, decoded in threads, after the first
    `done` rows (used by a stopped run: a multiple of `batch_size`, so the batches are an uninterrupted run's)."""
    if batch_size < 1:
        raise VizError(f"Batch size must be at least 1, not {batch_size}", option="batch_size", value=batch_size,
                       fix="{option:use e.g.} 32.")
    if max_images is not None and max_images < 1:
        raise VizError(f"max_images must be at least 1, not {max_images}: leave it unset to use the whole split.")
    columns = [c for c in (data.image_column, data.label_column, data.box_column, data.mask_column) if c]
    columns += data.extra_columns
    dataset = data.dataset.select_columns(list(dict.fromkeys(columns)))
    for column in (data.image_column, data.mask_column):
        feature = (dataset.features or {}).get(column) if column else None
        if isinstance(feature, datasets.Image) and feature.decode:  # decoded in threads below
            dataset = dataset.cast_column(column, datasets.Image(decode=False))
    total = len(dataset) if isinstance(dataset, datasets.Dataset) else None
    if max_images is not None:
        total = max_images if total is None else min(total, max_images)
    load = functools.partial(_load_row, data=data)
    with ThreadPoolExecutor(DECODE_THREADS) as pool, \
            tqdm(total=total, initial=done, unit="img", desc=desc, disable=not progress) as bar:
        for rows in _row_chunks(dataset, total, batch_size, done):
            loaded = list(pool.map(load, rows))
            bar.update(len(rows))
            masks = [mask for _, mask in loaded] if data.box_column or data.mask_column else None
            labels = [row[data.label_column] for row in rows] if data.label_column else []
            yield Batch([image for image, _ in loaded], labels, masks,
                        {c: [row[c] for row in rows] for c in data.extra_columns})


def prepare(images: list[Image.Image], preprocess, pool: ThreadPoolExecutor | None = None) -> torch.Tensor:
    """[B, 3, S, S] model input in [0, 1] from PIL images, by a model's own `preprocess` (in threads if given)."""
    return torch.stack(list(pool.map(preprocess, images) if pool is not None else map(preprocess, images)))


def _row_chunks(dataset, total, batch_size, done=0) -> Iterator[list[dict]]:
    """Rows `done` to `total` in chunks; a stream stops at row `total` without asking for one more row (which
    could open the next shard), and reads past the rows done before without decoding them."""
    if isinstance(dataset, datasets.Dataset):
        for start in range(done, total, batch_size):
            chunk = dataset[start : min(start + batch_size, total)]
            yield [dict(zip(chunk, values)) for values in zip(*chunk.values())]
        return
    chunk = []
    for row in itertools.islice(dataset, done, total):
        chunk.append(row)
        if len(chunk) == batch_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _load_row(row: dict, *, data: LabeledData) -> tuple[Image.Image, Image.Image | None]:
    image = to_rgb(as_pil(row[data.image_column], data.image_column))
    mask = None
    if data.box_column:
        mask = _box_mask(row[data.box_column], image.size, data.box_format, data.box_column)
    elif data.mask_column:
        mask = _mask_image(row[data.mask_column], data.mask_column, image.size)
    return image, mask


def _box_mask(boxes, image_size: tuple[int, int], box_format: str, column: str) -> Image.Image:
    """One box [x0, y0, x1, y1] (x1, y1 exclusive) or a list of boxes -> foreground mask (their union)."""
    array = box_array(boxes, column)
    width, height = image_size
    mask = np.zeros((height, width), dtype=np.uint8)
    for x0, y0, a, b in array:
        x1, y1 = (x0 + a, y0 + b) if box_format == "xywh" else (a, b)
        mask[max(0, int(round(y0))) : max(0, int(round(y1))), max(0, int(round(x0))) : max(0, int(round(x1)))] = 255
    return Image.fromarray(mask)


def _mask_image(value, column: str, image_size: tuple[int, int]) -> Image.Image:
    mask = np.asarray(as_pil(value, column).convert("L")) > 0
    if mask.shape[::-1] != tuple(image_size):
        raise VizError(f"Masks in column '{column}' are {mask.shape[::-1]} but images are {image_size}: masks must match their images.")
    return Image.fromarray(mask.astype(np.uint8) * 255)


# --- boxes ----------------------------------------------------------------------------------------------------
def box_array(boxes, column: str, row: int | None = None) -> np.ndarray:
    """[K, 4] finite numbers from one box cell (a box, a list of boxes, or None for none). Anything else is refused:
    NaN, infinite or 3-number "boxes" mean a wrong column or format, which no skipped row would fix."""
    if boxes is None:
        return np.zeros((0, 4))
    try:
        array = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError):  # strings, ragged lists
        array = None
    if array is None or array.size % 4 or not np.isfinite(array).all():
        where = f"Row {row} of column '{column}'" if row is not None else f"A row of column '{column}'"
        raise VizError(f"{where} holds {reprlib.repr(boxes)}, not boxes of 4 finite numbers (x0, y0, x1, y1 pixels)",
                       option="box_format", value=reprlib.repr(boxes),
                       fix="{box_column:pass with} a column of boxes, {option} xywh for x, y, width, height, "
                           "{mask_column}, or fix the row.")
    return array.reshape(-1, 4)


def check_boxes(data: LabeledData, max_images: int | None = None) -> None:
    """Refuse unreadable boxes among the rows a run will use before any image is decoded (datasets read whole;
    streamed rows are checked as they arrive), so a bad row costs no work."""
    if not data.box_column or not isinstance(data.dataset, datasets.Dataset):
        return
    rows = len(data.dataset) if max_images is None else max(0, min(max_images, len(data.dataset)))
    values = data.dataset.select_columns([data.box_column])[:rows][data.box_column]
    for row, boxes in enumerate(values):
        box_array(boxes, data.box_column, row)
