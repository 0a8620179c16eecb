"""`browse_gallery`: a gallery made by the real renderer and dataset scan, shared by the browsing tests.

Layer 1 has features 0-3 rendered and with TOP_K dataset examples each; layer 2 has features 0-1 rendered only.
Session scope: it loads the tiny model from the offline test cache, before any `hub` fixture swaps the caches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TOP_K = 3
MODEL = "tiny-org/vit-classifier"


def make_gallery(model, folder: Path, image_folder: Path) -> Path:
    from vit_feature_viz import jobs

    jobs.render_to_folder(model, folder, 1, "0-3", steps=2, progress=False)
    jobs.render_to_folder(model, folder, 2, "0-1", steps=2, progress=False)
    jobs.examples_to_folder(model, folder, 1, "0-3", str(image_folder), top_k=TOP_K, split="train", progress=False)
    return folder


@pytest.fixture(scope="session")
def browse_gallery(tiny_repos, tmp_path_factory) -> Path:
    from vit_feature_viz import load_model

    images = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(images / f"img_{i}.png")
    model = load_model(tiny_repos["vit"], device="cpu")
    return make_gallery(model, tmp_path_factory.mktemp("browse") / "gallery", images)
