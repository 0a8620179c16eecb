"""The built-in shapes sets work by name in every command, offline (the suite runs with HF_HUB_OFFLINE=1), and a
dataset without the split a default would name still opens at its own first split."""

import csv

import numpy as np
import pytest
from PIL import Image

from vit_feature_viz.cli import main
from vit_feature_viz.errors import VizError
from vit_feature_viz.image_datasets import BUILTIN_DATASETS, open_image_dataset, split_of
from vit_feature_viz.store.pages import open_gallery

SHAPES = "vit-feature-viz/shapes-shape"


def test_builtin_sets_open_by_name_with_a_test_and_a_train_split():
    for name in BUILTIN_DATASETS:
        test, column = open_image_dataset(name)
        train, _ = open_image_dataset(name, split="train")
        assert column == "image" and len(test) == len(train) == 1200
        assert split_of(test) == "test" and split_of(train) == "train"
        assert test[0]["image"].tobytes() != train[0]["image"].tobytes()
    with pytest.raises(VizError, match="has no split 'validation': use --split with one of test, train"):
        open_image_dataset(SHAPES, split="validation")


def test_examples_command_scans_a_builtin_set_offline(trained_repos, tmp_path, capfd):
    code = main(["examples", trained_repos["shapes-shape-vit-a"], "--layer", "2", "--features", "0,1", "--dataset",
                 SHAPES, "--max-images", "64", "--top-k", "4", "--quiet", "--out", str(tmp_path / "g")])
    assert code == 0, capfd.readouterr().err
    page = open_gallery(str(tmp_path / "g")).feature_page(None, 2, 0)
    assert len(page.examples) == 4


def _image_folder_with_only_train(root):
    rng = np.random.default_rng(0)
    for label in ("class_0", "class_1"):
        folder = root / "train" / label
        folder.mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def test_analyses_default_to_the_datasets_own_first_split(tiny_repos, tmp_path, capfd):
    folder = _image_folder_with_only_train(tmp_path / "images")
    code = main(["analyze", "per-block-cls", tiny_repos["vit"], "--dataset", str(folder), "--quiet", "--device", "cpu",
                 "--out", str(tmp_path / "out")])
    out, err = capfd.readouterr()
    assert code == 0, err
    with open(out.splitlines()[0]) as f:
        assert next(csv.DictReader(f))["split"] == "train"
