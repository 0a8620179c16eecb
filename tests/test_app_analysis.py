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
        "model_id", "experiment", "dataset", "split", "max_images", "layer", "feature", "probe_split", "sae"]
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


def test_cls_attention_and_cue_conflict_run_in_the_analyses_tab_and_explore_draws_an_uploaded_image(client, tmp_path):
    from gradio_client import handle_file
    from PIL import Image

    plot, table, summary = analyze(client, FIXTURE, "CLS attention maps of this block (needs boxes or masks)",
                                   max_images=8, layer=5)
    assert Path(plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert table["headers"][:5] == ["model_id", "layer", "head", "mass_in_box", "pointing_game"]
    assert [row[2] for row in table["data"]] == [0, 1, 2, 3, "mean"] and {row[1] for row in table["data"]} == {5}
    assert "pointing game" in summary

    cue = "Cue conflict: shape bias (needs shape and colour/texture columns)"
    plot, table, summary = analyze(client, FIXTURE, cue, dataset="vit-feature-viz/shapes-cue-conflict", max_images=8)
    row = dict(zip(table["headers"], table["data"][0]))
    assert row["conflict_images"] == 8 and row["shape_bias"] < 0.2  # the colour-coded model follows the colour
    message = app_error(lambda: analyze(client, FIXTURE, cue, dataset="vit-feature-viz/shapes-color", max_images=4))
    assert "has no cue column besides the shape column 'label'" in message and "this app reads a shape column" in message

    photo = tmp_path / "photo.png"
    Image.new("RGB", (80, 64), (30, 200, 40)).save(photo)
    strip = client.predict(FIXTURE, 5, handle_file(str(photo)), api_name="/cls_attention")
    with Image.open(strip) as image:
        assert image.size == (96 * 5, 96 + 14)  # the mean, then each of the 4 heads


def test_the_robustness_experiments_are_offered_and_run_on_the_loaded_model(client):
    """Block removal, occlusion and patch shuffling from the tab, on the trained fixture (6 blocks) and its boxes."""
    expected = {"Block removal (each block, its attention or its MLP skipped)": ("removed", "block 0 removed", 19),
                "Occlusion (patches dropped: random, object first, background first)": ("order", "foreground-first", 18),
                "Patch shuffling (tiles of an N x N grid)": ("grid", "top-1 by grid", 5)}
    for label, (column, words, rows) in expected.items():
        plot, table, summary = analyze(client, FIXTURE, experiment=label, max_images=4)
        assert Path(plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert column in table["headers"] and len(table["data"]) == rows and words in summary


def test_nothing_is_drawn_over_the_analysis_plot(server):
    """The "Plot" label and the image toolbar sat over the plot's title: the plot shows neither."""
    plot = next(block for block in server.app.demo.blocks.values() if getattr(block, "elem_id", None) == "analysis-plot")
    config = plot.get_config()
    assert config["show_label"] is False and not config["buttons"]


def test_the_sae_tab_trains_within_the_cap_and_its_latents_render_scan_and_map(client, tmp_path):
    """/sae_train on the trained fixture saves the SAE into the session gallery and reports its measurements;
    /sae_open finds it there; a request over the preset's image passes is one line, nothing trained."""
    over = app_error(lambda: client.predict(FIXTURE, 3, "fc1", "vit-feature-viz/shapes-color", "train", 13, 32, 4, 2,
                                            api_name="/sae_train"))
    assert "26 image passes is over this Space's cap of 24 image passes" in over
    report = client.predict(FIXTURE, 3, "fc1", "vit-feature-viz/shapes-color", "train", 24, 32, 4, 1,
                            api_name="/sae_train")
    assert report.startswith("**SAE of layer 3 (fc1)**") and "32 latents, K = 4" in report
    assert "with the layer replaced by its reconstruction" in report  # a classifier, a labelled dataset
    assert client.predict("", FIXTURE, 3, api_name="/sae_open") == report  # from the session gallery
    assert "holds no sparse autoencoder of layer 2" in app_error(
        lambda: client.predict("", FIXTURE, 2, api_name="/sae_open"))

    # The session's SAE, as the SAE boxes name it, renders a latent (/render: a row named after the SAE, with its own
    # page in the session gallery next to the channels), finds its dataset examples ranked by its TopK code and maps
    # it on an image (/examples, /patch_map); without an SAE the sae objective says where to give one.
    from PIL import Image

    from gradio_client import handle_file

    from vit_feature_viz.app.sae_source import session_sae

    box = session_sae("fc1")
    images, table = client.predict(FIXTURE, 3, "1", "sae", "paper", 2, 48, 0, None, "", False, False, 1, sae=box,
                                   api_name="/render")
    assert len(images) == 1 and "· sae(fc1 " in images[0]["caption"] and table["data"][0][0] == 1
    client.predict(FIXTURE, 3, "1", "feature", "paper", 2, 48, 0, None, "", False, False, 1, sae=box, api_name="/render")
    opened = client.predict("your session gallery", api_name="/open_gallery")
    objective = images[0]["caption"].split(" · ")[1]
    page = client.predict(opened[0], FIXTURE, 3, objective, 1, api_name="/feature_page")
    assert [value for _, value in opened[3]["choices"]] == ["feature", objective]  # the latent next to the channel
    assert page[2][0]["caption"].startswith(objective)  # the latent's own page in the session gallery
    found = client.predict(FIXTURE, 3, 1, "vit-feature-viz/shapes-color", "test", 20, 2, "sae", box,
                           api_name="/examples")
    assert len(found) == 4 and found[0]["caption"].startswith("#1 ") and "patch map" in found[1]["caption"]
    scores = [float(item["caption"].rsplit(" · ", 1)[1]) for item in found[::2]]
    assert scores[0] >= scores[1] > 0  # a TopK code: the latent fires on these images
    path = tmp_path / "shape.png"
    Image.new("RGB", (64, 64), (200, 40, 40)).save(path)
    overlay = client.predict(FIXTURE, 3, 1, handle_file(str(path)), "sae", box, api_name="/patch_map")
    assert Image.open(overlay).size[0] > 0
    message = app_error(lambda: client.predict(FIXTURE, 3, "1", "sae", "paper", 2, 48, 0, None, "", False, False, 1,
                                               sae="", api_name="/render"))
    assert "read a sparse autoencoder's latents" in message and "Sae" in message


def test_sae_training_shows_passes_and_time_left_and_a_stop_keeps_its_checkpoint(tmp_path):
    """The SAE tab's job on the trained fixture: progress in image passes with the time left; closing the request
    (what Stop does) ends the training at its next batch with its checkpoint saved, and the same request resumes
    there (it starts at the passes already done) and ends with the SAE saved and the checkpoint gone."""
    import threading
    import time

    from spaces_config.presets import get_preset
    from vit_feature_viz.app.common import ModelCache
    from vit_feature_viz.app.sae_tab import SaeTrainer
    from vit_feature_viz.store.progress import PROGRESS_DIR, STATE_FILE

    from vit_feature_viz.data.shapes import shapes_dataset

    trainer = SaeTrainer(get_preset("cpu-basic"), ModelCache())
    session = str(tmp_path / "session")
    (tmp_path / "session").mkdir()
    data = tmp_path / "shapes-96"  # drawn in a moment (the built-in split of 1,200 images takes seconds)
    shapes_dataset(96, variant="color", seed=3).save_to_disk(str(data))
    # 4 epochs (12 batches): a Stop after the first report lands before the end even on a loaded machine
    request = (FIXTURE, 3, "fc1", str(data), "", 96, 32, 4, 4, session)

    def run(stop_after_progress: bool):
        shown = []
        job = trainer.train(*request, progress=lambda value, desc="", unit="": shown.append((value, desc)))
        for outputs in job:
            if stop_after_progress and any(v is not None for v, _ in shown):
                job.close()  # as a Stop does
                break
        return shown, outputs

    shown, _ = run(stop_after_progress=True)
    done, desc = next((v, d) for v, d in shown if v is not None)
    assert 0 < done[0] < 384 and done[1] == 384 and f"{done[0]}/384 image passes ·" in desc
    states = tmp_path / "session" / PROGRESS_DIR
    for _ in range(200):  # the training thread stops at its next batch and saves there
        if not any(t.name == "vfv-sae-train" for t in threading.enumerate()):
            break
        time.sleep(0.05)
    assert list(states.glob(f"*/{STATE_FILE}")) and not (tmp_path / "session" / "sae").exists()
    shown, (report, folder, named) = run(stop_after_progress=False)
    passes = [v for v, _ in shown if v is not None]
    assert passes[0][0] >= done[0] and passes[-1] == (384, 384)  # resumed, not started over
    assert report.startswith("**SAE of layer 3 (fc1)**") and folder == session and named == "your session gallery (fc1)"
    assert not list(states.glob(f"*/{STATE_FILE}"))
