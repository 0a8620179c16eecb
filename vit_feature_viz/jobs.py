"""The long-running jobs behind the CLI (render, examples, gallery), written so that a stopped run resumes.

The destination is checked before any work. Every finished batch is on disk before the next starts (a killed run
loses only the batch in progress); a rerun skips features already in the folder with the same settings.
Under `accelerate launch` each process renders its share and writes its own shard.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .core.accentuate import accentuate, accentuated_name, read_image
from .core.objectives import Channel, make_objective
from .core.patchmap import draw_patch_map
from .core.recipes import DEFAULT_RECIPE
from .core.render import plan_render, render_planned
from .core.scale import Workers, current_workers
from .models import LOGITS, VisionModel
from .store.folder import GalleryFolder


def render_to_folder(
    model: VisionModel,
    out: str | Path,
    layer: int,
    features,
    *,
    objective="feature",
    recipe: str = DEFAULT_RECIPE,
    steps: int | None = None,
    image_size: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = True,
    workers: Workers | None = None,
    diversity: int = 1,
) -> list[int]:
    """Render features into the gallery folder `out`; returns the features this process rendered.

    objective: a name or an Objective (a direction, a negative: see core.objectives.make_objective); diversity:
    N images per feature, saved as the objective's facets."""
    workers = workers or current_workers()
    plan = plan_render(model, layer, features, objective=objective, recipe=recipe, steps=steps,
                       image_size=image_size, batch_size=batch_size, seed=seed, diversity=diversity)
    folder = GalleryFolder(out)
    folder.check_destination()
    done = _finished(folder, model.model_id, plan)
    todo = workers.mine([f for f in plan.features if f not in done])
    workers.barrier()  # every process has read the folder before anyone writes to it
    shards = _ShardWriter(folder, f"train-r{workers.rank}", {"backend": model.backend})
    mine = dataclasses.replace(plan, features=tuple(todo))  # a share of a checked plan needs no second check
    for batch in render_planned(model, mine, progress=progress) if todo else ():
        shards.write([with_patch_map(model, r.to_row(), plan.objective) for r in batch])
    workers.barrier()
    if workers.is_main and folder.exists():
        folder.write_card()
    return todo


def accentuate_to_folder(model: VisionModel, out: str | Path, layer: int, features, image, *, objective="feature",
                         weight: float | None = None, steps: int | None = None, image_size: int | None = None,
                         seed: int = 0) -> list[str]:
    """Accentuate `image` (a file) for each of `features` into the gallery folder `out`, one row per feature
    under a name holding the image's hash and the weight (core/accentuate.py); returns this process's objective
    names. The image, the folder and the features are checked before any work, the other settings on the first
    feature, before any row is written. Under `accelerate launch` each process takes its share of the features."""
    from .specs import parse_features, whole_number

    picture, sha256 = read_image(image)
    layer = whole_number(layer, "layer")
    model.check_layer(layer)
    objective = make_objective(objective, layer)
    objective.check(model)
    chosen = current_workers().mine(parse_features(features, objective.num_channels(model), seed))
    folder = GalleryFolder(out)
    folder.check_destination()
    names = []
    for feature in chosen:
        result = accentuate(model, picture, layer, feature, objective=objective, steps=steps, weight=weight,
                            image_size=image_size, seed=seed)
        result.image_sha256 = sha256  # of the file's bytes, which the PIL image handed over no longer has
        result.objective = accentuated_name(objective, result.weight, sha256, Path(image).name)
        folder.add([with_patch_map(model, result.to_row(), objective)], card_info={"backend": model.backend})
        names.append(result.objective)
    return names


def export_pngs(out: str | Path, png_folder: str | Path, model_id: str, layer: int, objective) -> list[Path]:
    """Each image of one layer and objective (a name, or several: a diverse set's facets) in the gallery `out` as
    a PNG file in `png_folder`, to look at with any image viewer (the gallery folder holds only the dataset's own
    files)."""
    target = Path(png_folder)
    target.mkdir(parents=True, exist_ok=True)
    names = {objective} if isinstance(objective, str) else set(objective)
    written = []
    folder = GalleryFolder(out)
    for name in sorted(names):
        for feature, image in folder.layer_images(model_id, layer, name):  # only these rows are read
            path = target / f"layer{layer}-{file_safe(name)}-feature{feature}.png"
            image.save(path)
            written.append(path)
    return written


