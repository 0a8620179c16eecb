"""Cue conflict (Geirhos et al. 2019: ImageNet CNNs follow texture where shape and texture disagree; ViTs follow
shape more often). On images whose shape says one class and whose other cue (colour, texture) says another, the
**shape bias** is the fraction of the decisions that follow the shape, among the decisions that follow either:

    shape bias = shape decisions / (shape decisions + cue decisions)

Decisions for a third class do not count (they are reported). The data is a dataset with two label columns: the
shape's class and the cue's (`shape_column`, `cue_column`); rows where both agree are no conflict and are
skipped. `vit-feature-viz/shapes-cue-conflict` is generated exactly for the built-in shapes models: a shape of
one class drawn in the colour another class has in the colour-coded set (`data.shapes.generate_cue_conflict`).
ViTs and CNNs compare side by side; models without a head read through a linear probe.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import datasets
import torch

from ..errors import VizError
from ..store.progress import SavedProgress
from .common import AnalysisResult, base_settings, load_classifiers, open_data, resumed_state, short_name
from .data import DECODE_THREADS, LabeledData, LabelMap, batches, prepare
from .plots import bar_figure

EXPERIMENT = "cue_conflict"
SHAPE_COLUMN_NAMES = ("shape", "shape_label")
CUE_COLUMN_NAMES = ("color", "colour", "texture", "cue", "texture_label", "color_label")


@dataclass
class CueCounts:
    """Decisions on conflict images: following the shape, following the cue, or neither."""

    shape: int = 0
    cue: int = 0
    other: int = 0
    agreeing: int = 0  # rows whose shape and cue are the same class: no conflict, not scored

    def add(self, predicted: torch.Tensor, shapes: torch.Tensor, cues: torch.Tensor) -> None:
        conflict = shapes != cues
        self.agreeing += int((~conflict).sum())
        predicted, shapes, cues = predicted[conflict], shapes[conflict], cues[conflict]
        self.shape += int((predicted == shapes).sum())
        self.cue += int((predicted == cues).sum())
        self.other += int(((predicted != shapes) & (predicted != cues)).sum())

    @property
    def conflicts(self) -> int:
        return self.shape + self.cue + self.other

    @property
    def shape_bias(self) -> float | None:
        """None when no decision followed either cue."""
        decided = self.shape + self.cue
        return self.shape / decided if decided else None


def cue_conflict(
    models, dataset, *, shape_column=None, cue_column=None, split=None, max_images=None, batch_size=32,
    streaming=False, image_column=None, label_column=None, progress=True, checkpoint=None, token=None, probe=None,
    **load_options,
) -> AnalysisResult:
    """Shape bias of each model (ViTs and CNNs) on the dataset's conflict rows. `shape_column` defaults to a
    column named shape (else `label_column` or the label column found), `cue_column` to the first of color,
    colour, texture, cue."""
    data = open_data(dataset, split=split, image_column=image_column, streaming=streaming, max_images=max_images,
                     label_column=shape_column or label_column, need_label=False, token=token)
    columns = _columns(data)
    shape = shape_column or label_column or _found(columns, SHAPE_COLUMN_NAMES) or data.label_column
    cue = cue_column or _found(columns, CUE_COLUMN_NAMES)
    if shape is None:
        raise VizError(f"Dataset '{data.name}' has no shape label column (columns: {', '.join(columns)})",
                       option="shape_column", fix="{option:pass} NAME (the class each image's shape shows).")
    if cue is None or cue not in columns or cue == shape:
        raise VizError(
            f"Dataset '{data.name}' has no cue column{f' {cue!r}' if cue else ''} besides the shape column "
            f"'{shape}' (columns: {', '.join(columns)})", option="cue_column",
            fix="{option:pass} NAME (the colour or texture class of each image) and {shape_column} NAME.")
    data = dataclasses.replace(data, label_column=shape, label_names=_class_names(data, shape), extra_columns=(cue,))
    classifiers = load_classifiers(models, allow_cnn=True, probe=probe, token=token, **load_options)
    cue_data = dataclasses.replace(data, label_column=cue, label_names=_class_names(data, cue))
    maps = {c.model_id: (LabelMap(data, c.class_names, c.model_id), LabelMap(cue_data, c.class_names, c.model_id))
            for c in classifiers}
    saved = None
    if checkpoint is not None:
        saved = SavedProgress(checkpoint, {"models": [c.model_id for c in classifiers], "dataset": data.name,
                                           "columns": [data.label_column, cue], "max_images": max_images,
                                           "batch_size": batch_size})
    counts, seen = _restored(saved, classifiers)
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        for batch in batches(data, max_images=max_images, batch_size=batch_size, progress=progress,
                             desc="cue conflict", done=seen):
            seen += len(batch.images)
            for clf in classifiers:
                shape_map, cue_map = maps[clf.model_id]
                predicted = clf.logits(prepare(batch.images, clf.preprocess, pool)).argmax(-1).cpu()
                counts[clf.model_id].add(predicted, shape_map(batch.labels), cue_map(batch.extra[cue]))
            if saved:
                saved.save({"seen": seen, "counts": {key: vars(c) for key, c in counts.items()}})
    if not seen:
        raise VizError(f"Dataset '{data.name}' gave no images", option="max_images", fix="check the split and {option}.")
    settings = {**base_settings(EXPERIMENT, classifiers, data, split, max_images, seen),
                "shape_column": data.label_column, "cue_column": cue}
    rows = [_row(clf, counts[clf.model_id]) for clf in classifiers]
    if not any(r["conflict_images"] for r in rows):
        raise VizError(f"No row of '{data.name}' has a shape and a {cue} of different classes: there is no "
                       "conflict to score; pick a cue-conflict dataset (e.g. vit-feature-viz/shapes-cue-conflict).")
    percent = lambda v: 100.0 * (v or 0.0)  # noqa: E731
    series = {
        "shape bias": [percent(r["shape_bias"]) for r in rows],
        "follows the shape (% of conflict images)": [percent(r["shape_fraction"]) for r in rows],
        f"follows the {cue} (% of conflict images)": [percent(r["cue_fraction"]) for r in rows],
    }
    figure = bar_figure(f"Cue conflict: shape against {cue}\n{settings['dataset']} ({settings['split']}, "
                        f"{rows[0]['conflict_images']} conflict images)",
                        [f"{short_name(c.model_id)} ({c.kind})" for c in classifiers], series, "%")
    notes = [f"{short_name(r['model_id'])}: shape bias {_fraction(r['shape_bias'])} ({r['shape_decisions']} shape, "
             f"{r['cue_decisions']} {cue}, {r['other_decisions']} other decisions of {r['conflict_images']} conflict "
             "images)" for r in rows]
    return AnalysisResult(EXPERIMENT, rows, settings, figure, notes)


def _columns(data: LabeledData) -> list[str]:
    features = data.dataset.features
    return list(features) if features is not None else list(data.dataset.column_names or [])


def _found(columns: list[str], candidates) -> str | None:
    return next((c for c in columns if c.lower() in candidates), None)


def _class_names(data: LabeledData, column: str) -> list[str] | None:
    feature = (data.dataset.features or {}).get(column)
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def _row(clf, counts: CueCounts) -> dict:
    conflicts = counts.conflicts
    return {
        "model_id": clf.model_id, "kind": clf.kind, "conflict_images": conflicts, "agreeing_images": counts.agreeing,
        "shape_decisions": counts.shape, "cue_decisions": counts.cue, "other_decisions": counts.other,
        "shape_bias": counts.shape_bias, "shape_fraction": counts.shape / conflicts if conflicts else None,
        "cue_fraction": counts.cue / conflicts if conflicts else None,
    }


def _fraction(value: float | None) -> str:
    return "n/a (no decision followed either cue)" if value is None else f"{value:.2f}"


def _restored(saved: SavedProgress | None, classifiers) -> tuple[dict[str, CueCounts], int]:
    state = resumed_state(saved, "classified")
    if not state:
        return {c.model_id: CueCounts() for c in classifiers}, 0
    return {key: CueCounts(**value) for key, value in state["counts"].items()}, state["seen"]
