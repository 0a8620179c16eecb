"""Occlusion (Naseer et al. 2021, *Intriguing Properties of Vision Transformers*): accuracy against the fraction
of image patches dropped, at random and, when the dataset has boxes or masks, the object's patches first
(foreground-first) or last (background-first). Their finding: ViTs stay accurate with many patches gone (up to 60%
top-1 on ImageNet with 80% of the patches occluded at random), CNNs do not.

What "drop" means: for a ViT, by default (`drop="tokens"`), a dropped patch's token is removed from the sequence
after the position embeddings are added, so the model never sees it and the kept tokens keep their positions.
Naseer et al.'s PatchDrop sets the patch's pixels to zero instead, which feeds the model a black patch: a token
it rarely saw in training that still takes part in attention, so it measures tolerance of an odd-looking patch as
much as of missing information. `drop="pixels"` does that (with the fill colour): the only way for a CNN (it has
no tokens; its patches are CNN_PATCH-pixel cells), and the paper's own protocol for a ViT.
"""

from __future__ import annotations

from ..errors import VizError
from ..models.stages import token_stages
from .common import AnalysisResult, base_settings, load_classifiers, open_data, short_name, sweep
from .data import BOX_COLUMN_NAMES, MASK_COLUMN_NAMES, check_boxes
from .foreground_background import FILLS
from .patches import BACKGROUND_FIRST, FOREGROUND_FIRST, RANDOM, drop_order, foreground_share, image_seed, keep_tokens, mask_cells
from .plots import Line, Panel, line_figure
from .probe import with_probe_head

EXPERIMENT = "occlusion"
DEFAULT_FRACTIONS = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9)
DROPS = ("tokens", "pixels")
CNN_PATCH = 16  # pixels: the patch of a CNN's grid (ViT-B/16's)


def check_fractions(fractions) -> list[float]:
    try:
        values = sorted({float(f) for f in fractions})
    except (TypeError, ValueError):
        values = []
    if not values or values[0] < 0 or values[-1] > 1:
        raise VizError(f"Fractions of patches dropped must be numbers from 0 to 1, not {fractions}",
                       option="fractions", value=fractions, fix="{option:use e.g.} 0,0.25,0.5,0.75.")
    return values


class Dropper:
    """One classifier with patches dropped on its grid: as tokens (ViTs) or as filled pixel cells."""

    def __init__(self, clf, drop: str, fill: float):
        self.clf, self.fill = clf, fill
        self.drop = drop if clf.kind == "vit" else "pixels"
        model = clf.vision_model
        self.grid = clf.image_size // (model.patch_size if model is not None else CNN_PATCH) or 1
        self.stages = None
        if self.drop == "tokens":
            self.stages = with_probe_head(token_stages(model), clf.probe)
            self.stages.need_head()

    def logits(self, images, dropped_sets: dict) -> dict:
        """{key: logits} for each key's [B, k] patches dropped from the prepared images."""
        if self.drop == "pixels":
            return {key: self.clf.logits(mask_cells(images, self.grid, dropped, self.fill))
                    for key, dropped in dropped_sets.items()}
        model, stages = self.clf.vision_model, self.stages
        with model.autocast():
            tokens = stages.embed(model.normalize(images.to(model.device)))
            if tokens.shape[1] - stages.num_prefix != self.grid * self.grid:
                raise VizError(f"'{model.model_id}' gives {tokens.shape[1] - stages.num_prefix} patch tokens, not a "
                               f"{self.grid}x{self.grid} grid", option="drop", fix="{option:use} pixels.")
            return {key: stages.logits(stages.run(keep_tokens(tokens, stages.num_prefix, dropped))).float()
                    for key, dropped in dropped_sets.items()}


