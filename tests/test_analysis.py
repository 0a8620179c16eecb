"""The paper's experiments (vit_feature_viz/analysis): arithmetic on constructed cases, real tiny checkpoints of
each backend, label mapping, and the files a run writes."""

import csv
import re

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from hub_fixtures import IGNORE_CLIENT_UPLOAD_WARNING, parquet_reads, push_parquet_shards
from vit_feature_viz.analysis import (
    cls_isolation,
    foreground_background,
    frequency,
    per_block_cls,
    token_pooling,
)
from vit_feature_viz.analysis.common import Accuracy
from vit_feature_viz.analysis.data import LabelMap, open_labeled
from vit_feature_viz.analysis.frequency import frequency_filter
from vit_feature_viz.errors import VizError
from vit_feature_viz.models import load_model
from vit_feature_viz.models.classifiers import ImageClassifier, from_vision_model, load_classifier

TINY_CLASSES = [f"class_{i}" for i in range(10)]
RUN = dict(batch_size=8, device="cpu", precision="fp32", progress=False)


def _dataset(count=16, names=TINY_CLASSES, size=(40, 48), seed=0):
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for _ in range(count)]
    return datasets.Dataset.from_dict(
        {"image": images, "label": [i % len(names) for i in range(count)], "bbox": [[6, 4, 30, 28]] * count},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(names)),
                                    "bbox": datasets.List(datasets.Value("int64"))}),
    )


def _natural(classifier, dataset):
    """Accuracy of the model's own forward pass, computed without the analysis loop's stages."""
    data = open_labeled(dataset, split="test")
    from vit_feature_viz.analysis.data import batches, prepare

    acc = Accuracy()
    for batch in batches(data, batch_size=8, progress=False):
        acc.add(classifier.logits(prepare(batch.images, classifier.preprocess)), torch.tensor(batch.labels))
    return acc


@pytest.fixture(scope="module")
def tiny(tiny_repos):
    return {role: load_model(tiny_repos[role], device="cpu", precision="fp32") for role in ("vit", "deit", "timm_vit")}


# --- per-block experiments --------------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ["vit", "deit", "timm_vit"])
def test_cls_isolation_at_zero_is_the_natural_accuracy_and_tables_cover_every_depth(tiny, role):
    dataset = _dataset(24)
    natural = _natural(from_vision_model(tiny[role]), dataset)
    result = cls_isolation(tiny[role], dataset, **RUN)
    by_depth = {r["isolated_blocks"]: r for r in result.rows}
    assert sorted(by_depth) == list(range(tiny[role].num_layers + 1))
    assert (by_depth[0]["top1"], by_depth[0]["top5"]) == (natural.top1, natural.top5)
    assert result.settings["images"] == 24


def test_per_block_last_block_and_pooling_with_cls_are_the_natural_accuracy(tiny):
    dataset = _dataset(24)
    natural = _natural(from_vision_model(tiny["vit"]), dataset)
    last = per_block_cls(tiny["vit"], dataset, **RUN).rows[-1]
    assert last["block"] == tiny["vit"].num_layers - 1 and (last["top1"], last["top5"]) == (natural.top1, natural.top5)
    pooled = token_pooling(tiny["vit"], dataset, **RUN).rows
    with_cls = next(r for r in pooled if r["pool"] == "cls")
    assert (with_cls["top1"], with_cls["top5"]) == (natural.top1, natural.top5)
    assert {(r["cls_dropped_after"], r["pool"]) for r in pooled if r["pool"] != "cls"} == {
        (l, p) for l in range(tiny["vit"].num_layers + 1) for p in ("mean", "max")}


def test_pooling_the_patch_tokens_uses_the_models_head_on_the_normed_mean(tiny):
    from vit_feature_viz.analysis.token_pooling import pooled_logits
    from vit_feature_viz.models.stages import token_stages

    model = tiny["vit"]
    stages = token_stages(model)
    images = torch.rand(2, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        hidden = model.module.vit(pixel_values=model.normalize(images)).last_hidden_state  # normed by the model
        expected = model.module.classifier(hidden[:, 1:].mean(dim=1))
        got = pooled_logits(stages, stages.embed(model.normalize(images)))[(model.num_layers, "mean")]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_per_block_experiments_refuse_cnns_and_headless_towers(tiny_repos):
    with pytest.raises(VizError, match="no classification head"):
        cls_isolation(tiny_repos["vit_model"], _dataset(4), **RUN)


# --- foreground / background -----------------------------------------------------------------------------------
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
BOX = [8, 8, 24, 24]  # x0, y0, x1, y1 (exclusive)


def _box_reader(scored: list | None = None) -> ImageClassifier:
    """A 'model' that looks only inside BOX: its logits are the mean colour there, so it ignores the background.
    The size of every batch it scores is appended to `scored`, if given."""
    def logits(images):
        if scored is not None:
            scored.append(len(images))
        return images[:, :, BOX[1] : BOX[3], BOX[0] : BOX[2]].mean(dim=(2, 3))

    return ImageClassifier("constructed/box-reader", "cnn", 32, list(COLOURS), logits)


def _coloured_boxes(count=12):
    rng = np.random.default_rng(3)
    images, labels = [], []
    for i in range(count):
        pixels = rng.integers(0, 120, (32, 32, 3), dtype=np.uint8)  # dim noise: never brighter than the object
        pixels[BOX[1] : BOX[3], BOX[0] : BOX[2]] = list(COLOURS.values())[i % 3]
        images.append(Image.fromarray(pixels))
        labels.append(i % 3)
    return datasets.Dataset.from_dict(
        {"image": images, "label": labels, "bbox": [BOX] * count},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(COLOURS)),
                                    "bbox": datasets.List(datasets.Value("int64"))}),
    )


