"""The gallery shipped with the package (vit_feature_viz/data/builtin_gallery/): it opens by name with the library,
offline and read only, holds learned features of the built-in model with examples and analyses, is what
scripts/build_builtin_gallery.py makes, and is what the app opens on start (also when a featured Hub gallery
cannot be reached)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from vit_feature_viz.app.galleries_tab import (ENV_FEATURED, ENV_OPEN, Galleries, featured_galleries,
                                               start_galleries)
from vit_feature_viz.image_datasets import DEFAULT_BUILTIN_DATASET
from vit_feature_viz.models.builtin import DEFAULT_BUILTIN
from vit_feature_viz.store.builtin import BUILTIN_GALLERY, BUILTIN_GALLERY_DIR
from vit_feature_viz.store.folder import GalleryFolder
from vit_feature_viz.store.pages import open_gallery

ROOT = Path(__file__).resolve().parents[1]
LAYERS = [1, 3, 5]
FEATURES = list(range(8))
TOP_K = 5
EXPERIMENTS = ["cls_isolation", "foreground_background", "frequency", "per_block_cls", "token_pooling"]


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `folder`, hidden ones too, with size and modification time."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def shipped():
    before = listing(BUILTIN_GALLERY_DIR)
    gallery = open_gallery(BUILTIN_GALLERY, allow_local=False)  # package data: opens even where paths may not
    yield gallery
    assert listing(BUILTIN_GALLERY_DIR) == before, "opening and browsing the shipped gallery wrote into the package"


def test_the_shipped_gallery_holds_learned_features_examples_and_analyses(shipped):
    assert shipped.label == BUILTIN_GALLERY and shipped.source.path == BUILTIN_GALLERY_DIR
    assert shipped.models() == [DEFAULT_BUILTIN] and shipped.layers() == LAYERS
    for layer in LAYERS:
        rows = shipped.layer_rows(None, layer)
        assert list(rows.features) == FEATURES and rows.rendered.all()
        assert all(image is not None and image.size == (64, 64) for image in shipped.thumbnails(rows.entries()))
    page = shipped.feature_page(None, 3, 5)
    [viz] = page.visualizations
    assert viz.row.recipe == "fast" and viz.image is not None and viz.patch_map is not None
    assert page.dataset == DEFAULT_BUILTIN_DATASET and len(page.examples) == TOP_K
    assert all(e.image is not None and e.patch_map is not None for e in page.examples)
    # rendered from a model that learned: every image gained on its start, and nearly all drive their feature
    # harder than the best of the 1,200 images of the built-in set (the README's ratio above 1)
    stats = [shipped.feature_page(None, layer, f, max_examples=1).stats for layer in LAYERS for f in FEATURES]
    assert all(s["activation"] > s["activation at start"] for s in stats)
    assert sum(s["activation"] > s["top example score"] for s in stats) >= 20

    analyses = GalleryFolder(BUILTIN_GALLERY_DIR).analysis_paths()
    assert sorted({p.parent.name for p in analyses}) == EXPERIMENTS
    assert all({p.suffix for p in analyses if p.parent.name == name} == {".csv", ".png"} for name in EXPERIMENTS)
    per_block = next(p for p in analyses if p.parent.name == "per_block_cls" and p.suffix == ".csv").read_text()
    assert "shapes-vit" in per_block
    plots = shipped.analysis_plots()  # what the app shows under the grid
    assert sorted(name for _, name in plots) == [e.replace("_", "-") for e in EXPERIMENTS]
    assert all(image.width > 300 for image, _ in plots)
    size = sum(p.stat().st_size for p in BUILTIN_GALLERY_DIR.rglob("*") if p.is_file())
    assert size < 3 * 2**20, f"the shipped gallery grew to {size / 2**20:.1f} MB"
    assert not [p for p in BUILTIN_GALLERY_DIR.rglob(".*")], "hidden files (locks, progress) were shipped"


def test_the_build_script_writes_what_is_shipped(shipped, tmp_path, capfd):
    """One layer, one feature, a few steps and images: the same kinds of files and rows as the shipped gallery."""
    spec = importlib.util.spec_from_file_location("build_builtin_gallery", ROOT / "scripts/build_builtin_gallery.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "gallery"
    assert script.main(["--out", str(out), "--layers", "3", "--features", "2", "--steps", "2", "--scan-images", "8",
                        "--experiments", "per-block-cls", "--max-images", "8"]) == 0
    err = capfd.readouterr().err  # `gallery` ends by naming the command that shows it, once its examples are in
    assert err.count("look at them: vit-feature-viz open ") == 1
    assert err.index("top-5 examples of 1 feature(s)") < err.index("look at them: vit-feature-viz open ")

    def kinds(folder):
        return sorted({(p.relative_to(folder).parent.as_posix(), p.suffix) for p in folder.rglob("*") if p.is_file()
                       if "analysis" not in p.parts or p.parent.name == "per_block_cls"})

    assert kinds(out) == kinds(BUILTIN_GALLERY_DIR)
    assert sorted(out.iterdir()) == [out / "README.md", out / "analysis", out / "data"]  # nothing hidden
    [built_shard] = GalleryFolder(out).shard_paths()
    assert pq.read_schema(built_shard) == pq.read_schema(GalleryFolder(BUILTIN_GALLERY_DIR).shard_paths()[0])
    built = open_gallery(out).feature_page(None, 3, 2)
    ours = shipped.feature_page(None, 3, 2)
    same = ("model_id", "objective", "recipe", "seed", "image_size", "dataset")
    assert [getattr(built.visualizations[0].row, k) for k in same] == [getattr(ours.visualizations[0].row, k) for k in same]
    assert (built.visualizations[0].row.steps, len(built.examples)) == (2, TOP_K)


def test_the_app_features_the_builtin_gallery_last_and_opens_the_first_that_opens(tmp_path):
    none_listed = {}
    assert [g["id"] for g in featured_galleries(none_listed, tmp_path / "missing.yaml")] == [BUILTIN_GALLERY]
    space = {ENV_FEATURED: f"org/a, {BUILTIN_GALLERY}, org/b"}
    assert start_galleries(space, tmp_path / "missing.yaml") == ["org/a", "org/b", BUILTIN_GALLERY]
    assert start_galleries({**space, ENV_OPEN: "./mine"}, tmp_path / "missing.yaml")[0] == "./mine"

    # offline (the suite's HF_HUB_OFFLINE=1) a featured Hub gallery fails to open: the built-in one opens instead
    outputs = Galleries().open_on_start(sources=["org/not-reachable", BUILTIN_GALLERY])
    opened, box = outputs[:5], outputs[-1]
    assert opened[0] == BUILTIN_GALLERY == box
    assert opened[2].value == 1 and "24 features of vit-feature-viz/shapes-vit in 3 layer(s)" in opened[4]
    grid = outputs[5]
    assert [caption.split(" · ")[0] for _, caption in grid] == [str(f) for f in FEATURES]
    shown, plots = Galleries().analyses(BUILTIN_GALLERY)  # the tab's box of the gallery's experiment plots
    assert shown.visible and len(plots) == len(EXPERIMENTS)
    assert Galleries().analyses("")[0].visible is False  # nothing opened: no box, no error


@pytest.mark.usefixtures("shipped")
def test_pushed_to_the_hub_its_analyses_show_from_the_repo(hub, monkeypatch):
    """A gallery's experiment plots are read from a Hub repo as from a folder (the app shows them under the grid)."""
    from vit_feature_viz.store.hub import push_gallery

    monkeypatch.setenv("HF_TOKEN", hub.write_token)
    push_gallery(BUILTIN_GALLERY_DIR, "alice/shapes-gallery")
    monkeypatch.delenv("HF_TOKEN")
    pulled = open_gallery("alice/shapes-gallery", token=False)
    assert sorted(name for _, name in pulled.analysis_plots()) == [e.replace("_", "-") for e in EXPERIMENTS]
