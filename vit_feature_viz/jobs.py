"""The long-running jobs behind the CLI (render, examples, gallery), written so that a stopped run resumes.

Finished features are saved batch by batch; a rerun skips features already in the folder with the same settings.
Under `accelerate launch` each process renders its share and writes its own shard.
"""

from __future__ import annotations

import time
from pathlib import Path

from .gallery import GalleryFolder
from .models import LOGITS, VisionModel
from .objectives import Channel
from .patchmap import patch_map
from .render import plan_render, render_batches
from .scale import Workers, current_workers


def render_to_folder(
    model: VisionModel,
    out: str | Path,
    layer: int,
    features,
    *,
    objective: str = "feature",
    recipe: str = "paper",
    steps: int | None = None,
    image_size: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = True,
    workers: Workers | None = None,
) -> list[int]:
    """Render features into the gallery folder `out`; returns the features this process rendered."""
    workers = workers or current_workers()
    plan = plan_render(model, layer, features, objective, recipe, steps, image_size, batch_size, seed)
    folder = GalleryFolder(out)
    done = _finished(folder, model.model_id, plan, seed)
    todo = workers.mine([f for f in plan.features if f not in done])
    workers.barrier()  # every process has read the folder before anyone writes to it
    pending = _PendingRows(folder, f"train-r{workers.rank}", {"backend": model.backend})
    try:
        for batch in render_batches(
            model, plan.layer, todo, objective=plan.objective, recipe=plan.recipe, steps=plan.steps,
            image_size=plan.image_size, seed=seed, batch_size=plan.batch_size, progress=progress,
        ) if todo else ():
            pending.extend([_with_patch_map(model, r.to_row(), plan.objective) for r in batch])
    finally:
        pending.flush()  # an interrupted run keeps every finished feature
    workers.barrier()
    if workers.is_main and folder.exists():
        folder.write_card()
    return todo


def _with_patch_map(model: VisionModel, row: dict, objective) -> dict:
    """The paper's third view for the optimized image too: where in it the feature fires."""
    if isinstance(objective, Channel) and objective.kind != LOGITS:
        row["image_patch_map"] = patch_map(model, row["image"], row["layer"], row["feature"], objective, rendered=True)
    return row


class _PendingRows:
    """Finished rows waiting to be written: flushed every few minutes or rows, so a long run does not leave
    thousands of tiny shards, yet a crash loses at most that much work."""

    def __init__(self, folder: GalleryFolder, prefix: str, card_info: dict, max_rows: int = 64, max_seconds: float = 120):
        self.folder, self.prefix, self.card_info = folder, prefix, card_info
        self.max_rows, self.max_seconds = max_rows, max_seconds
        self.rows: list[dict] = []
        self.since = time.monotonic()

    def extend(self, rows: list[dict]) -> None:
        self.rows.extend(rows)
        if len(self.rows) >= self.max_rows or time.monotonic() - self.since >= self.max_seconds:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.folder.add(self.rows, shard_prefix=self.prefix, card_info=self.card_info)
        self.rows = []
        self.since = time.monotonic()


def _finished(folder: GalleryFolder, model_id: str, plan, seed: int) -> set[int]:
    """Features already rendered into the folder with exactly these settings."""
    if not folder.exists():
        return set()
    wanted = (model_id, plan.layer, plan.objective.name, plan.recipe.name, plan.steps, plan.image_size, seed)
    return {
        row["feature"]
        for row in folder.settings()
        if (row["model_id"], row["layer"], row["objective"], row["recipe"], row["steps"], row["image_size"], row["seed"])
        == wanted
        and row["activation"] is not None  # rows holding only dataset examples are not rendered yet
    }


def examples_to_folder(
    model: VisionModel,
    out: str | Path,
    layer: int,
    features,
    dataset: str,
    *,
    objective: str = "feature",
    top_k: int = 8,
    workers: Workers | None = None,
    **scan_options,
) -> int:
    """Scan a dataset once for the top-K images of every requested feature (scan_options: split, image_column,
    max_images, streaming, batch_size, progress); each process scans its shard and the main process writes."""
    from .examples import example_rows, merge_examples, scan_examples
    from .objectives import make_objective

    workers = workers or current_workers()
    found = scan_examples(model, int(layer), features, dataset, objective=objective, top_k=top_k,
                          num_shards=workers.world, shard_index=workers.rank, **scan_options)
    parts = workers.gather(found)
    if workers.is_main:
        rows = example_rows(model, int(layer), make_objective(objective, int(layer)).name, str(dataset),
                            merge_examples(parts, top_k))
        GalleryFolder(out).add(rows, card_info={"backend": model.backend})
    workers.barrier()
    return len(found)
