"""Gallery folders round-trip through the real ``datasets.load_dataset`` and stay safe to grow and push."""

from __future__ import annotations

import hashlib
import multiprocessing
import uuid
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard

from helpers import same_pixels
from vit_feature_viz.errors import VizError
from vit_feature_viz.store.folder import GalleryFolder
from vit_feature_viz.store.schema import FEATURES, merge_key

MODEL = "google/vit-base-patch16-224"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Loading a local folder must not need the network; prove it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


def img(seed: int, size: int = 8) -> PIL.Image.Image:
    """Random pixels, so any re-encoding or mix-up shows."""
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def viz_row(feature: int, layer: int = 3, model: str = MODEL, **extra) -> dict:
    """A row as the renderer produces it: optimized image, no dataset examples yet."""
    return {
        "model_id": model, "layer": layer, "feature": feature, "objective": "channel",
        "image": img(1000 + feature), "image_patch_map": img(2000 + feature), "recipe": "fourier-decorrelated",
        "steps": 64, "seed": 7, "image_size": 8, "activation": 1.5 + feature, "activation_init": 0.25, **extra,
    }


def examples_row(feature: int, layer: int = 3) -> dict:
    """A row as the dataset scan produces it: only examples columns besides the key."""
    return {
        "model_id": MODEL, "layer": layer, "feature": feature, "objective": "channel", "dataset": "ylecun/mnist",
        "top_images": [img(3000 + feature), img(3100 + feature)], "top_scores": [9.5, 4.25],
        "top_indices": [11, 22], "patch_maps": [img(4000 + feature), img(4100 + feature)],
    }


def load(folder: Path, tmp_path: Path) -> datasets.Dataset:
    """The real consumer path; a fresh cache dir so no earlier load is reused."""
    return datasets.load_dataset(str(folder), split="train", cache_dir=str(tmp_path / f"cache-{uuid.uuid4().hex}"))


def by_key(ds) -> dict:
    return {merge_key(r): r for r in ds}


