"""The "Explore galleries" tab's API (/open_gallery, /feature_page, /show_layer, /compare), called with
gradio_client against app.py served on loopback, on a gallery folder made by the real renderer."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from gradio_client.exceptions import AppError

from app_fixtures import client, server  # noqa: F401 (fixtures: app.py served on loopback, its gradio_client)
from gallery_fixtures import MODEL, TOP_K, browse_gallery  # noqa: F401 (a fixture)
from vit_feature_viz.app import galleries_tab
from vit_feature_viz.app.galleries_tab import ENV_FEATURED, featured_galleries
from vit_feature_viz.gallery import GalleryFolder

pytestmark = pytest.mark.slow


def value(output):
    """An output's value, also when the endpoint returned a component update ({'__type__': 'update', ...})."""
    return output.get("value") if isinstance(output, dict) and output.get("__type__") == "update" else output


def test_open_a_gallery_and_a_feature_page(client, browse_gallery):
    source, model, layer, objective, summary = map(value, client.predict(str(browse_gallery),
                                                                          api_name="/open_gallery"))
    assert (source, model, layer, objective) == (str(browse_gallery), MODEL, 1, "feature")
    assert "6 features" in summary and "2 layer(s)" in summary

    result = client.predict(source, model, 1, objective, 2, api_name="/feature_page")
    header, link, visualizations, examples, stats = map(value, result[:5])
    assert "Layer 1 · feature 2" in header
    assert link.endswith(f"?gallery={browse_gallery}&layer=1&feature=2") and link.startswith("http://127.0.0.1:")
    assert len(visualizations) == 2  # the optimized image and its patch map
    assert len(examples) == 2 * TOP_K  # each example and its patch map
    assert all(Path(item["image"]).is_file() for item in visualizations + examples)
    stored = {r["feature"]: r for r in GalleryFolder(browse_gallery).rows() if r["layer"] == 1}
    values = dict(stats["data"])
    assert float(values["activation"]) == pytest.approx(stored[2]["activation"], rel=1e-3)
    assert float(values["top example score"]) == pytest.approx(max(stored[2]["top_scores"]), rel=1e-3)

    grid, _, note = client.predict(source, model, 2, objective, 1, api_name="/show_layer")
    assert [item["caption"].split(" · ")[0] for item in grid] == ["0", "1"] and "Layer 2: features 0-1" in note


def test_compare_two_galleries(client, browse_gallery, tmp_path, monkeypatch):
    other = tmp_path / "other"
    shutil.copytree(browse_gallery, other)
    left, right, note = client.predict(str(browse_gallery), MODEL, 1, "feature", str(other), "1-2",
                                       api_name="/compare")
    assert [i["caption"].split(" · ")[0] for i in left] == ["1", "2"] == [i["caption"].split(" · ")[0] for i in right]
    assert str(other) in note
    with pytest.raises(AppError, match=r"out of range.*holds features 0-3\)"):
        client.predict(str(browse_gallery), MODEL, 1, "feature", str(other), "0-30", api_name="/compare")
    monkeypatch.setattr(galleries_tab, "COMPARE_MAX", 2)  # the app runs in this process
    with pytest.raises(AppError, match="3 features asked for, more than the 2 allowed per request"):
        client.predict(str(browse_gallery), MODEL, 1, "feature", str(other), "0-2", api_name="/compare")


def test_errors_are_one_line(client, browse_gallery, tmp_path):
    cases = [
        ((str(browse_gallery), MODEL, 1, "feature", 99), "/feature_page", "no feature 99 in layer 1"),
        ((str(browse_gallery), MODEL, 5, "feature", 0), "/feature_page", "no layer 5"),
    ]
    for args, api, needle in cases:
        with pytest.raises(AppError, match=needle) as err:
            client.predict(*args, api_name=api)
        assert "\n" not in str(err.value) and "Traceback" not in str(err.value)
    with pytest.raises(AppError, match="is not a gallery folder"):
        client.predict(str(tmp_path), api_name="/open_gallery")


def test_a_public_space_opens_only_hub_ids_and_links_to_its_page(client, browse_gallery, monkeypatch):
    monkeypatch.setenv("SYSTEM", "spaces")  # the app runs in this process: it now believes it is on a Space
    monkeypatch.setenv("SPACE_ID", "org/space")
    with pytest.raises(AppError, match="is a local path: here enter a Hub dataset id"):
        client.predict(str(browse_gallery), api_name="/open_gallery")
    assert galleries_tab.base_url(None) == "https://huggingface.co/spaces/org/space"  # the Space page hands its query on


def test_featured_galleries_from_the_file_or_the_environment(tmp_path):
    config = tmp_path / "featured.yaml"
    config.write_text("galleries:\n  - id: org/a\n    title: A gallery\n  - id: org/b\n  - nonsense\n")
    assert [g["id"] for g in featured_galleries({}, config)] == ["org/a", "org/b"]
    assert featured_galleries({}, config)[0]["title"] == "A gallery"
    assert [g["id"] for g in featured_galleries({ENV_FEATURED: "x/y, z/w"}, config)] == ["x/y", "z/w"]
    assert featured_galleries({}, tmp_path / "missing.yaml") == []
    assert featured_galleries({}) == []  # the shipped file parses (and lists none until galleries are pushed)
