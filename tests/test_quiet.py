"""--quiet means no bar at all: not ours, not transformers' weight loading, not datasets' split generation."""

import numpy as np
from PIL import Image

from vit_feature_viz.cli import main


def test_quiet_analyze_on_an_image_folder_draws_no_bar(tiny_repos, tmp_path, capfd):
    rng = np.random.default_rng(0)
    for split in ("test",):
        for label in ("class_0", "class_1"):
            folder = tmp_path / "images" / split / label
            folder.mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    capfd.readouterr()
    code = main(["analyze", "per-block-cls", tiny_repos["vit"], "--dataset", str(tmp_path / "images"), "--quiet",
                 "--device", "cpu", "--out", str(tmp_path / "out")])
    err = capfd.readouterr().err
    assert code == 0, err
    assert "%|" not in err and "Generating" not in err and "Loading weights" not in err, err
