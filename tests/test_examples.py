"""Dataset examples and patch maps against brute force, on a tiny real model and real `datasets` folders."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from hub_fixtures import IGNORE_CLIENT_UPLOAD_WARNING, parquet_reads, push_parquet_shards
from vit_feature_viz.core.objectives import make_objective
from vit_feature_viz.core.patchmap import COLORMAP, heatmap_overlay, patch_map
from vit_feature_viz.errors import VizError
from vit_feature_viz.examples import example_rows, merge_examples, scan_examples
from vit_feature_viz.image_datasets import open_image_dataset
from vit_feature_viz.images import preprocess
from vit_feature_viz.models import load_model

NUM_IMAGES = 20
TOP_K = 4


def make_images() -> list[Image.Image]:
    """Bright and structured, random, greyscale, palette and non-square images, so scores spread out."""
    rng = np.random.default_rng(0)
    images = []
    for i in range(NUM_IMAGES):
        kind = i % 5
        if kind == 0:  # stripes of a bright colour
            array = np.zeros((40, 40, 3), np.uint8)
            array[:, (np.arange(40) // (2 + i % 7)) % 2 == 0] = rng.integers(128, 256, 3)
            images.append(Image.fromarray(array))
        elif kind == 1:  # noise
            images.append(Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)))
        elif kind == 2:  # greyscale gradient
            ramp = np.linspace(0, 255, 48)[None, :] * np.linspace(0.2, 1, 48)[:, None]
            images.append(Image.fromarray(np.roll(ramp, i, axis=1).astype(np.uint8)))
        elif kind == 3:  # wide, with a block
            array = np.full((24, 64, 3), 30 + 10 * i, np.uint8)
            array[4:20, 20 + i : 40 + i] = rng.integers(0, 256, 3)
            images.append(Image.fromarray(array))
        else:  # tall, palette mode
            tall = Image.fromarray(rng.integers(0, 256, (70, 30, 3), dtype=np.uint8))
            images.append(tall.convert("P"))
    return images


@pytest.fixture(scope="module")
def model(tiny_repos):
    return load_model(tiny_repos["vit"], device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """An imagefolder: plain image files, loaded by `datasets` with its imagefolder builder."""
    folder = tmp_path_factory.mktemp("imagefolder")
    for i, image in enumerate(make_images()):
        image.save(folder / f"img_{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def parquet_folder(tmp_path_factory):
    """A Hub-style dataset folder: data/*.parquet with an Image column that is not the first column."""
    folder = tmp_path_factory.mktemp("parquet")
    (folder / "data").mkdir()
    table = datasets.Dataset.from_dict({"label": list(range(NUM_IMAGES)), "picture": make_images()})
    table.cast_column("picture", datasets.Image()).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    return folder


def brute_force(model, dataset, column: str, features: list[int], top_k: int, rows: int | None = None) -> dict:
    """Every image through the model on its own, then sorted: (score desc, row asc)."""
    objective = make_objective("feature", 3)
    scores = []
    with torch.no_grad():
        for i in range(rows or len(dataset)):
            pixels = model.preprocess_uint8(dataset[i][column])[None].float() / 255  # what scans keep
            scores.append(objective.values(model.activations(pixels, objective.needs))[0])
    scores = torch.stack(scores)
    return {
        f: sorted(((float(scores[i, f]), i) for i in range(len(scores))), key=lambda p: (-p[0], p[1]))[:top_k]
        for f in features
    }


def as_pairs(examples) -> dict:
    return {f: [(e.score, e.index) for e in found] for f, found in examples.items()}


def assert_same(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)
    for feature, want in expected.items():
        assert [i for _, i in got[feature]] == [i for _, i in want], feature
        assert [s for s, _ in got[feature]] == pytest.approx([s for s, _ in want], abs=1e-5)


@pytest.fixture(scope="module")
def single_scan(model, image_folder):
    return scan_examples(model, 3, "0-15", str(image_folder), top_k=TOP_K, batch_size=6, progress=False)


# --- opening datasets ---------------------------------------------------------------------------------------
def test_open_finds_image_columns(image_folder, parquet_folder):
    dataset, column = open_image_dataset(str(image_folder))
    assert (len(dataset), column) == (NUM_IMAGES, "image")
    dataset, column = open_image_dataset(str(parquet_folder))
    assert (len(dataset), column) == (NUM_IMAGES, "picture")


def test_dataset_errors_are_one_line_fixes(tmp_path, image_folder):
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "train.csv").write_text("caption,label\na cat,1\na dog,2\n")
    with pytest.raises(VizError, match=r"no image column \(columns: caption, label\).*--image-column"):
        open_image_dataset(str(tmp_path / "text"))
    with pytest.raises(VizError, match=r"no column 'photo'.*image"):
        open_image_dataset(str(image_folder), image_column="photo")
    with pytest.raises(VizError, match=r"No dataset folder at .*nowhere.*check the path"):
        open_image_dataset(str(tmp_path / "nowhere"))
    with pytest.raises(VizError, match=r"no split 'test'.*one of train"):
        open_image_dataset(str(image_folder), split="test")


# --- scanning -----------------------------------------------------------------------------------------------
def test_scan_matches_brute_force_for_many_features(model, image_folder, single_scan):
    dataset, column = open_image_dataset(str(image_folder))
    assert_same(as_pairs(single_scan), brute_force(model, dataset, column, list(range(16)), TOP_K))


def test_scan_of_parquet_folder_and_every_feature(model, parquet_folder):
    dataset, column = open_image_dataset(str(parquet_folder))
    found = scan_examples(model, 3, "all", dataset, top_k=3, batch_size=7, progress=False)
    assert len(found) == model.blocks[3].features
    expected = brute_force(model, dataset, column, [0, 31, 64, 127], 3)
    assert_same({f: as_pairs(found)[f] for f in expected}, expected)


def test_sharded_scans_merge_to_the_single_scan(model, image_folder, single_scan):
    parts = [
        scan_examples(model, 3, "0-15", str(image_folder), top_k=TOP_K, batch_size=4, num_shards=2, shard_index=s,
                      progress=False)
        for s in (0, 1)
    ]
    for shard, part in enumerate(parts):
        assert all(e.index % 2 == shard for found in part.values() for e in found)
    merged = merge_examples(parts, TOP_K)
    assert_same(as_pairs(merged), as_pairs(single_scan))
    for feature, found in merged.items():  # images and maps come along with their rows
        for got, want in zip(found, single_scan[feature]):
            assert np.array_equal(np.asarray(got.image), np.asarray(want.image))
            assert np.abs(np.asarray(got.patch_map, np.int16) - np.asarray(want.patch_map, np.int16)).max() <= 2


def test_max_images_caps_rows_across_shards(model, image_folder):
    dataset, column = open_image_dataset(str(image_folder))
    capped = scan_examples(model, 3, [2, 9], dataset, max_images=7, top_k=TOP_K, batch_size=3, progress=False)
    assert all(e.index < 7 for found in capped.values() for e in found)
    assert_same(as_pairs(capped), brute_force(model, dataset, column, [2, 9], TOP_K, rows=7))
    parts = [
        scan_examples(model, 3, [2, 9], dataset, max_images=7, top_k=TOP_K, num_shards=3, shard_index=s, progress=False)
        for s in range(3)
    ]
    assert_same(as_pairs(merge_examples(parts, TOP_K)), as_pairs(capped))


@pytest.mark.parametrize("shards", [1, 2])
def test_streaming_equals_in_memory(model, image_folder, parquet_folder, single_scan, shards):
    parts = [
        scan_examples(model, 3, "0-15", str(image_folder), top_k=TOP_K, batch_size=5, streaming=True,
                      num_shards=shards, shard_index=s, progress=False)
        for s in range(shards)
    ]
    assert_same(as_pairs(merge_examples(parts, TOP_K)), as_pairs(single_scan))
    in_memory = scan_examples(model, 3, "0,7", str(parquet_folder), top_k=TOP_K, progress=False)
    streamed = scan_examples(model, 3, "0,7", str(parquet_folder), top_k=TOP_K, streaming=True, progress=False)
    assert_same(as_pairs(streamed), as_pairs(in_memory))


@IGNORE_CLIENT_UPLOAD_WARNING
@pytest.mark.parametrize("max_images", [4, 6])  # inside the first shard, and exactly all of it
def test_a_cap_on_images_reads_only_the_first_shard_of_a_hub_dataset(model, hub, tmp_path, max_images):
    """Three parquet shards of 6 rows on the loopback Hub: a capped scan streams, asks for the first shard's bytes
    only, and finds what a scan of the fully loaded split finds in those rows."""
    images = datasets.Dataset.from_dict({"image": make_images()[:18]}).cast_column("image", datasets.Image())
    shards = push_parquet_shards(hub, "alice/shards", images, 3, tmp_path / "shards")
    found = scan_examples(model, 3, "0-7", "alice/shards", split="train", max_images=max_images, top_k=TOP_K,
                          batch_size=3, progress=False)
    assert parquet_reads(hub, "alice/shards") == shards[:1]
    whole = datasets.load_dataset(str(tmp_path / "shards"), split="train")  # every shard, in memory
    assert len(whole) == 18
    expected = scan_examples(model, 3, "0-7", whole, max_images=max_images, top_k=TOP_K, progress=False)
    assert_same(as_pairs(found), as_pairs(expected))
    for feature, examples in found.items():
        for got, want in zip(examples, expected[feature]):
            assert np.array_equal(np.asarray(got.image), np.asarray(want.image))


def test_examples_carry_model_size_images_and_patch_maps(model, single_scan):
    for found in single_scan.values():
        assert len(found) == TOP_K
        for example in found:
            size = (model.image_size, model.image_size)
            assert example.image.size == example.patch_map.size == size
            assert example.image.mode == example.patch_map.mode == "RGB"
            assert not np.array_equal(np.asarray(example.image), np.asarray(example.patch_map))


def test_example_rows_have_gallery_columns(model, single_scan):
    rows = example_rows(model, 3, "feature", "local/images", single_scan)
    assert [r["feature"] for r in rows] == sorted(single_scan)
    row = rows[0]
    assert {k: row[k] for k in ("model_id", "layer", "objective", "dataset")} == {
        "model_id": model.model_id, "layer": 3, "objective": "feature", "dataset": "local/images"}
    assert len(row["top_images"]) == len(row["top_scores"]) == len(row["top_indices"]) == len(row["patch_maps"]) == TOP_K
    assert row["top_scores"] == sorted(row["top_scores"], reverse=True)


def test_logit_scan_has_examples_without_maps(model, image_folder):
    found = scan_examples(model, 3, [1], str(image_folder), objective="logit", top_k=2, progress=False)
    assert [e.patch_map for e in found[1]] == [None, None]
    assert example_rows(model, 3, "logit", "x", found)[0]["patch_maps"] == []


# --- patch maps ---------------------------------------------------------------------------------------------
def luminance(image: Image.Image) -> np.ndarray:
    return np.asarray(image, np.float64) @ np.array([0.299, 0.587, 0.114])


def test_single_hot_patch_is_brightest_there():
    image = Image.new("RGB", (128, 128), (128, 128, 128))
    values = np.zeros((4, 4))
    values[1, 2] = 5.0
    overlay = heatmap_overlay(image, values)
    assert overlay.size == image.size
    blocks = luminance(overlay).reshape(4, 32, 4, 32).mean(axis=(1, 3))
    assert np.unravel_index(blocks.argmax(), blocks.shape) == (1, 2)
    assert (np.asarray(overlay)[:24, 64:].min(-1) > 205).any()  # the max label: whiter than any blend on grey
    # the colormap itself gets brighter from its low end to its high end
    assert luminance(Image.fromarray(COLORMAP[None])).ravel()[[0, 128, 255]].tolist() == sorted(
        luminance(Image.fromarray(COLORMAP[None])).ravel()[[0, 128, 255]].tolist())


def test_constant_map_and_non_square_image():
    photo = Image.fromarray(np.random.default_rng(1).integers(0, 256, (60, 100, 3), dtype=np.uint8))
    overlay = heatmap_overlay(photo, np.full((3, 5), 2.5))
    assert overlay.size == (100, 60)
    assert np.isfinite(np.asarray(overlay, np.float64)).all()
    bar = np.asarray(overlay)[5:55, 100 - 4]  # the colour bar on the right edge: bright at the top, dark below
    assert luminance(Image.fromarray(bar[None]))[0, 0] > luminance(Image.fromarray(bar[None]))[0, -1]


def test_patch_map_of_one_image(model):
    photo = Image.fromarray(np.random.default_rng(2).integers(0, 256, (50, 80, 3), dtype=np.uint8))
    drawn = patch_map(model, photo, 2, 5)
    assert drawn.size == (model.image_size, model.image_size)
    with pytest.raises(VizError, match="no per-patch values.*--objective feature"):
        patch_map(model, photo, 2, 5, objective="logit")


def test_preprocess_centre_crops_shorter_side():
    wide = np.zeros((20, 60, 3), np.uint8)
    wide[:, 20:40] = 255  # the centre third is white
    gray = Image.fromarray(np.full((10, 30), 77, np.uint8))
    batch = preprocess([Image.fromarray(wide), gray], 16)
    assert batch.shape == (2, 3, 16, 16) and batch.dtype == torch.float32
    assert 0 <= batch.min() and batch.max() <= 1
    assert batch[0, :, :, 3:13].min() > 0.9  # the crop is the centre of the wide image
    assert torch.allclose(batch[1], torch.full_like(batch[1], 77 / 255), atol=1 / 255)