def occlusion(
    models, dataset, *, fractions=DEFAULT_FRACTIONS, drop="tokens", fill="black", box_column=None, mask_column=None,
    box_format="xyxy", split=None, max_images=None, batch_size=32, streaming=False, image_column=None,
    label_column=None, progress=True, checkpoint=None, token=None, **load_options,
) -> AnalysisResult:
    """Top-1/top-5 of each model (ViTs and CNNs) with each fraction of its patches dropped, for each drop order."""
    fractions = check_fractions(fractions)
    if drop not in DROPS:
        raise VizError(f"Unknown drop '{drop}'", option="drop", value=drop, fix=f"{{option:use}} {' or '.join(DROPS)}.")
    if fill not in FILLS:
        raise VizError(f"Unknown fill '{fill}': use one of {', '.join(FILLS)}.")
    classifiers = load_classifiers(models, allow_cnn=True, token=token, **load_options)
    droppers = {c.model_id: Dropper(c, drop, FILLS[fill]) for c in classifiers}
    opening = dict(split=split, image_column=image_column, label_column=label_column, streaming=streaming,
                   max_images=max_images, token=token, box_format=box_format)
    data = open_data(dataset, box_column=box_column, mask_column=mask_column, **opening)
    if not (data.box_column or data.mask_column) and _has_region_column(data):
        data = open_data(dataset, need_region=True, **opening)
    check_boxes(data, max_images)
    orders = [RANDOM] + ([FOREGROUND_FIRST, BACKGROUND_FIRST] if data.box_column or data.mask_column else [])

    def score(clf, batch, prepare):
        dropper = droppers[clf.model_id]
        images, cells = prepare(batch.images), dropper.grid ** 2
        seeds = [image_seed(image, dropper.grid) for image in batch.images]
        share = None
        if len(orders) > 1:
            share = foreground_share(prepare([mask.convert("RGB") for mask in batch.masks])[:, :1], dropper.grid)
        dropped = {}
        for order in orders:
            ranked = drop_order(seeds, cells, order, share)
            for f in fractions:
                dropped[(order, f)] = ranked[:, : round(f * cells)]
        return dropper.logits(images, dropped)

    counts, seen = sweep(classifiers, data, score, max_images=max_images, batch_size=batch_size, progress=progress,
                         desc="occlusion", checkpoint=checkpoint)
    settings = {**base_settings(EXPERIMENT, classifiers, data, split, max_images, seen), "fractions": fractions,
                "drop": drop, "fill": fill, "orders": orders, "region_column": data.box_column or data.mask_column}
    rows, panels = [], []
    for order in orders:
        lines = []
        for clf in classifiers:
            dropper = droppers[clf.model_id]
            accs = [counts[(clf.model_id, (order, f))] for f in fractions]
            rows += [{"model_id": clf.model_id, "kind": clf.kind, "drop": dropper.drop, "grid": dropper.grid,
                      "order": order, "fraction": f, "patches_dropped": round(f * dropper.grid ** 2),
                      "top1": a.top1, "top5": a.top5} for f, a in zip(fractions, accs)]
            lines.append(Line(_label(clf, dropper), fractions, [a.top1 for a in accs]))
        panels.append(Panel(f"{order} drop", "fraction of patches dropped", "top-1 accuracy (%)", lines))
    figure = line_figure(f"Occlusion: {settings['dataset']} ({settings['split']}, {seen} images)", panels)
    notes = [
        f"{_label(clf, droppers[clf.model_id])} top-1 by fraction dropped ({', '.join(f'{f:g}' for f in fractions)}): "
        + "; ".join(f"{order} " + ", ".join(f"{counts[(clf.model_id, (order, f))].top1:.1f}" for f in fractions)
                    for order in orders)
        for clf in classifiers
    ]
    return AnalysisResult(EXPERIMENT, rows, settings, figure, notes)


def _label(clf, dropper: Dropper) -> str:
    return f"{short_name(clf.model_id)} ({clf.kind}, {dropper.drop} on {dropper.grid}x{dropper.grid})"


def _has_region_column(data) -> bool:
    """A box or mask column the data loop would find by name (foreground_background's names)."""
    names = set(BOX_COLUMN_NAMES) | set(MASK_COLUMN_NAMES)
    return any(str(column).lower() in names for column in (data.dataset.features or {}))
