"""Block removal, occlusion and patch shuffling (analysis/block_removal.py, occlusion.py, patch_shuffle.py):
constructed cases (identity blocks, a model that reads only its box, a grid of 1), every backend's residual
branches, and runs on the trained built-in shapes models with their files."""

import csv

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from vit_feature_viz.analysis import block_removal, occlusion, patch_shuffle
from vit_feature_viz.analysis.block_removal import NATURAL, PARTS, removal_logits
from vit_feature_viz.analysis.patches import (
    BACKGROUND_FIRST, FOREGROUND_FIRST, RANDOM, drop_order, keep_tokens, mask_cells, shuffle_tiles, tile_permutations,
)
from vit_feature_viz.errors import VizError
from vit_feature_viz.models import RESIDUAL, Target, load_model
from vit_feature_viz.models.branches import block_branches, switched_off
from vit_feature_viz.models.classifiers import ImageClassifier, from_vision_model
from vit_feature_viz.models.stages import token_stages

RUN = dict(batch_size=16, device="cpu", precision="fp32", progress=False)
NAMES = [f"class_{i}" for i in range(10)]


def _dataset(count=12, size=(40, 48), seed=0):
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for _ in range(count)]
    return datasets.Dataset.from_dict(
        {"image": images, "label": [i % 10 for i in range(count)], "bbox": [[6, 4, 30, 28]] * count},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES),
                                    "bbox": datasets.List(datasets.Value("int64"))}),
    )


def _images(model, count=4, seed=0):
    return torch.rand(count, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(seed))


def _natural_top1(model, dataset) -> float:
    """Top-1 of the model's own forward pass on the dataset, outside the experiments' loops."""
    clf = from_vision_model(model)
    images = torch.stack([clf.preprocess(image.convert("RGB")) for image in list(dataset["image"])])
    return 100.0 * int((clf.logits(images).argmax(-1) == torch.tensor(dataset["label"])).sum()) / len(images)


@pytest.fixture(scope="module")
def tiny(tiny_repos):
    return {role: load_model(tiny_repos[role], device="cpu", precision="fp32") for role in ("vit", "deit", "timm_vit")}


def _identity_blocks(model):
    """The model with every attention and MLP output projection zeroed: each block adds nothing to its input."""
    for branches in block_branches(model):
        for branch in (branches.attention, branches.mlp):
            last = [m for m in branch.modules() if isinstance(m, torch.nn.Linear)][-1]  # out_proj / fc2 / c_proj
            torch.nn.init.zeros_(last.weight)
            torch.nn.init.zeros_(last.bias)
    return model


# --- block removal ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ["vit", "clip", "dinov2", "timm_vit", "open_clip"])
def test_each_backends_branches_switch_off_to_the_residual(tiny_repos, role):
    """All branches off: every block passes its input on (the last block's output is the first's). One branch off:
    the block still changes its input, differently from the other branch off."""
    model = load_model(tiny_repos[role], device="cpu", precision="fp32")
    branches, images = block_branches(model), _images(model)
    last = model.num_layers - 1
    targets = [Target(RESIDUAL, 0), Target(RESIDUAL, 1), Target(RESIDUAL, last)]
    with torch.no_grad():
        natural = model.activations(images, targets)
        with switched_off([m for b in branches for m in (b.attention, b.mlp)]):
            identity = model.activations(images, targets)
        outs = {}
        for part in ("attention", "mlp"):
            with switched_off([branches[1].branch(part)]):
                outs[part] = model.activations(images, targets)[Target(RESIDUAL, 1)]
    torch.testing.assert_close(identity[Target(RESIDUAL, last)], identity[Target(RESIDUAL, 0)])
    assert not torch.allclose(identity[Target(RESIDUAL, 0)], natural[Target(RESIDUAL, 0)])
    for out in outs.values():
        assert not torch.allclose(out, natural[Target(RESIDUAL, 1)]) and not torch.allclose(out, natural[Target(RESIDUAL, 0)])
    assert not torch.allclose(outs["attention"], outs["mlp"])
    torch.testing.assert_close(model.activations(images, targets)[Target(RESIDUAL, 1)], natural[Target(RESIDUAL, 1)])