def file_safe(name: str) -> str:
    """An objective name as part of a file name (a direction's name holds its file's name, spaces and a colon)."""
    return "".join(c if c.isalnum() or c in "-_.()," else "_" for c in name)


def with_patch_map(model: VisionModel, row: dict, objective) -> dict:
    """The paper's third view for the optimized image too: where in it the feature fires (`objective` and the
    row's feature come from a checked plan, so they are drawn as they are)."""
    if isinstance(objective, Channel) and objective.kind != LOGITS:
        row["image_patch_map"] = draw_patch_map(model, row["image"], objective, row["feature"], rendered=True)
    return row


class _ShardWriter:
    """Writes each finished batch at once, appended to this process's current shard (rewritten atomically, so
    a kill at any moment leaves the last good version), and starts a new shard every `max_rows` rows: durable
    without a shard per batch."""

    def __init__(self, folder: GalleryFolder, prefix: str, card_info: dict, max_rows: int = 64):
        self.folder, self.prefix, self.card_info, self.max_rows = folder, prefix, card_info, max_rows
        self.shard, self.rows_in_shard = None, 0

    def write(self, rows: list[dict]) -> None:
        if self.shard is None or self.rows_in_shard >= self.max_rows:
            self.shard, self.rows_in_shard = self.folder.new_shard_path(self.prefix), 0
        self.folder.add(rows, card_info=self.card_info, into=self.shard)
        self.rows_in_shard += len(rows)


def _finished(folder: GalleryFolder, model_id: str, plan) -> set[int]:
    """Features already rendered into the folder with exactly these settings (every facet of a diverse set)."""
    if not folder.exists():
        return set()
    wanted = (model_id, plan.layer, plan.recipe.name, plan.steps, plan.image_size, plan.seed)
    names = plan.objective_names()
    found: dict[int, set[str]] = {}
    for row in folder.settings():
        if ((row["model_id"], row["layer"], row["recipe"], row["steps"], row["image_size"], row["seed"]) == wanted
                and row["objective"] in names
                and row["activation"] is not None):  # rows holding only dataset examples are not rendered yet
            found.setdefault(row["feature"], set()).add(row["objective"])
    return {feature for feature, seen in found.items() if len(seen) == len(names)}


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
    max_images, streaming, batch_size, progress); each process scans its shard and the main process writes.

    Each process saves its scan's progress under `out/.progress/` after every batch: a stopped run (even killed)
    resumes there when the same command runs again, and the progress goes once the rows are in the gallery."""
    from .examples import example_rows, merge_examples, plan_scan, scan_examples
    from .store.progress import clear_progress, progress_folder

    workers = workers or current_workers()
    GalleryFolder(out).check_destination()  # before the scan, not after it
    target = plan_scan(model, int(layer), features, objective)  # checked once: the scan takes it as it is
    command = {key: value for key, value in scan_options.items() if key != "progress"}
    checkpoint = progress_folder(out, f"examples-r{workers.rank}", {
        "model": model.model_id, "layer": target.layer, "features": features, "dataset": str(dataset),
        "objective": target.objective.name, "top_k": top_k, "world": workers.world, **command})
    found = scan_examples(model, dataset=dataset, target=target, top_k=top_k, num_shards=workers.world,
                          shard_index=workers.rank, checkpoint=checkpoint, **scan_options)
    parts = workers.gather(found)
    if workers.is_main:
        rows = example_rows(model, target.layer, target.objective.name, str(dataset), merge_examples(parts, top_k))
        GalleryFolder(out).add(rows, card_info={"backend": model.backend})
    workers.barrier()
    clear_progress(checkpoint)  # every process's rows are in the gallery now
    return len(found)
