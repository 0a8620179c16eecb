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


def hostile(what: str, url: str) -> str:
    """A string a gallery (or a link) may hold that is markup if shown as is: an HTML image and link, a Markdown
    image and link, a script, an entity, a bare URL, an e-mail address, emphasis and math; every address points
    at `url` with 'leak' in it."""
    return (f'{what} <img src="{url}/leak-{what}.png"> ![{what}]({url}/leak-md-{what}.png) '
            f'[{what}]({url}/leak-link-{what}) <a href="{url}/leak-a-{what}">a</a> <script>alert(1)</script> '
            f'&amp; {url}/leak-bare-{what} www.leak.example x@leak.example **{what}** $$x$$')


def make_hostile_gallery(folder: Path, url: str) -> Path:
    """A gallery whose every stored string is hostile(..., url): model id, objective, recipe, dataset name, CLIP
    concept names (analysis/clip_names) and card fields. Layer 1 holds features 0-1, each with a visualization,
    a patch map and one top example, for two objectives."""
    import csv

    from vit_feature_viz.store.folder import GalleryFolder

    image = Image.new("RGB", (16, 16), (30, 160, 90))
    model = hostile("model", url)
    rows = [dict(model_id=model, layer=1, feature=feature, objective=objective, recipe=hostile("recipe", url),
                 steps=3, seed=0, activation=1.5 + feature, activation_init=0.5, image=image, image_patch_map=image,
                 dataset=hostile("dataset", url), top_images=[image], top_scores=[0.9], top_indices=[4],
                 patch_maps=[image])
            for feature in (0, 1) for objective in ("feature", hostile("objective", url))]
    GalleryFolder(folder).add(rows, card_info={"pretty_name": hostile("card", url), "backend": hostile("backend", url),
                                               "license": hostile("license", url), "note": hostile("note", url)})
    names = folder / "analysis" / "clip_names"
    names.mkdir(parents=True)
    with open(names / "run.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["model_id", "layer", "feature", "rank", "name"])
        writer.writeheader()
        writer.writerows({"model_id": model, "layer": 1, "feature": feature, "rank": rank,
                          "name": hostile(f"concept{rank}", url)} for feature in (0, 1) for rank in (1, 2))
    return folder


def one_colour_png(size: tuple[int, int] = (4, 4), mode: str = "RGB") -> bytes:
    """A PNG of one colour: a 1-bit one of 9400x9400 pixels is 11 MB to draw and a few KB stored (a decompression
    bomb for whoever decodes it at full size)."""
    import io

    buffer = io.BytesIO()
    Image.new(mode, size, 1 if mode == "1" else (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_synthetic_gallery(folder: Path, layers: int, features: int | list[int], *, image: bytes | None = None,
                            top_images: int = 0, row_group_size: int = 100_000, model: str = MODEL) -> Path:
    """A gallery folder of `layers` x `features` (a count, or the feature indices) rendered rows, written with
    pyarrow directly: millions of rows in seconds. Every row holds the same `image` (a tiny PNG by default; b""
    for none) and `top_images` copies of it as its top examples."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vit_feature_viz.store.schema import FEATURES

    schema = FEATURES.arrow_schema
    indices = np.arange(features, dtype=np.int32) if isinstance(features, int) else np.array(features, np.int32)
    rows = layers * len(indices)
    image = one_colour_png() if image is None else image
    stored = {"bytes": image, "path": None} if image else None

    def same(name, value):
        return pa.repeat(pa.scalar(value, type=schema.field(name).type), rows)

    def same_list(name, items):  # pa.repeat of a list scalar takes seconds for millions of rows
        kind = schema.field(name).type
        item = pa.array(items, type=kind.value_type)
        values = pa.concat_arrays([item] * rows) if len(item) else item
        return pa.ListArray.from_arrays(pa.array(np.arange(rows + 1, dtype=np.int32) * len(item)), values, type=kind)

    columns = {
        "image": same("image", stored), "image_patch_map": same("image_patch_map", None),
        "model_id": same("model_id", model),
        "layer": pa.array(np.repeat(np.arange(layers, dtype=np.int32), len(indices))),
        "feature": pa.array(np.tile(indices, layers)),
        "objective": same("objective", "feature"), "recipe": same("recipe", "fast"), "steps": same("steps", 2),
        "seed": same("seed", 0), "image_size": same("image_size", 4),
        "activation": pa.array(np.linspace(0, 1, rows, dtype=np.float32)),
        "activation_init": same("activation_init", 0.0),
        "dataset": same("dataset", "test/images" if top_images else None),
        "top_images": same_list("top_images", [stored] * top_images),
        "top_scores": same_list("top_scores", [float(top_images - i) for i in range(top_images)]),
        "top_indices": same_list("top_indices", list(range(top_images))),
        "patch_maps": same_list("patch_maps", [stored] * top_images),
    }
    table = pa.table([columns[name] for name in schema.names], schema=schema)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "data" / "train-00000-of-00001.parquet", row_group_size=row_group_size)
    (folder / "README.md").write_text("---\nlicense: other\n---\n# synthetic gallery\n")
    return folder
