"""After a command, the user knows where to look: render says how to open the gallery or writes PNG files with
--png; analyze runs on the default model like every other command."""

import csv

from PIL import Image

from vit_feature_viz.cli import main
from vit_feature_viz.store.folder import GalleryFolder


def test_render_writes_png_files_equal_to_the_gallery_images(tiny_repos, tmp_path, capfd):
    out, png = tmp_path / "gallery", tmp_path / "png"
    code = main(["render", tiny_repos["vit"], "--layer", "1", "--features", "0-2", "--steps", "2", "--quiet",
                 "--out", str(out), "--png", str(png)])
    err = capfd.readouterr().err
    assert code == 0, err
    assert "wrote 3 PNG file(s) of layer 1" in err
    for row in GalleryFolder(out).rows():
        with Image.open(png / f"layer1-feature-feature{row['feature']}.png") as saved:
            assert saved.tobytes() == row["image"].convert(saved.mode).tobytes()


def test_render_without_png_says_how_to_look_at_the_gallery(tiny_repos, tmp_path, capfd):
    code = main(["render", tiny_repos["vit"], "--layer", "0", "--features", "0", "--steps", "1", "--quiet",
                 "--out", str(tmp_path / "g")])
    assert code == 0
    assert f"look at them: vit-feature-viz open {tmp_path / 'g'} (the app, on this gallery)" in capfd.readouterr().err


def test_analyze_without_a_model_uses_the_default_one(tmp_path, capfd):
    """Offline (the suite's HF_HUB_OFFLINE=1) the default is the built-in shapes ViT, which knows the shapes classes."""
    code = main(["analyze", "per-block-cls", "--dataset", "vit-feature-viz/shapes-shape", "--max-images", "16",
                 "--quiet", "--device", "cpu", "--out", str(tmp_path / "out")])
    out, err = capfd.readouterr()
    assert code == 0, err
    assert "note: The Hugging Face Hub cannot be reached: using the built-in model" in err
    with open(out.splitlines()[0]) as f:
        assert "shapes" in next(csv.DictReader(f))["model_id"]


def test_png_export_decodes_only_the_rows_it_writes(browse_gallery, tmp_path, monkeypatch):
    """Layer 2 of a gallery that also holds layer 1 (rendered, with dataset examples): two images decoded, two files."""
    from vit_feature_viz.jobs import export_pngs
    from vit_feature_viz.store import encoding

    decoded = []
    real = encoding.decode_image
    monkeypatch.setattr(encoding, "decode_image", lambda *a, **k: decoded.append(1) or real(*a, **k))
    written = export_pngs(browse_gallery, tmp_path / "png", "tiny-org/vit-classifier", 2, "feature")
    assert sorted(p.name for p in written) == ["layer2-feature-feature0.png", "layer2-feature-feature1.png"]
    assert len(decoded) == 2
    rows = {r["feature"]: r["image"] for r in GalleryFolder(browse_gallery).rows() if r["layer"] == 2}
    with Image.open(tmp_path / "png" / "layer2-feature-feature1.png") as saved:
        assert saved.tobytes() == rows[1].convert(saved.mode).tobytes()
