"""Patch shuffling (Naseer et al. 2021, *Intriguing Properties of Vision Transformers*): accuracy when the image is
cut into an N x N grid of tiles put back in random order, for several N. N = 1 is the unchanged image. Their
finding: ViTs (DeiT) stay far more accurate than CNNs as the grid grows, up to the ViT's own patch grid (14 x 14
tiles for a 224 px /16 model), where the spatial structure is gone but each patch is intact.

Tiles are shuffled in pixels for every model (ViTs and CNNs alike), after each model's own resize and crop; when N
does not divide the image size the remaining strip on the right and bottom stays in place.
"""

from __future__ import annotations

from ..errors import VizError
from .common import AnalysisResult, base_settings, load_classifiers, open_data, short_name, sweep
from .patches import image_seed, shuffle_tiles, tile_permutations
from .plots import Line, Panel, line_figure

EXPERIMENT = "patch_shuffle"
DEFAULT_GRIDS = (1, 2, 4, 8, 16)


def check_grids(grids, smallest_image: int) -> list[int]:
    try:
        values = sorted({int(float(g)) for g in grids}) if all(float(g).is_integer() for g in grids) else []
    except (TypeError, ValueError):
        values = []
    if not values or values[0] < 1 or values[-1] > smallest_image:
        raise VizError(f"Shuffle grids must be whole numbers of tiles per side from 1 to {smallest_image} (the "
                       f"smallest model input), not {grids}", option="grids", value=grids,
                       fix="{option:use e.g.} 1,2,4,8.")
    return values


def patch_shuffle(
    models, dataset, *, grids=DEFAULT_GRIDS, split=None, max_images=None, batch_size=32, streaming=False,
    image_column=None, label_column=None, progress=True, checkpoint=None, token=None, **load_options,
) -> AnalysisResult:
    """Top-1/top-5 of each model (ViTs and CNNs) on images whose N x N tiles are shuffled, for each N in `grids`."""
    classifiers = load_classifiers(models, allow_cnn=True, token=token, **load_options)
    grids = check_grids(grids, min(c.image_size for c in classifiers))
    data = open_data(dataset, split=split, image_column=image_column, label_column=label_column, streaming=streaming,
                     max_images=max_images, token=token)

    def score(clf, batch, prepare):
        images = prepare(batch.images)
        return {grid: clf.logits(shuffle_tiles(images, grid, tile_permutations(
                    [image_seed(image, grid) for image in batch.images], grid)))
                for grid in grids}

    counts, seen = sweep(classifiers, data, score, max_images=max_images, batch_size=batch_size, progress=progress,
                         desc="patch shuffle", checkpoint=checkpoint)
    settings = {**base_settings(EXPERIMENT, classifiers, data, split, max_images, seen), "grids": grids}
    rows, lines = [], []
    for clf in classifiers:
        accs = [counts[(clf.model_id, grid)] for grid in grids]
        patch = clf.vision_model.patch_size if clf.vision_model is not None else None
        rows += [{"model_id": clf.model_id, "kind": clf.kind, "grid": grid, "tiles": grid * grid,
                  "tile_pixels": clf.image_size // grid, "tile_is_whole_patches": bool(patch) and
                  (clf.image_size // grid) % patch == 0, "top1": a.top1, "top5": a.top5}
                 for grid, a in zip(grids, accs)]
        lines.append(Line(f"{short_name(clf.model_id)} ({clf.kind})", grids, [a.top1 for a in accs]))
    panel = Panel(f"{settings['dataset']} ({settings['split']}, {seen} images)", "grid N (N x N tiles shuffled)",
                  "top-1 accuracy (%)", lines, xscale="log", xticks=grids)
    figure = line_figure("Patch shuffling: tiles of an N x N grid in random order", [panel])
    notes = [f"{short_name(clf.model_id)} ({clf.kind}) top-1 by grid ({', '.join(map(str, grids))}): "
             + ", ".join(f"{counts[(clf.model_id, grid)].top1:.1f}" for grid in grids) for clf in classifiers]
    return AnalysisResult(EXPERIMENT, rows, settings, figure, notes)
