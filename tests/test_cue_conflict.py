"""Cue conflict (vit_feature_viz/analysis/cue_conflict.py): rule models that read only the shape or only the colour
score shape bias 1 and 0 through the experiment itself, the exact conflict images of the built-in set, a resumed
run, and the trained built-in models."""

import csv
import warnings

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from vit_feature_viz.analysis import cue_conflict
from vit_feature_viz.analysis.cue_conflict import CueCounts
from vit_feature_viz.data.shapes import (
    CLASS_COLORS, CUE_CONFLICT, SHAPE_CLASSES, generate_cue_conflict, generate_shapes, shapes_dataset,
)
from vit_feature_viz.image_datasets import BUILTIN_SPLITS
from vit_feature_viz.errors import VizError
from vit_feature_viz.models.classifiers import ImageClassifier
from vit_feature_viz.store.progress import Resumed

CLASSES = ["tall", "wide"]  # class "tall" is a red upright bar, class "wide" a blue lying bar
COLOURS = {"tall": (220, 30, 30), "wide": (30, 30, 220)}
SIZE = 32


def _bar(shape: str, colour: str) -> Image.Image:
    image = np.full((SIZE, SIZE, 3), 128, np.uint8)
    if shape == "tall":
        image[4:28, 12:20] = COLOURS[colour]
    else:
        image[12:20, 4:28] = COLOURS[colour]
    return Image.fromarray(image)


def _two_cue_dataset() -> datasets.Dataset:
    """Every (shape, colour) pair: 2 x 3 conflict rows and 2 x 1 rows where both cues agree."""
    pairs = [("tall", "wide"), ("wide", "tall")] * 3 + [("tall", "tall"), ("wide", "wide")]
    label = datasets.ClassLabel(names=CLASSES)
    return datasets.Dataset.from_dict(
        {"image": [_bar(s, c) for s, c in pairs], "shape": [CLASSES.index(s) for s, _ in pairs],
         "colour": [CLASSES.index(c) for _, c in pairs]},
        features=datasets.Features({"image": datasets.Image(), "shape": label, "colour": label}))


def _foreground(images: torch.Tensor) -> torch.Tensor:
    return (images - 0.5).abs().amax(dim=1) > 0.2  # [B, S, S]: the bar, on a grey ground


def _shape_reader(images: torch.Tensor) -> torch.Tensor:
    """Logits [tall, wide] from the bar's extent only: taller than wide is "tall"."""
    bar = _foreground(images)
    height, width = bar.any(dim=2).sum(dim=1).float(), bar.any(dim=1).sum(dim=1).float()
    return torch.stack([height - width, width - height], dim=1)


def _colour_reader(images: torch.Tensor) -> torch.Tensor:
    """Logits [tall, wide] from the bar's colour only: red is "tall", blue is "wide"."""
    bar = _foreground(images)[:, None]
    red, blue = (images[:, 0:1] * bar).sum(dim=(1, 2, 3)), (images[:, 2:3] * bar).sum(dim=(1, 2, 3))
    return torch.stack([red - blue, blue - red], dim=1)


def _rule(name, rule) -> ImageClassifier:
    return ImageClassifier(model_id=f"rules/{name}", kind="rule", image_size=SIZE, class_names=CLASSES, _logits=rule)


def test_a_model_that_reads_only_colour_scores_shape_bias_0_and_one_that_reads_only_shape_scores_1():
    result = cue_conflict([_rule("shape-reader", _shape_reader), _rule("colour-reader", _colour_reader)],
                          _two_cue_dataset(), progress=False, batch_size=4)
    shape, colour = result.rows
    assert (shape["shape_bias"], colour["shape_bias"]) == (1.0, 0.0)
    assert (shape["shape_decisions"], shape["cue_decisions"], colour["shape_decisions"], colour["cue_decisions"]) \
        == (6, 0, 0, 6)
    assert shape["conflict_images"] == 6 and shape["agreeing_images"] == 2  # agreeing rows are no conflict
    assert result.settings["shape_column"] == "shape" and result.settings["cue_column"] == "colour"  # found by name