def test_a_model_that_ignores_the_background_keeps_full_accuracy_on_foreground_only_images():
    result = foreground_background(_box_reader(), _coloured_boxes(12), **RUN)
    by = {r["condition"]: r for r in result.rows}
    assert by["full"]["top1"] == 100.0
    assert by["foreground"]["top1"] == by["full"]["top1"] and by["foreground"]["top1_normalized"] == 100.0
    assert by["background"]["top1"] == pytest.approx(100 / 3)  # the box is black: always the first class


def test_foreground_background_needs_boxes_or_masks(tiny):
    plain = _dataset(4).remove_columns("bbox")
    with pytest.raises(VizError, match="--box-column"):
        foreground_background(tiny["vit"], plain, **RUN)


def _with_boxes(dataset, boxes):
    """`dataset` with its box column replaced by `boxes` (floats, so NaN and infinity can be stored)."""
    return dataset.remove_columns("bbox").add_column("bbox", boxes, feature=datasets.List(datasets.Value("float64")))


@pytest.mark.parametrize("bad, shown", [
    ([8, float("nan"), 24, 24], "[8.0, nan, 24.0, 24.0]"),
    ([8, 8, float("inf"), 24], "[8.0, 8.0, inf, 24.0]"),
    ([8, 8, 24], "[8.0, 8.0, 24.0]"),
])
def test_a_box_that_is_not_4_finite_numbers_is_refused_before_any_image_is_scored(bad, shown):
    """Refused, not skipped: such a box means a wrong column or format (every row is then wrong), and skipping rows
    would change which images the saved accuracies are over."""
    seen = []
    reader = _box_reader(seen)
    boxes = [BOX] * 12
    boxes[7] = bad
    with pytest.raises(VizError) as error:
        foreground_background(reader, _with_boxes(_coloured_boxes(12), boxes), **RUN)
    assert str(error.value).startswith(f"Row 7 of column 'bbox' holds {shown}, not boxes of 4 finite numbers")
    assert "--box-column" in str(error.value) and seen == []  # no image was scored
    streamed = _with_boxes(_coloured_boxes(12), boxes).to_iterable_dataset()
    with pytest.raises(VizError, match=rf"A row of column 'bbox' holds {re.escape(shown)}, not boxes"):
        foreground_background(reader, streamed, **RUN)
    # a bad box after the rows a run uses stops nothing
    result = foreground_background(reader, _with_boxes(_coloured_boxes(12), boxes), max_images=6, **RUN)
    assert result.settings["images"] == 6


