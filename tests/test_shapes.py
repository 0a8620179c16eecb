"""The procedural shapes set: deterministic, honest boxes and masks, and variants whose colours mean what they say."""

import numpy as np
import pytest

from vit_feature_viz.data import SHAPE_CLASSES, VARIANTS, generate_shapes, shapes_dataset


def _mean_shape_colours(shapes):
    """Mean RGB of each image's shape pixels."""
    return np.stack([image[mask].mean(0) for image, mask in zip(shapes.images, shapes.masks)])


def _nearest_centroid_accuracy(train, test):
    """How well the shape's colour alone predicts the class on held-out images."""
    colours = _mean_shape_colours(train)
    centroids = np.stack([colours[train.labels == c].mean(0) for c in range(len(SHAPE_CLASSES))])
    test_colours = _mean_shape_colours(test)
    predicted = np.linalg.norm(test_colours[:, None] - centroids[None], axis=-1).argmin(1)
    return float((predicted == test.labels).mean())


def test_arrays_have_the_agreed_shapes_and_types():
    shapes = generate_shapes(30, variant="color", size=48, seed=1)
    assert shapes.images.shape == (30, 48, 48, 3) and shapes.images.dtype == np.uint8
    assert shapes.labels.shape == (30,) and shapes.labels.dtype == np.int64
    assert shapes.boxes.shape == (30, 4) and shapes.boxes.dtype == np.int64
    assert shapes.masks.shape == (30, 48, 48) and shapes.masks.dtype == bool
    assert shapes.class_names == SHAPE_CLASSES == ("disc", "square", "triangle", "ring", "bar", "cross")
    assert np.bincount(shapes.labels, minlength=6).tolist() == [5] * 6  # balanced


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_seed_same_images_other_seed_other_images(variant):
    a, b = generate_shapes(12, variant=variant, seed=7), generate_shapes(12, variant=variant, seed=7)
    for field in ("images", "labels", "boxes", "masks"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert not np.array_equal(a.images, generate_shapes(12, variant=variant, seed=8).images)


@pytest.mark.parametrize("variant", VARIANTS)
def test_boxes_are_the_tight_boxes_of_the_masks(variant):
    shapes = generate_shapes(120, variant=variant, seed=2)
    for box, mask in zip(shapes.boxes, shapes.masks):
        x0, y0, x1, y1 = box.tolist()
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
        inside = np.zeros_like(mask)
        inside[y0:y1, x0:x1] = True
        assert mask.sum() > 40 and not (mask & ~inside).any()  # the box holds every shape pixel
        assert mask[y0].any() and mask[y1 - 1].any() and mask[:, x0].any() and mask[:, x1 - 1].any()  # and is tight


def test_shapes_differ_by_class_and_vary_in_size_and_place():
    shapes = generate_shapes(600, variant="shape", seed=3)
    box_sizes = shapes.boxes[:, 2:] - shapes.boxes[:, :2]
    centres = (shapes.boxes[:, :2] + shapes.boxes[:, 2:]) / 2
    assert box_sizes.min() < 20 and box_sizes.max() > 36
    assert centres.min() < 20 and centres.max() > 44
    fill = shapes.masks.sum((1, 2)) / np.prod(box_sizes, axis=1)  # a disc fills pi/4 of its box, a ring less
    mean_fill = [fill[shapes.labels == c].mean() for c in range(6)]
    assert abs(mean_fill[0] - np.pi / 4) < 0.03
    assert mean_fill[3] < mean_fill[0] - 0.2  # the ring's hole


def test_backgrounds_are_textured_not_blank():
    shapes = generate_shapes(60, variant="shape", seed=4)
    spreads = [image[~mask].astype(float).std(0).mean() for image, mask in zip(shapes.images, shapes.masks)]
    assert np.median(spreads) > 12


def test_the_color_variant_colours_tell_the_class():
    train, test = generate_shapes(300, variant="color", seed=5), generate_shapes(300, variant="color", seed=6)
    assert _nearest_centroid_accuracy(train, test) > 0.98


def test_the_shape_variant_colours_do_not_tell_the_class():
    train, test = generate_shapes(600, variant="shape", seed=5), generate_shapes(600, variant="shape", seed=6)
    assert _nearest_centroid_accuracy(train, test) < 0.3  # chance is 1/6


def test_shapes_stand_out_from_their_background():
    shapes = generate_shapes(200, variant="shape", seed=8)
    gaps = [np.linalg.norm(image[mask].mean(0) - image[~mask].mean(0)) for image, mask in zip(shapes.images, shapes.masks)]
    assert np.percentile(gaps, 5) > 40  # RGB units out of 255


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="variant"):
        generate_shapes(4, variant="texture")


def test_dataset_round_trip_keeps_images_labels_and_boxes(tmp_path):
    import datasets

    shapes = generate_shapes(18, variant="color", size=32, seed=9)
    dataset = shapes_dataset(18, variant="color", size=32, seed=9)
    assert dataset.features["label"].names == list(SHAPE_CLASSES)
    dataset.to_parquet(str(tmp_path / "shapes.parquet"))
    loaded = datasets.load_dataset("parquet", data_files=str(tmp_path / "shapes.parquet"), split="train")
    assert isinstance(loaded.features["image"], datasets.Image)
    assert loaded.features["label"].names == list(SHAPE_CLASSES)
    assert loaded["label"] == shapes.labels.tolist()
    assert loaded["bbox"] == shapes.boxes.tolist()
    for row, image in zip(loaded, shapes.images):
        assert np.array_equal(np.asarray(row["image"].convert("RGB")), image)  # PNG: lossless