@pytest.mark.parametrize("role", ["vit", "timm_vit"])
def test_every_removal_changes_a_models_logits(tiny, role):
    model = tiny[role]
    with torch.no_grad():
        changed = removal_logits(token_stages(model), token_stages(model).embed(model.normalize(_images(model))))
    assert len(changed) == 1 + 3 * model.num_layers
    assert all(not torch.allclose(changed[key], changed[NATURAL]) for key in changed if key != NATURAL)


def test_a_model_whose_blocks_are_identities_keeps_its_accuracy_under_removal(tiny_repos):
    """Every attention and MLP output projection zeroed, and the head reading the mean patch token (with a CLS
    readout an identity model would answer one class for every image)."""
    model = _identity_blocks(load_model(tiny_repos["timm_vit"], device="cpu", precision="fp32"))
    model.module.global_pool = "avg"
    stages = token_stages(model)
    with torch.no_grad():
        same = removal_logits(stages, stages.embed(model.normalize(_images(model, count=8))))
    assert same[NATURAL].argmax(-1).unique().numel() > 1  # its answer depends on the image
    for key, logits in same.items():
        torch.testing.assert_close(logits, same[NATURAL], msg=str(key))
    dataset = _dataset(16)
    result = block_removal(model, dataset, **RUN)
    assert len(result.rows) == 1 + 3 * model.num_layers and {r["removed"] for r in result.rows} == {NATURAL, *PARTS}
    assert {r["top1"] for r in result.rows} == {_natural_top1(model, dataset)}
    assert {r["top1_drop"] for r in result.rows} == {0.0}


# --- occlusion ----------------------------------------------------------------------------------------------------
def test_drop_orders_masks_tokens_and_tiles_on_constructed_grids():
    share = torch.tensor([[0.0, 1.0, 0.5, 0.0]])
    assert drop_order([7], 4, FOREGROUND_FIRST, share)[0, :2].tolist() == [1, 2]
    assert drop_order([7], 4, BACKGROUND_FIRST, share)[0, 2:].tolist() == [2, 1]
    assert sorted(drop_order([7], 4, RANDOM)[0].tolist()) == [0, 1, 2, 3]
    assert torch.equal(drop_order([7, 8], 16), drop_order([7, 8], 16))  # seeded: every model sees the same drops

    images = torch.rand(2, 3, 8, 8)
    masked = mask_cells(images, 2, torch.tensor([[0], [3]]), 0.0)
    assert masked[0, :, :4, :4].eq(0).all() and torch.equal(masked[0, :, 4:], images[0, :, 4:])
    assert masked[1, :, 4:, 4:].eq(0).all() and torch.equal(masked[1, :, :4], images[1, :, :4])

    tokens = torch.arange(2 * 5 * 1.0).view(2, 5, 1)  # 1 prefix + 4 patches
    kept = keep_tokens(tokens, 1, torch.tensor([[2], [0]]))
    assert kept[..., 0].tolist() == [[0, 1, 2, 4], [5, 7, 8, 9]]  # patch 2 is token 3
    assert torch.equal(keep_tokens(tokens, 1, torch.zeros(2, 0, dtype=torch.long)), tokens)


COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
BOX = [0, 0, 32, 32]  # the top-left quadrant of a 64 px image: exactly 4 of a CNN's 4 x 4 cells of 16 px


def _box_reader() -> ImageClassifier:
    """A 'CNN' that reads only the mean colour inside BOX."""
    return ImageClassifier("constructed/box-reader", "cnn", 64, list(COLOURS),
                           lambda images: images[:, :, BOX[1]:BOX[3], BOX[0]:BOX[2]].mean(dim=(2, 3)))


def _coloured_boxes(count=12):
    rng = np.random.default_rng(3)
    images = []
    for i in range(count):
        pixels = rng.integers(0, 120, (64, 64, 3), dtype=np.uint8)
        pixels[BOX[1]:BOX[3], BOX[0]:BOX[2]] = list(COLOURS.values())[i % 3]
        images.append(Image.fromarray(pixels))
    return datasets.Dataset.from_dict(
        {"image": images, "label": [i % 3 for i in range(count)], "bbox": [BOX] * count},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(COLOURS)),
                                    "bbox": datasets.List(datasets.Value("int64"))}),
    )


