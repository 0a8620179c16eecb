"""The "Analyses" tab through a real Gradio server and gradio_client: a trained shapes fixture on the built-in
shapes set, the preset's image cap, and results saved into the session gallery."""

from pathlib import Path

from app_fixtures import ROOT, app_error

FIXTURE = str(ROOT / "vit_feature_viz" / "data" / "models" / "shapes-color-vit-a")


def analyze(client, model, experiment="CLS isolation", dataset="vit-feature-viz/shapes-color", max_images=20,
            layer=0, feature=0):
    return client.predict(model, experiment, dataset, "test", max_images, layer, feature, api_name="/analyze")


def test_analyze_runs_on_the_loaded_model_and_saves_into_the_session_gallery(client):
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert [p["parameter_name"] for p in endpoints["/analyze"]["parameters"]] == [
        "model_id", "experiment", "dataset", "split", "max_images", "layer", "feature", "probe_split"]
    plot, table, summary = analyze(client, FIXTURE)
    assert Path(plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert table["headers"][:4] == ["model_id", "isolated_blocks", "top1", "top5"]
    rows = table["data"]
    assert [row[1] for row in rows] == list(range(7)), sorted(table)  # 6 blocks: l = 0..6
    assert rows[0][2] >= 90  # the trained fixture at l = 0: its natural accuracy on 20 test images
    assert "natural" in summary and "never joined" in summary
    assert client.predict(FIXTURE, 0, 0, api_name="/feature_names") == ""  # no "No CLIP names yet" after it


def test_the_experiment_menu_offers_naming_only_for_a_model_with_a_text_tower(tiny_repos):
    from vit_feature_viz.app.analysis_tab import CLIP_NAMES_LABEL, experiment_choices
    from vit_feature_viz.app.common import ModelCache

    models = ModelCache()
    vision_only = experiment_choices(models.layers(tiny_repos["clip_vision"]), CLIP_NAMES_LABEL)  # CLIP, no text
    assert CLIP_NAMES_LABEL not in [c[0] for c in vision_only.choices] and vision_only.value == "CLS isolation"
    clip = experiment_choices(models.layers(tiny_repos["clip"]), CLIP_NAMES_LABEL)
    assert CLIP_NAMES_LABEL in [c[0] for c in clip.choices] and clip.value == CLIP_NAMES_LABEL


def test_analysis_caps_and_bad_input_are_one_line(client, server):
    assert "cap of 20 images" in app_error(lambda: analyze(client, FIXTURE, max_images=21))
    assert "Unknown experiment" in app_error(lambda: analyze(client, FIXTURE, experiment="nope"))
    message = app_error(lambda: analyze(client, FIXTURE, experiment="Name CLIP features (this feature)"))
    assert "no text tower" in message
    message = app_error(lambda: analyze(client, FIXTURE, experiment="Foreground / background (needs boxes or masks)",
                                        dataset=str(ROOT / "no-such-folder")))
    assert "No dataset folder" in message


def test_a_model_without_a_head_runs_through_a_probe_fitted_on_the_probe_split(client, tiny_repos):
    """The tiny DINOv2 has no head: refused with the fix named as this tab's control, then run through a linear
    probe fitted on the built-in set's train split (capped like the evaluation)."""
    message = app_error(lambda: analyze(client, tiny_repos["dinov2"], experiment="Per-block CLS"))
    assert "no classification head: set Probe split to train" in message
    plot, table, summary = client.predict(tiny_repos["dinov2"], "Per-block CLS", "vit-feature-viz/shapes-color",
                                          "test", 20, 0, 0, "train", api_name="/analyze")
    assert [row[1] for row in table["data"]] == [0, 1, 2, 3]
    assert "read through a linear probe on 20 images" in summary


def test_nothing_is_drawn_over_the_analysis_plot(server):
    """The "Plot" label and the image toolbar sat over the plot's title: the plot shows neither."""
    plot = next(block for block in server.app.demo.blocks.values() if getattr(block, "elem_id", None) == "analysis-plot")
    config = plot.get_config()
    assert config["show_label"] is False and not config["buttons"]