def test_decisions_for_a_third_class_do_not_count_for_either_cue():
    counts = CueCounts()
    # (decision, shape, cue): follows the shape, the cue, neither, neither, and a row with no conflict
    counts.add(torch.tensor([0, 1, 2, 2, 0]), shapes=torch.tensor([0, 0, 0, 1, 1]), cues=torch.tensor([1, 1, 1, 0, 1]))
    assert (counts.shape, counts.cue, counts.other, counts.agreeing) == (1, 1, 2, 1)
    assert counts.conflicts == 4 and counts.shape_bias == 0.5
    assert CueCounts(other=3).shape_bias is None


def test_the_builtin_conflict_images_draw_one_class_in_another_classs_colour():
    conflict, plain = generate_cue_conflict(60, seed=1), generate_shapes(60, variant="color", seed=1)
    assert (conflict.labels != conflict.cues).all()
    assert np.bincount(conflict.labels * 6 + conflict.cues, minlength=36).reshape(6, 6).tolist() == [
        [0 if s == c else 2 for c in range(6)] for s in range(6)]  # every ordered pair of classes, twice
    shape_colour = np.stack([image[mask].mean(0) / 255 for image, mask in zip(conflict.images, conflict.masks)])
    nearest = np.linalg.norm(shape_colour[:, None] - CLASS_COLORS[None], axis=-1).argmin(1)
    assert (nearest == conflict.cues).all()  # drawn in the cue class's colour
    fill = conflict.masks.sum((1, 2)) / np.prod(conflict.boxes[:, 2:] - conflict.boxes[:, :2], axis=1)
    plain_fill = plain.masks.sum((1, 2)) / np.prod(plain.boxes[:, 2:] - plain.boxes[:, :2], axis=1)
    for c in range(len(SHAPE_CLASSES)):  # the outlines are the shape class's: a ring fills less of its box, ...
        assert abs(fill[conflict.labels == c].mean() - plain_fill[plain.labels == c].mean()) < 0.12


def test_a_stopped_run_resumes_to_the_uninterrupted_result(tmp_path):
    data = _two_cue_dataset()
    whole = cue_conflict([_rule("shape-reader", _shape_reader)], data, progress=False, batch_size=2)
    calls = []

    def stopped_in_batch_3(images):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return _shape_reader(images)

    with pytest.raises(KeyboardInterrupt):
        cue_conflict([_rule("shape-reader", stopped_in_batch_3)], data, progress=False, batch_size=2,
                     checkpoint=tmp_path / "progress")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", Resumed)
        resumed = cue_conflict([_rule("shape-reader", _shape_reader)], data, progress=False, batch_size=2,
                               checkpoint=tmp_path / "progress")
    assert [str(w.message) for w in caught if w.category is Resumed] == [
        "Resumed a stopped run: the 4 image(s) it had classified are skipped."]
    assert resumed.rows == whole.rows and resumed.settings == whole.settings


def test_a_dataset_without_a_second_label_column_is_refused_in_one_line():
    with pytest.raises(VizError, match=r"has no cue column besides the shape column 'shape' \(columns: image, shape\): "
                                       "pass --cue-column NAME"):
        cue_conflict([_rule("shape-reader", _shape_reader)], _two_cue_dataset().remove_columns("colour"),
                     progress=False)
    with pytest.raises(VizError, match="has no cue column 'hue' besides the shape column 'shape'"):
        cue_conflict([_rule("shape-reader", _shape_reader)], _two_cue_dataset(), cue_column="hue", progress=False)


def test_the_colour_trained_builtin_follows_colour_and_the_shape_trained_one_follows_shape(tmp_path):
    """On exact conflict images (those of vit-feature-viz/shapes-cue-conflict's test split, fewer of them): the
    model trained where colour and shape both tell the class learned the colour (as ImageNet CNNs learned
    texture); the one trained with random colours, the shape."""
    conflicts = shapes_dataset(48, variant=CUE_CONFLICT, seed=BUILTIN_SPLITS["test"])
    result = cue_conflict(["vit-feature-viz/shapes-color-vit-a", "vit-feature-viz/shapes-shape-vit-a"], conflicts,
                          device="cpu", precision="fp32", progress=False)
    files = result.save(tmp_path / "g")
    assert files["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(files["table"]) as f:
        colour, shape = list(csv.DictReader(f))
    assert colour["cue_column"] == "color" and int(colour["conflict_images"]) == 48
    assert float(colour["shape_bias"]) < 0.1 and float(shape["shape_bias"]) > 0.8
    assert float(colour["cue_fraction"]) > 0.9 and float(shape["shape_fraction"]) > 0.5
    assert "shape bias" in result.summary()