def test_a_model_that_reads_only_its_box_loses_it_foreground_first_and_keeps_it_background_first():
    result = occlusion(_box_reader(), _coloured_boxes(12), fractions=[0, 0.25, 0.75], **RUN)
    by = {(r["order"], r["fraction"]): r["top1"] for r in result.rows}
    assert result.settings["orders"] == [RANDOM, FOREGROUND_FIRST, BACKGROUND_FIRST]
    assert {r["drop"] for r in result.rows} == {"pixels"} and {r["grid"] for r in result.rows} == {4}
    assert by[(RANDOM, 0)] == by[(FOREGROUND_FIRST, 0)] == 100.0
    assert by[(FOREGROUND_FIRST, 0.25)] == pytest.approx(100 / 3)  # the 4 box cells gone: black reads as red
    assert by[(BACKGROUND_FIRST, 0.75)] == 100.0  # the 12 background cells gone, the box intact


def test_dropping_no_patches_is_the_baseline_accuracy(tiny):
    dataset = _dataset(12)
    for drop, models in (("tokens", [tiny["vit"], tiny["deit"]]), ("pixels", [tiny["vit"]])):
        result = occlusion(models, dataset, fractions=[0, 1], drop=drop, **RUN)
        assert result.settings["orders"] == [RANDOM, FOREGROUND_FIRST, BACKGROUND_FIRST]  # the bbox column was found
        for model in models:
            rows = [r for r in result.rows if r["model_id"] == model.model_id]
            assert {r["top1"] for r in rows if r["fraction"] == 0} == {_natural_top1(model, dataset)}
            assert {r["patches_dropped"] for r in rows} == {0, 16} and {r["drop"] for r in rows} == {drop}
    with pytest.raises(VizError, match="from 0 to 1"):
        occlusion(tiny["vit"], dataset, fractions=[1.5], **RUN)


# --- patch shuffling ----------------------------------------------------------------------------------------------
def test_shuffling_with_a_grid_of_1_changes_nothing_and_tiles_move_whole():
    images = torch.rand(2, 3, 10, 10)
    assert torch.equal(shuffle_tiles(images, 1, tile_permutations([1, 2], 1)), images)
    swapped = shuffle_tiles(images, 2, torch.tensor([[3, 2, 1, 0], [0, 1, 2, 3]]))
    assert torch.equal(swapped[0, :, :5, :5], images[0, :, 5:10, 5:10])
    assert torch.equal(swapped[0, :, 5:10, :5], images[0, :, :5, 5:10]) and torch.equal(swapped[1], images[1])
    odd = shuffle_tiles(images, 3, tile_permutations([5, 6], 3))  # 3 tiles of 3 px: the last row/column stays
    assert torch.equal(odd[..., 9, :], images[..., 9, :]) and torch.equal(odd[..., :, 9], images[..., :, 9])


def test_patch_shuffle_at_grid_1_is_the_baseline_and_bad_grids_are_refused(tiny):
    dataset = _dataset(12)
    result = patch_shuffle(tiny["vit"], dataset, grids=[1, 4], **RUN)
    by = {r["grid"]: r for r in result.rows}
    assert by[1]["top1"] == _natural_top1(tiny["vit"], dataset) and by[4]["tile_is_whole_patches"]
    for bad in ([0, 2], [2.5], [64]):
        with pytest.raises(VizError, match="Shuffle grids"):
            patch_shuffle(tiny["vit"], dataset, grids=bad, **RUN)


# --- resuming and the command line -------------------------------------------------------------------------------
def test_a_stopped_run_resumes_from_its_saved_counts(tiny, tmp_path):
    """Every batch's counts are saved (keyed by order and fraction): a run that finds them all scores nothing again
    and gives the same rows."""
    from vit_feature_viz.store.progress import Resumed

    dataset = _dataset(8)
    first = occlusion(tiny["vit"], dataset, fractions=[0, 0.5], checkpoint=tmp_path, **RUN)
    with pytest.warns(Resumed, match="the 8 image"):
        again = occlusion(tiny["vit"], dataset, fractions=[0, 0.5], checkpoint=tmp_path, **RUN)
    assert again.rows == first.rows