def file_hashes(folder: Path) -> dict[str, str]:
    """Content hashes of every file (hidden ones too), independent of mtimes."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_rows_and_pixels_survive_load_dataset(tmp_path):
    g = GalleryFolder(tmp_path / "gal")
    assert not g.exists()
    rows = [viz_row(f) for f in range(3)]
    g.add(rows, card_info={"backend": "timm"})

    assert g.exists()
    ds = load(g.path, tmp_path)
    assert ds.features == FEATURES
    assert len(ds) == 3
    loaded = by_key(ds)
    for row in rows:
        got = loaded[merge_key(row)]
        assert same_pixels(got["image"], row["image"])
        assert same_pixels(got["image_patch_map"], row["image_patch_map"])
        for col in ("recipe", "steps", "seed", "image_size", "activation", "activation_init"):
            assert got[col] == pytest.approx(row[col])
        assert got["dataset"] is None and got["top_images"] == [] and got["top_scores"] == []

    assert g.keys() == {merge_key(r) for r in rows}
    assert [same_pixels(a["image"], b["image"]) for a, b in zip(g.rows(), rows)] == [True] * 3


def test_images_are_self_contained_png(tmp_path):
    """datasets would store a file-backed PIL image as a path (dangling once pushed) and keep JPEG bytes."""
    jpg = tmp_path / "example.jpg"
    img(5, size=16).save(jpg, format="JPEG")
    g = GalleryFolder(tmp_path / "gal")
    g.add([{**examples_row(0), "top_images": [PIL.Image.open(jpg)], "image": PIL.Image.open(jpg)}])

    [shard] = (g.path / "data").glob("*.parquet")
    stored = pq.read_table(shard, columns=["image", "top_images"]).to_pylist()[0]
    for cell in (stored["image"], stored["top_images"][0]):
        assert cell["path"] is None and cell["bytes"].startswith(PNG_SIGNATURE)
    decoded_jpeg = PIL.Image.open(jpg).convert("RGB")
    jpg.unlink()  # the gallery must not depend on the source file
    assert same_pixels(load(g.path, tmp_path)[0]["image"], decoded_jpeg)


def test_adding_features_adds_rows_and_loses_none(tmp_path):
    g = GalleryFolder(tmp_path / "gal")
    g.add([viz_row(f) for f in range(3)])
    g.add([viz_row(f) for f in range(3, 7)] + [viz_row(0, layer=5)])

    ds = load(g.path, tmp_path)
    assert len(ds) == 8
    assert set(by_key(ds)) == g.keys() == {merge_key(viz_row(f)) for f in range(7)} | {(MODEL, 5, 0, "channel")}
    assert len(list((g.path / "data").glob("*.parquet"))) == 2


def test_merging_examples_keeps_image_and_leaves_other_shards_identical(tmp_path):
    g = GalleryFolder(tmp_path / "gal")
    [shard_a] = g.add([viz_row(f) for f in range(3)])
    [shard_b] = g.add([viz_row(f) for f in range(3, 5)])
    before = file_hashes(g.path / "data")

    written = g.add([examples_row(0), examples_row(1)])

    assert written == [shard_a]
    after = file_hashes(g.path / "data")
    assert set(after) == set(before)  # no new shard, no leftover temp file
    assert after[shard_b.name] == before[shard_b.name]
    assert after[shard_a.name] != before[shard_a.name]

    loaded = by_key(load(g.path, tmp_path))
    assert len(loaded) == 5
    for f in (0, 1):
        got, viz, ex = loaded[merge_key(viz_row(f))], viz_row(f), examples_row(f)
        assert same_pixels(got["image"], viz["image"])  # kept
        assert got["activation"] == pytest.approx(viz["activation"])  # None did not overwrite
        assert got["dataset"] == "ylecun/mnist"
        assert got["top_scores"] == ex["top_scores"] and got["top_indices"] == ex["top_indices"]
        assert all(map(same_pixels, got["top_images"], ex["top_images"]))
        assert all(map(same_pixels, got["patch_maps"], ex["patch_maps"]))
    assert loaded[merge_key(viz_row(2))]["top_images"] == []


def test_new_values_replace_and_mixed_add_touches_only_needed_shards(tmp_path):
    g = GalleryFolder(tmp_path / "gal")
    [shard_a] = g.add([viz_row(f) for f in range(2)])
    [shard_b] = g.add([viz_row(f) for f in range(2, 4)])
    b_before = file_hashes(g.path / "data")[shard_b.name]

    written = g.add([{**examples_row(1), "activation": 42.0}, viz_row(9)])

    assert written[0] == shard_a and len(written) == 2 and written[1].name.startswith("train-")
    assert file_hashes(g.path / "data")[shard_b.name] == b_before
    loaded = by_key(load(g.path, tmp_path))
    assert len(loaded) == 5
    assert loaded[merge_key(viz_row(1))]["activation"] == pytest.approx(42.0)


def test_card_parses_and_remembers_info(tmp_path):
    g = GalleryFolder(tmp_path / "gal")
    g.add([viz_row(f) for f in range(3)], card_info={"backend": "timm"})
    card = DatasetCard.load(g.path / "README.md")
    data = card.data.to_dict()
    [config] = data["configs"]
    assert config["config_name"] == "default" and config["data_files"] == [{"split": "train", "path": "data/*.parquet"}]
    assert config["description"].startswith("vit-feature-viz gallery, content ")
    assert data["tags"] == ["feature-visualization", "vision-transformer", "timm"]
    assert data["license"] == "other"
    assert data["size_categories"] == ["n<1K"]
    assert MODEL in data["pretty_name"]
    assert f"https://huggingface.co/{MODEL}" in card.text
    assert "load_dataset(" in card.text and "| 3 | 2 | channel |" in card.text

    # A license set by hand survives, and the backend is remembered without being passed again.
    (g.path / "README.md").write_text(card.content.replace("license: other", "license: mit"))
    g.add([examples_row(0)])
    data = DatasetCard.load(g.path / "README.md").data.to_dict()
    assert data["license"] == "mit"
    assert "timm" in data["tags"]
    assert "ylecun/mnist" in DatasetCard.load(g.path / "README.md").text

    shards = file_hashes(g.path / "data")
    g.write_card({"repo_id": "someone/vit-features"})
    assert 'load_dataset("someone/vit-features", split="train")' in (g.path / "README.md").read_text()
    assert file_hashes(g.path / "data") == shards and g.add([]) == []


def test_card_follows_hub_conventions(tmp_path):
    """Licence fields complete, a task category, declared image features, every backend, no links to local paths."""
    g = GalleryFolder(tmp_path / "gal")
    local_model = str(tmp_path / "my-checkpoint")
    (tmp_path / "my-checkpoint").mkdir()
    g.add([viz_row(0)], card_info={"backend": "transformers"})
    g.add([viz_row(1, model=local_model), {**examples_row(1), "dataset": str(tmp_path / "photos")}],
          card_info={"backend": "timm"})
    g.add([viz_row(2, model="laion/CLIP-ViT-B-32")], card_info={"backend": "open_clip"})

    card = DatasetCard.load(g.path / "README.md")
    data = card.data
    assert (data.license, data.license_name, data.license_link) == \
        ("other", "upstream-model-and-dataset-licenses", "README.md")
    assert "## License" in card.text and f"[{MODEL}](https://huggingface.co/{MODEL})" in card.text
    assert data.task_categories == ["image-feature-extraction"]
    assert {"transformers", "timm", "open_clip"} <= set(data.tags)
    assert data.vit_feature_viz["backend"] == ["transformers", "timm", "open_clip"]
    assert f"https://huggingface.co/{local_model}" not in card.text and f"<code>{local_model}</code>" in card.text
    assert "huggingface.co/datasets/" + str(tmp_path) not in card.text.replace("//", "/")
    declared = datasets.Features._from_yaml_list(data.dataset_info["features"])
    assert declared == FEATURES
    assert [f["name"] for f in data.dataset_info["features"] if f.get("dtype") == "image"] == ["image", "image_patch_map"]
    assert load(g.path, tmp_path).features == FEATURES

    g.write_card({"license": "cc-by-4.0"})  # the owner checked the upstream terms and picked a licence
    data = DatasetCard.load(g.path / "README.md").data
    assert data.license == "cc-by-4.0" and "license_name" not in data.to_dict() and "license_link" not in data.to_dict()


def _add_in_batches(folder: str, rank: int) -> None:
    """Child process of the concurrency test: 20 rows in 4 adds, interleaving with the other rank."""
    g = GalleryFolder(folder)
    for batch in range(4):
        g.add([viz_row(100 * rank + 5 * batch + i, layer=rank) for i in range(5)], shard_prefix=f"train-rank{rank}")


def test_two_processes_add_concurrently(tmp_path):
    folder = tmp_path / "gal"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_add_in_batches, args=(str(folder), rank)) for rank in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]

    g = GalleryFolder(folder)
    expected = {(MODEL, rank, 100 * rank + i, "channel") for rank in (0, 1) for i in range(20)}
    assert g.keys() == expected
    assert set(by_key(load(folder, tmp_path))) == expected
    assert len(list((folder / "data").glob("*.parquet"))) == 8
    assert not list(folder.rglob("*.tmp"))
    assert "40 (40 rows)" in DatasetCard.load(folder / "README.md").text


# datasets' writer is abandoned mid-file; its __del__ then complains that our temp file is closed.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_interrupted_write_leaves_no_partial_shard(tmp_path, monkeypatch):
    g = GalleryFolder(tmp_path / "gal")
    g.add([viz_row(f) for f in range(3)])
    before = file_hashes(g.path / "data")
    card_before = (g.path / "README.md").read_bytes()

    def boom(self, *args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", boom)
    with pytest.raises(KeyboardInterrupt):
        g.add([viz_row(f) for f in range(3, 6)])  # new shard
    with pytest.raises(KeyboardInterrupt):
        g.add([examples_row(0)])  # in-place rewrite of the existing shard
    assert file_hashes(g.path / "data") == before
    assert (g.path / "README.md").read_bytes() == card_before
    monkeypatch.undo()

    # A writer killed hard (no cleanup) leaves a hidden temp: loaders ignore it, the next add removes it.
    (g.path / "data" / ".train-x.parquet.dead.tmp").write_bytes(b"PAR1 partial")
    assert len(load(g.path, tmp_path)) == 3
    g.add([viz_row(3)])
    assert not list(g.path.rglob("*.tmp"))
    assert len(load(g.path, tmp_path)) == 4


def test_not_a_gallery_is_a_viz_error(tmp_path):
    with pytest.raises(VizError, match="does not exist"):
        GalleryFolder(tmp_path / "missing").rows()
    (tmp_path / "empty").mkdir()
    with pytest.raises(VizError, match="not a gallery folder"):
        GalleryFolder(tmp_path / "empty").keys()

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(VizError, match="choose a new or empty output folder"):
        GalleryFolder(busy).add([viz_row(0)])
    assert not (busy / "data").exists() and not (busy / "README.md").exists()

    foreign = tmp_path / "foreign"
    (foreign / "data").mkdir(parents=True)
    datasets.Dataset.from_dict({"text": ["a"]}).to_parquet(str(foreign / "data" / "x.parquet"))
    with pytest.raises(VizError, match="not a gallery shard"):
        GalleryFolder(foreign).rows()


def test_bad_rows_are_rejected_before_writing(tmp_path):
    g = GalleryFolder(tmp_path / "gal")
    with pytest.raises(ValueError, match="Unknown gallery column"):
        g.add([{**viz_row(0), "colour": "red"}])
    with pytest.raises(ValueError, match="key field"):
        g.add([{"model_id": MODEL, "layer": 1, "feature": 2}])
    assert not g.exists()
    assert merge_key({"model_id": MODEL, "layer": np.int64(3), "feature": 4, "objective": "channel"}) == (
        MODEL, 3, 4, "channel",
    )


def test_reloading_after_an_add_sees_the_new_rows(tmp_path, monkeypatch):
    """datasets caches a local folder by its card's configs; the content fingerprint there keeps it fresh."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    g = GalleryFolder(tmp_path / "gal")
    g.add([viz_row(f) for f in range(2)])
    assert len(datasets.load_dataset(str(g.path), split="train", cache_dir=str(tmp_path / "cache"))) == 2
    g.add([viz_row(5)])
    g.add([examples_row(0)])
    reloaded = datasets.load_dataset(str(g.path), split="train", cache_dir=str(tmp_path / "cache"))
    assert len(reloaded) == 3 and any(scores for scores in reloaded["top_scores"])
