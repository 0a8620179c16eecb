"""Foreground and background (paper, Table 2): top-1/top-5 on images that keep only the object (the box or
mask; the rest filled) and only the background (the object filled), each divided by the full-image accuracy.
A model that ignores the background keeps 100% on foreground-only images. Paper (top-5, normalized): ViT-B/16
95.64 / 31.59, ResNet-50 89.69 / 18.69. CNN checkpoints (timm or transformers ResNets, ...) compare side by side."""

from __future__ import annotations

from PIL import Image

from ..errors import VizError
from .common import AnalysisResult, base_settings, load_classifiers, open_data, short_name, sweep
from .data import check_boxes
from .plots import bar_figure

EXPERIMENT = "foreground_background"
FILLS = {"black": 0.0, "grey": 0.5}
CONDITIONS = ("full", "foreground", "background")


def split_by_mask(image: Image.Image, mask: Image.Image, fill: float) -> tuple[Image.Image, Image.Image]:
    """(foreground only, background only) of an image, at its own resolution, before any model's resizing; `mask`
    is "L" with 255 on the object."""
    filled = Image.new("RGB", image.size, (round(fill * 255),) * 3)
    return Image.composite(image, filled, mask), Image.composite(filled, image, mask)


def foreground_background(
    models, dataset, *, fill: str = "black", box_column=None, mask_column=None, box_format="xyxy", split=None,
    max_images=None, batch_size=32, streaming=False, image_column=None, label_column=None, progress=True,
    checkpoint=None, token=None, **load_options,
) -> AnalysisResult:
    """Full, foreground-only and background-only accuracy of each model (ViTs and CNNs)."""
    if fill not in FILLS:
        raise VizError(f"Unknown fill '{fill}': use one of {', '.join(FILLS)}.")
    classifiers = load_classifiers(models, allow_cnn=True, token=token, **load_options)
    data = open_data(dataset, split=split, image_column=image_column, label_column=label_column, streaming=streaming,
                     max_images=max_images, box_column=box_column, mask_column=mask_column, need_region=True,
                     box_format=box_format, token=token)
    check_boxes(data, max_images)

    def score(clf, batch, prepare):
        parts = [split_by_mask(image, mask, FILLS[fill]) for image, mask in zip(batch.images, batch.masks)]
        return {"full": clf.logits(prepare(batch.images)), "foreground": clf.logits(prepare([f for f, _ in parts])),
                "background": clf.logits(prepare([b for _, b in parts]))}

    counts, seen = sweep(classifiers, data, score, max_images=max_images, batch_size=batch_size, progress=progress,
                         desc="foreground/background", checkpoint=checkpoint)
    settings = {**base_settings(EXPERIMENT, classifiers, data, split, max_images, seen), "fill": fill,
                "region_column": data.box_column or data.mask_column}
    rows = []
    for clf in classifiers:
        full = counts[(clf.model_id, "full")]
        for condition in CONDITIONS:
            acc = counts[(clf.model_id, condition)]
            rows.append({
                "model_id": clf.model_id, "kind": clf.kind, "condition": condition, "top1": acc.top1, "top5": acc.top5,
                "top1_normalized": _ratio(acc.top1, full.top1), "top5_normalized": _ratio(acc.top5, full.top5),
            })
    by = {(r["model_id"], r["condition"]): r for r in rows}
    ids = [c.model_id for c in classifiers]
    series = {
        f"{condition} only, top-{k} / full": [by[(m, condition)][f"top{k}_normalized"] or 0.0 for m in ids]
        for condition in ("foreground", "background") for k in (1, 5)
    }
    figure = bar_figure(
        f"Foreground-only and background-only accuracy, relative to full images\n"
        f"{settings['dataset']} ({split}, {seen} images, {fill} fill)",
        [f"{short_name(m)} ({c.kind})" for m, c in zip(ids, classifiers)], series, "% of full-image accuracy",
    )
    notes = [
        f"{short_name(m)}: full {by[(m, 'full')]['top1']:.1f}% top-1 / {by[(m, 'full')]['top5']:.1f}% top-5; "
        f"normalized top-1 / top-5: foreground-only {_pct(by[(m, 'foreground')])}, background-only "
        f"{_pct(by[(m, 'background')])}"
        for m in ids
    ]
    return AnalysisResult(EXPERIMENT, rows, settings, figure, notes)


def _pct(row) -> str:
    return " / ".join("n/a" if row[k] is None else f"{row[k]:.1f}" for k in ("top1_normalized", "top5_normalized"))


def _ratio(part: float, whole: float) -> float | None:
    return 100.0 * part / whole if whole > 0 else None
