"""Linear probes: the head a self-supervised checkpoint lacks, so the paper's accuracy experiments run on it.

Real components: the tiny DINOv2 checkpoint (no head, a CLS token) from the offline Hub cache, the built-in shapes
sets (their "train" split holds other images than the "test" split the experiments evaluate), the real CLI."""

import csv
import json

import pytest
import torch

from vit_feature_viz.analysis import cls_isolation, per_block_cls
from vit_feature_viz.analysis.common import load_classifiers
from vit_feature_viz.analysis.data import open_labeled
from vit_feature_viz.analysis.probe import (
    ProbeRequest,
    _logistic_regression,
    cls_vectors,
    linear_probe,
    load_probe,
    probe_classes,
)
from vit_feature_viz.cli import main
from vit_feature_viz.errors import VizError
from vit_feature_viz.models.stages import token_stages

SHAPES = "vit-feature-viz/shapes-color"
RUN = dict(batch_size=16, device="cpu", precision="fp32", progress=False)
PROBE = ProbeRequest(SHAPES, "train", max_images=240, progress=False)


def test_logistic_regression_separates_separable_classes():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 8, generator=generator) * 4
    labels = torch.arange(3).repeat(40)
    points = centres[labels] + torch.randn(120, 8, generator=generator)
    weight, bias = _logistic_regression(points, labels, 3)
    assert weight.shape == (3, 8) and ((points @ weight.T + bias).argmax(1) == labels).all()


def test_probe_classes_come_from_the_dataset_labels():
    data = open_labeled(SHAPES, split="train")
    names, targets = probe_classes(data, [0, 2, 1])
    assert names == data.label_names and targets.tolist() == [0, 2, 1]
    assert probe_classes(data.__class__(None, "x", "image", "label", None), ["dog", "cat", "dog"])[0] == ["cat", "dog"]


def test_the_train_split_of_a_builtin_set_holds_other_images():
    first = lambda split: open_labeled(SHAPES, split=split).dataset[0]["image"]  # noqa: E731
    assert first("train").tobytes() != first("test").tobytes()


def test_a_headless_model_is_refused_with_the_probe_as_fix(tiny_repos):
    with pytest.raises(VizError, match=r"no classification head: pass --probe-split train"):
        load_classifiers(tiny_repos["dinov2"], allow_cnn=False, device="cpu")


def test_a_probe_makes_dinov2_classify_and_the_blockwise_walk_reads_it(tiny_repos):
    """The probed classifier's logits are the probe on the final-normed CLS token; CLS isolation at depth 0 is the
    unchanged model, so its accuracy is the probed classifier's own; the probe fits its split above chance."""
    (clf,) = load_classifiers(tiny_repos["dinov2"], allow_cnn=False, probe=PROBE, device="cpu", precision="fp32")
    test = open_labeled(SHAPES)
    assert clf.probe.images == 240 and clf.class_names == test.label_names
    assert clf.probe.train_top1 > 100 / len(clf.class_names) * 2
    images = torch.rand(4, 3, clf.image_size, clf.image_size, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(clf.logits(images), clf.probe(cls_vectors(token_stages(clf.vision_model), images)))
    result = cls_isolation([clf], SHAPES, max_images=64, **RUN)
    unchanged = next(r for r in result.rows if r["isolated_blocks"] == 0)
    rows = test.dataset.select(range(64))
    predictions = clf.logits(torch.stack([clf.preprocess(image) for image in rows["image"]]))
    labels = torch.tensor(rows["label"])
    assert unchanged["top1"] == pytest.approx(100 * float((predictions.argmax(1) == labels).float().mean()))
    assert "linear probe on 240 images" in json.dumps(result.settings)


def test_a_kept_probe_is_read_back_not_refitted(tiny_repos, tmp_path, monkeypatch):
    from vit_feature_viz.analysis import probe as probe_module
    from vit_feature_viz.models import load_model

    model = load_model(tiny_repos["dinov2"], device="cpu", precision="fp32")
    request = ProbeRequest(SHAPES, "train", max_images=48, progress=False, cache=str(tmp_path))
    fitted = linear_probe(model, request)
    monkeypatch.setattr(probe_module, "fit_linear_probe", lambda *a, **k: pytest.fail("refitted"))
    again = linear_probe(model, request)
    assert again.describe() == fitted.describe() and torch.equal(again.weight, fitted.weight)
    other = ProbeRequest(SHAPES, "train", max_images=24, progress=False, cache=str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match="refitted"):
        linear_probe(model, other)  # another split size is another probe


def test_analyze_fits_a_probe_from_the_command_line(tiny_repos, tmp_path, capsys):
    code = main(["analyze", "per-block-cls", tiny_repos["dinov2"], "--dataset", SHAPES, "--probe-split", "train",
                 "--probe-images", "96", "--max-images", "32", "--batch-size", "16", "--device", "cpu", "--quiet",
                 "--out", str(tmp_path / "out")])
    assert code == 0
    table = capsys.readouterr().out.splitlines()[0]
    with open(table) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["block"]) for r in rows] == [0, 1, 2, 3]
    assert "linear probe on 96 images" in rows[0]["probes"]
    (kept,) = (tmp_path / "out" / ".progress" / "probes").glob("*.safetensors")
    assert load_probe(kept).describe() in rows[0]["probes"]  # the next experiment on this split reads it back