def test_cli_runs_each_experiment_with_its_options_and_refuses_bad_ones_in_one_line(tiny_repos, tmp_path, capsys):
    from vit_feature_viz.cli import main

    _dataset(6).save_to_disk(str(tmp_path / "data"))
    common = [tiny_repos["vit"], "--dataset", str(tmp_path / "data"), "--out", str(tmp_path / "gallery"),
              "--device", "cpu", "--quiet"]
    runs = {"block-removal": [], "occlusion": ["--fractions", "0,0.5", "--drop", "pixels"],
            "patch-shuffle": ["--grids", "1,2"]}
    tables = {}
    for experiment, options in runs.items():
        assert main(["analyze", experiment, *common, *options]) == 0
        table, plot = capsys.readouterr().out.split()
        assert f"/analysis/{experiment.replace('-', '_')}/" in table and Image.open(plot).size[0] > 400
        with open(table) as f:
            tables[experiment] = list(csv.DictReader(f))
    assert {name: len(rows) for name, rows in tables.items()} == {"block-removal": 13, "occlusion": 6, "patch-shuffle": 2}
    assert {r["drop"] for r in tables["occlusion"]} == {"pixels"} and tables["occlusion"][0]["fractions"] == "[0.0, 0.5]"
    for options, message in ((["patch-shuffle", "--grids", "1,x"], "--grids must be numbers"),
                             (["patch-shuffle", "--grids", "0,2"], "Shuffle grids must be whole numbers"),
                             (["occlusion", "--fractions", "0,2"], "from 0 to 1")):
        assert main(["analyze", options[0], *common, *options[1:]]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0]


# --- the trained built-in shapes models ---------------------------------------------------------------------------
SHAPES = "vit-feature-viz/shapes-shape"
IMAGES = 16
WHOLE_BATCH = {**RUN, "batch_size": IMAGES}


@pytest.fixture(scope="module")
def shape_model():
    return load_model("vit-feature-viz/shapes-shape-vit-b", device="cpu", precision="fp32")


def test_block_removal_of_a_trained_shapes_model(shape_model, tmp_path):
    result = block_removal(shape_model, SHAPES, max_images=IMAGES, **WHOLE_BATCH)
    natural = next(r["top1"] for r in result.rows if r["removed"] == NATURAL)
    removed = {(r["block"], r["removed"]): r["top1"] for r in result.rows if r["removed"] != NATURAL}
    assert len(removed) == 3 * shape_model.num_layers and all(0 <= v <= 100 for v in removed.values())
    assert natural >= 50  # trained: far above the 1-in-6 chance
    assert removed[(0, "block")] < natural and min(removed.values()) < natural - 20  # blocks matter in a small model
    files = result.save(tmp_path)
    assert files["table"].is_file() and Image.open(files["plot"]).size[0] > 400
    assert "block 0 removed" in result.summary()


def test_occlusion_and_shuffling_of_a_trained_shapes_model(shape_model, tmp_path):
    dropped = occlusion(shape_model, SHAPES, fractions=[0, 0.25, 0.9], max_images=IMAGES, **WHOLE_BATCH)
    by = {(r["order"], r["fraction"]): r["top1"] for r in dropped.rows}
    assert by[(RANDOM, 0)] >= 50 and by[(RANDOM, 0.9)] < by[(RANDOM, 0)]
    assert by[(FOREGROUND_FIRST, 0.25)] < by[(BACKGROUND_FIRST, 0.25)]  # the shape is what it reads
    shuffled = patch_shuffle(shape_model, SHAPES, grids=[1, 16], max_images=IMAGES, **WHOLE_BATCH)
    grid = {r["grid"]: r["top1"] for r in shuffled.rows}
    assert grid[1] == by[(RANDOM, 0)] and grid[16] < grid[1] - 20
    for result in (dropped, shuffled):
        files = result.save(tmp_path)
        assert files["table"].is_file() and Image.open(files["plot"]).size[0] > 400
