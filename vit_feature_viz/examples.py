"""Dataset examples: the images of a dataset that activate each feature most, with their patch maps.

One pass over the data serves every requested feature: each batch is scored on all channels at once and a running
top-k per feature keeps only row indices, scores and the pixels of current candidates, so memory does not grow
with the dataset. Row indices are always indices into the full split, which is what lets per-process scans
(`num_shards`/`shard_index`) be merged into exactly the answer of a single scan.
"""

from __future__ import annotations

import functools
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from PIL import Image

from .core.objectives import Channel, Objective, make_objective
from .core.patchmap import heatmap_overlay, patch_values_for
from .errors import VizError
from .image_datasets import as_pil, find_image_column, open_image_dataset, select_split, shard_batches, streams
from .images import to_pil
from .models.base import VisionModel
from .specs import parse_features
from .store.progress import Resumed, SavedProgress

DECODE_THREADS = min(8, os.cpu_count() or 1)


@dataclass
class Example:
    """One dataset image for one feature: its score, its row in the full split, and what the model saw."""

    score: float
    index: int
    image: Image.Image  # as the model saw it: through the checkpoint's own resize and crop
    patch_map: Image.Image | None  # overlay of the feature's per-patch values; None for objectives without (logit)


# --- opening a dataset ---------------------------------------------------------------------------------------


# --- reading rows ---------------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class ScanTarget:
    """The features of one layer a scan scores, checked against the model once (`plan_scan`): the scanner and
    the app's device workers take it as it is, and it pickles, so it crosses into another process."""

    model_id: str
    layer: int
    objective: Channel
    features: tuple[int, ...]


def plan_scan(model: VisionModel, layer: int, features, objective="feature", *,
              max_features: int | None = None) -> ScanTarget:
    """Every check of what a scan scores, before any dataset is opened. max_features: the most features one
    request may ask for (the app's cap), checked before any list is built."""
    objective = make_objective(objective, layer)
    if not isinstance(objective, Channel):
        raise VizError(
            f"Objective '{objective.name}' is a combination: dataset examples need one of feature, neuron, cls, "
            "residual or logit."
        )
    objective.check(model)
    wanted = parse_features(features, objective.num_channels(model), max_count=max_features)
    return ScanTarget(model.model_id, layer, objective, tuple(wanted))


def scan_examples(
    model: VisionModel,
    layer: int | None = None,
    features=None,
    dataset=None,
    *,
    target: ScanTarget | None = None,
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

    `features`: a spec ("7", "0-63", "all") or list; or instead of `layer`, `features` and `objective` a
    `target` from `plan_scan`, scanned as it is. `dataset`: a Hub id, a local folder, or an opened
    (Iterable)Dataset(Dict); `split=None` uses `default_split` (test, else validation, else train). `max_images` caps the rows of the split considered (the first `max_images`, shared by all
    shards, which a named dataset then streams); this process scans the rows whose index % `num_shards` == `shard_index`.
    `checkpoint`: a folder the scan saves its progress in after every batch and resumes from (a dataset given by
    name only); the caller removes it once the results are saved (`examples_to_folder` does). `token` reads a Hub
    dataset as in `open_image_dataset` (None: the local user's own login).
    """
    if dataset is None:
        raise TypeError("scan_examples needs a dataset: a Hub id, a folder, or an opened dataset.")
    target = target if target is not None else plan_scan(model, layer, features, objective)
    layer, objective, wanted = target.layer, target.objective, list(target.features)
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
        dataset = select_split(dataset, split)
        column = find_image_column(dataset, image_column)

    best = RunningTopK(len(wanted), top_k)
    # rows scanned, unreadable ones among them, and row -> uint8 pixels for the rows some feature currently keeps
    done, unreadable, candidates = saved.restore(best) if saved else (0, 0, {})
    if done:
        warnings.warn(f"Resumed a stopped scan: the {done} image(s) it had scanned are skipped.", Resumed, stacklevel=2)
    channels = torch.tensor(wanted)
    batches = shard_batches(
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
                    values = objective.example_values(model.activations(pixels.float() / 255, objective.needs))
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
    images = {i: to_pil(p) for i, p in candidates.items()}
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
        raise VizError(f"top_k must be at least 1, not {top_k}", option="top_k", value=top_k, fix="{option:use e.g.} 8.")
    if batch_size < 1:
        raise VizError(f"Batch size must be at least 1, not {batch_size}", option="scan_batch_size", value=batch_size,
                       fix="{option:use e.g.} 32.")
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
                maps[(position, row)] = heatmap_overlay(to_pil(candidates[row]), grid)
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