# --- frequency ----------------------------------------------------------------------------------------------------
def test_low_pass_at_nyquist_leaves_images_unchanged_and_lower_cutoffs_remove_fine_detail():
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(frequency_filter(images, 0.5, "low"), images, atol=1e-5, rtol=0)
    torch.testing.assert_close(frequency_filter(images, 0.0, "high"), images, atol=1e-5, rtol=0)
    checker = ((torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2).float().expand(1, 3, 32, 32) * 0.5 + 0.25
    torch.testing.assert_close(frequency_filter(checker, 0.25, "low"), torch.full_like(checker, 0.5), atol=1e-5, rtol=0)
    torch.testing.assert_close(frequency_filter(checker, 0.25, "high"), checker, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def resnet(hub_cache_dir, tmp_path_factory):
    """A tiny timm ResNet classifier (timm's own test_resnet, 160 px) saved with safetensors, and a pickle-only copy."""
    import timm
    from timm.models import save_for_hf
    from tiny_checkpoints import place_in_cache

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=10, pretrained=False)
    for repo, safe in (("timm/test_resnet.tiny", True), ("timm/test_resnet.pickle", False)):
        out = tmp_path_factory.mktemp(repo.split("/")[1])
        save_for_hf(model, out, safe_serialization=safe)
        place_in_cache(out, hub_cache_dir, repo)
    return "timm/test_resnet.tiny"


def test_frequency_compares_a_vit_with_a_cnn_and_low_pass_at_nyquist_is_the_natural_accuracy(tiny, resnet):
    dataset = _dataset(12)
    result = frequency([tiny["vit"], resnet], dataset, cutoffs=[0.25, 1.0], **RUN)
    for classifier in (from_vision_model(tiny["vit"]), load_classifier(resnet, device="cpu")):
        natural = _natural(classifier, dataset)
        full = next(r for r in result.rows if r["model_id"] == classifier.model_id and r["filter"] == "low-pass"
                    and r["cutoff"] == 1.0)
        assert (full["top1"], full["top5"]) == (natural.top1, natural.top5)
    assert {(r["model_id"], r["kind"]) for r in result.rows} == {(tiny["vit"].model_id, "vit"), (resnet, "cnn")}
    with pytest.raises(VizError, match="fractions of Nyquist"):
        frequency(tiny["vit"], dataset, cutoffs=[2], **RUN)


def test_occlusion_and_shuffling_run_a_cnn_by_masking_pixels_and_leave_it_unchanged_at_zero(tiny, resnet):
    from vit_feature_viz.analysis import occlusion, patch_shuffle

    dataset = _dataset(6)
    natural = _natural(load_classifier(resnet, device="cpu"), dataset)
    dropped = occlusion([tiny["vit"], resnet], dataset, fractions=[0, 0.5], **RUN)
    cnn = {(r["order"], r["fraction"]): r for r in dropped.rows if r["model_id"] == resnet}
    assert {(r["drop"], r["grid"]) for r in cnn.values()} == {("pixels", 10)}  # 160 px in 16 px cells
    assert cnn[("random", 0)]["top1"] == natural.top1 and cnn[("random", 0.5)]["patches_dropped"] == 50
    shuffled = patch_shuffle([tiny["vit"], resnet], dataset, grids=[1, 4], **RUN)
    assert next(r["top1"] for r in shuffled.rows if r["model_id"] == resnet and r["grid"] == 1) == natural.top1


def test_cnns_load_by_name_with_the_pickle_rule_and_are_refused_where_blocks_are_run(resnet):
    classifier = load_classifier(resnet, device="cpu")
    assert classifier.kind == "cnn" and classifier.image_size == 160 and len(classifier.class_names) == 10
    with pytest.raises(VizError, match="--allow-pickle"):
        load_classifier("timm/test_resnet.pickle", device="cpu")
    with pytest.raises(VizError, match="not a Vision Transformer"):
        token_pooling(classifier, _dataset(2), **RUN)


# --- labels and files ---------------------------------------------------------------------------------------------
def test_labels_are_mapped_to_the_models_classes_by_name_or_refused_in_one_line(tiny):
    names = ["Class 3", "class-1", "class_0"]
    data = open_labeled(_dataset(6, names=names), split="test")
    assert LabelMap(data, TINY_CLASSES, "m")([0, 1, 2]).tolist() == [3, 1, 0]
    synonyms = LabelMap(data, ["x", "class_1, first", "y", "class 0", "class 3, third"], "m")
    assert synonyms([0, 1, 2]).tolist() == [4, 1, 3]
    unknown = open_labeled(_dataset(4, names=["cat", "dog"]), split="test")
    with pytest.raises(VizError, match=r"2 label\(s\).*\(cat, dog\) are not classes of 'tiny-org/vit-classifier'"):
        cls_isolation(tiny["vit"], unknown.dataset, **RUN)


def test_a_run_saves_a_table_with_its_settings_and_a_png_under_analysis(tiny, tmp_path):
    result = per_block_cls(tiny["vit"], _dataset(8), max_images=5, **RUN)
    files = result.save(tmp_path)
    assert files["table"].parent == tmp_path / "analysis" / "per_block_cls"
    with open(files["table"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == tiny["vit"].num_layers
    assert rows[0]["images"] == "5" and rows[0]["max_images"] == "5" and "vit-classifier" in rows[0]["models"]
    assert Image.open(files["plot"]).size[0] > 400
    assert result.save(tmp_path) == files  # same settings: same files, replaced


@IGNORE_CLIENT_UPLOAD_WARNING
def test_a_cap_on_images_reads_only_the_first_shard_of_a_hub_dataset(tiny, hub, tmp_path):
    """Three labelled parquet shards on the loopback Hub: a capped run streams, asks for the first shard's bytes
    only, and counts what a run over the fully loaded split counts in those rows."""
    shards = push_parquet_shards(hub, "alice/labelled", _dataset(24), 3, tmp_path / "shards")
    capped = frequency(tiny["vit"], "alice/labelled", split="train", max_images=8, cutoffs=[0.25, 1], **RUN)
    assert parquet_reads(hub, "alice/labelled") == shards[:1]
    whole = datasets.load_dataset(str(tmp_path / "shards"), split="train")  # every shard, in memory
    expected = frequency(tiny["vit"], whole, split="train", max_images=8, cutoffs=[0.25, 1], **RUN)
    assert capped.rows == expected.rows and capped.settings["images"] == 8


# --- command line -------------------------------------------------------------------------------------------------
def test_cli_analyze_writes_table_and_plot_and_fails_in_one_line(tiny_repos, tmp_path, capsys):
    from vit_feature_viz.cli import main
    from vit_feature_viz.data.shapes import shapes_dataset

    _dataset(6).save_to_disk(str(tmp_path / "data"))
    code = main(["analyze", "cls-isolation", tiny_repos["vit"], tiny_repos["deit"], "--dataset", str(tmp_path / "data"),
                 "--out", str(tmp_path / "gallery"), "--device", "cpu", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0 and "vit-classifier: natural" in err and "deit: natural" in err
    table, plot = out.split()
    assert table.endswith(".csv") and plot.endswith(".png") and "/analysis/cls_isolation/" in table
    assert sorted(p.name for p in (tmp_path / "gallery" / "analysis" / "cls_isolation").iterdir()) == sorted(
        [table.split("/")[-1], plot.split("/")[-1]])

    shapes_dataset(6, size=32).save_to_disk(str(tmp_path / "shapes"))
    capsys.readouterr()
    code = main(["analyze", "per-block-cls", tiny_repos["vit"], "--dataset", str(tmp_path / "shapes"),
                 "--split", "train", "--out", str(tmp_path / "gallery"), "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    error = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(error) == 1 and "(disc, square, triangle, ...) are not classes of" in error[0]


def test_cli_analyze_without_out_writes_a_gallery_of_its_own_beside_other_files(tiny_repos, tmp_path, monkeypatch,
                                                                                 capsys):
    """The default --out is a new gallery folder, so a run in a folder holding other files is not refused."""
    from vit_feature_viz.analysis.cli import DEFAULT_OUT
    from vit_feature_viz.cli import main

    _dataset(4).save_to_disk(str(tmp_path / "data"))
    (tmp_path / "notes.txt").write_text("not a gallery")
    monkeypatch.chdir(tmp_path)
    code = main(["analyze", "cls-isolation", tiny_repos["vit"], "--dataset", "data", "--device", "cpu", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert any((tmp_path / DEFAULT_OUT / "analysis" / "cls_isolation").glob("*.csv"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["data", "notes.txt", DEFAULT_OUT])


def test_results_in_a_gallery_folder_are_pushed_with_it_and_strays_are_not(tiny, tmp_path, hub):
    from vit_feature_viz.store.folder import GalleryFolder
    from vit_feature_viz.store.hub import push_gallery

    folder = tmp_path / "gallery"
    files = per_block_cls(tiny["vit"], _dataset(4), **RUN).save(folder)  # results first: the folder stays usable
    GalleryFolder(folder).add([{"model_id": "m", "layer": 0, "feature": 0, "objective": "feature",
                                "image": Image.new("RGB", (8, 8))}])
    (folder / "analysis" / "per_block_cls" / ".partial.csv.tmp").write_text("x")
    (folder / "analysis" / "notes.txt").write_text("x")
    push_gallery(folder, "alice/with-analysis", token=hub.write_token)
    remote = hub.files("alice/with-analysis")
    wanted = {p.relative_to(folder).as_posix() for p in files.values()}
    assert wanted <= set(remote) and not any("notes" in p or ".tmp" in p for p in remote)
    assert remote[files["table"].relative_to(folder).as_posix()] == files["table"].read_bytes()


# --- trained shapes fixtures with their boxes ---------------------------------------------------------------------
def test_trained_shapes_fixture_needs_its_foreground_more_than_its_background():
    from pathlib import Path

    fixture = str(Path(__file__).resolve().parent.parent / "vit_feature_viz" / "data" / "models" / "shapes-shape-vit-a")
    result = foreground_background(fixture, "vit-feature-viz/shapes-shape", max_images=48, **RUN)
    by = {r["condition"]: r for r in result.rows}
    assert by["full"]["top1"] >= 50  # trained: far above the 1-in-6 chance
    assert by["foreground"]["top1_normalized"] > by["background"]["top1_normalized"] + 10  # 34 vs 20 when written
    assert result.settings["region_column"] == "bbox" and result.settings["images"] == 48
