"""Check once (issue 17): a request is checked by one planner, and what it returns is taken as it is.

Each test counts the checks a path makes with a counting wrapper around the checker, so a second check that
creeps back in fails here (before issue 17: two plans per app render and per render_to_folder)."""

from __future__ import annotations

import pickle

import pytest

from app_fixtures import image_folder, no_progress  # noqa: F401  (fixture)
from gallery_fixtures import MODEL, write_synthetic_gallery
from vit_feature_viz import VizError, examples, jobs, load_model, specs
from vit_feature_viz.app.common import ModelCache
from vit_feature_viz.app.explore_tab import Explorer
from vit_feature_viz.app.render_tab import Renderer
from vit_feature_viz.core import objectives as core_objectives
from vit_feature_viz.core import patchmap as core_patchmap
from vit_feature_viz.core import render as core_render
from vit_feature_viz.core.render import render, render_batches
from vit_feature_viz.store import pages


@pytest.fixture(scope="module")
def vit(tiny_repos):
    return load_model(tiny_repos["vit"], device="cpu")


@pytest.fixture
def plans(monkeypatch) -> list[tuple]:
    """Every plan_render call, wherever it is imported from."""
    calls, real = [], core_render.plan_render

    def counting(*args, **kwargs):
        calls.append(args[1:3])
        return real(*args, **kwargs)

    monkeypatch.setattr(core_render, "plan_render", counting)
    monkeypatch.setattr(jobs, "plan_render", counting)
    return calls


@pytest.fixture
def feature_checks(monkeypatch) -> list:
    """Every check of a feature spec against a layer's width (parse_features), wherever it is imported from."""
    calls, real = [], specs.parse_features

    def counting(spec, *args, **kwargs):
        calls.append(spec)
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(specs, "parse_features", counting)
    monkeypatch.setattr(core_render, "parse_features", counting)
    monkeypatch.setattr(examples, "parse_features", counting)
    monkeypatch.setattr(core_patchmap, "parse_features", counting)
    return calls


@pytest.fixture
def objectives_built(monkeypatch) -> list:
    """Every objective built from a name (make_objective), wherever it is imported from."""
    calls, real = [], core_objectives.make_objective

    def counting(name, *args, **kwargs):
        calls.append(getattr(name, "name", name))
        return real(name, *args, **kwargs)

    for module in (core_objectives, core_render, core_patchmap, examples):
        if hasattr(module, "make_objective"):
            monkeypatch.setattr(module, "make_objective", counting)
    return calls


def test_the_library_plans_a_render_once(vit, plans, feature_checks):
    results = render(vit, 1, [0, 1], steps=1, progress=False)
    assert [r.feature for r in results] == [0, 1]
    assert len(plans) == 1 and len(feature_checks) == 1


def test_a_plan_renders_as_it_is(vit, plans, feature_checks):
    plan = core_render.plan_render(vit, 1, "0,1", steps=1, seed=3)
    assert len(plans) == 1 and len(feature_checks) == 1
    from_plan = render(vit, plan=plan, progress=False)
    assert len(plans) == 1 and len(feature_checks) == 1  # nothing checked again
    from_settings = render(vit, 1, [0, 1], steps=1, seed=3, progress=False)
    assert [(r.feature, r.seed, r.activation) for r in from_plan] == [
        (r.feature, r.seed, r.activation) for r in from_settings]


def test_render_to_folder_plans_once(vit, plans, feature_checks, tmp_path):
    assert jobs.render_to_folder(vit, tmp_path / "gallery", 0, "0-2", steps=1, batch_size=2, progress=False) == [0, 1, 2]
    assert len(plans) == 1 and len(feature_checks) == 1


def test_an_app_render_plans_once(tiny_repos, plans, feature_checks):
    from spaces_config.presets import current_preset

    renderer = Renderer(current_preset({}), ModelCache())
    *_, (images, table, folder) = renderer.render(tiny_repos["vit"], 1, "0,1", "feature", "paper", 2, 0, 0, None,
                                                  progress=no_progress)
    assert len(images) == 2
    assert len(plans) == 1 and len(feature_checks) == 1  # before issue 17: 2 plans and 3 feature checks


def test_a_plan_pickles_for_the_device_workers(vit):
    """ZeroGPU runs the device side in another process: the plan crosses as it is, recipe and objective too."""
    for recipe in ("paper", "fourier", "maco", "fast", "tuned"):
        plan = core_render.plan_render(vit, 2, "random 3", objective="residual", recipe=recipe, steps=4, seed=9)
        again = pickle.loads(pickle.dumps(plan))
        assert again.recipe is plan.recipe  # a built-in recipe goes by name and comes back as itself
        assert (again.model_id, again.layer, again.features, again.objective.name, again.steps, again.image_size,
                again.canvas, again.batch_size, again.seed) == (
            plan.model_id, plan.layer, plan.features, plan.objective.name, plan.steps, plan.image_size,
            plan.canvas, plan.batch_size, plan.seed)


def test_a_plan_is_frozen_and_holds_for_its_model_only(vit, tiny_repos):
    plan = core_render.plan_render(vit, 0, 0, steps=1)
    with pytest.raises(AttributeError):
        plan.steps = 5
    other = load_model(tiny_repos["clip"], device="cpu")
    with pytest.raises(VizError, match="This render plan was made for"):
        next(core_render.render_planned(other, plan, progress=False))


def test_the_old_keyword_form_still_renders_batch_by_batch(vit, plans):
    batches = list(render_batches(vit, 0, "0-2", steps=1, batch_size=2, progress=False))
    assert [[r.feature for r in batch] for batch in batches] == [[0, 1], [2]]
    assert len(plans) == 1


@pytest.fixture
def gallery_checks(monkeypatch) -> dict[str, int]:
    """Every check of a model id and a layer against a gallery (Gallery.model, Gallery._layer)."""
    counts = {"model": 0, "_layer": 0}
    for name in counts:
        real = getattr(pages.Gallery, name)

        def counting(self, *args, _name=name, _real=real):
            counts[_name] += 1
            return _real(self, *args)

        monkeypatch.setattr(pages.Gallery, name, counting)
    return counts


def test_a_feature_page_resolves_its_layer_once(tmp_path, gallery_checks):
    gallery = pages.open_gallery(write_synthetic_gallery(tmp_path / "gallery", 2, 5, top_images=2))
    page = gallery.feature_page(None, 1, 3)
    assert (page.layer, page.feature, page.previous, page.next) == (1, 3, 2, 4)
    assert gallery_checks == {"model": 1, "_layer": 1}  # before issue 17: 5 and 5
    key = gallery.key(None, "1")
    assert (key.model_id, key.layer, key.objective) == (MODEL, 1, "feature")
    assert gallery.rows_at(key) == gallery.layer_rows(MODEL, 1, "feature")


def test_an_app_scan_checks_its_feature_once(tiny_repos, image_folder, feature_checks):
    from spaces_config.presets import current_preset

    explorer = Explorer(current_preset({}), ModelCache())
    found, _ = explorer.examples(tiny_repos["vit"], 1, 4, str(image_folder), "train", 12, 2, None,
                                 progress=no_progress)
    assert len(found) >= 2
    assert feature_checks == [4]  # before issue 17: the tab's check, then the scanner's


def test_a_scan_target_scans_as_it_is(vit, image_folder, feature_checks):
    target = examples.plan_scan(vit, 1, "2,5")
    again = pickle.loads(pickle.dumps(target))
    assert (again.model_id, again.layer, again.objective.name, again.features) == (vit.model_id, 1, "feature", (2, 5))
    planned = examples.scan_examples(vit, dataset=str(image_folder), target=again, split="train", top_k=2,
                                     progress=False)
    assert len(feature_checks) == 1
    by_settings = examples.scan_examples(vit, 1, "2,5", str(image_folder), split="train", top_k=2, progress=False)
    assert {f: [(e.index, e.score) for e in found] for f, found in planned.items()} == {
        f: [(e.index, e.score) for e in found] for f, found in by_settings.items()}


@pytest.fixture
def name_checks(monkeypatch) -> list[str]:
    """Every check that a model or dataset name is not empty (specs.given_name), wherever it is imported from."""
    from vit_feature_viz import specs as specs_module
    from vit_feature_viz.app import common
    from vit_feature_viz.models import loader

    calls, real = [], specs_module.given_name

    def counting(value, kind, *args, **kwargs):
        calls.append(kind)
        return real(value, kind, *args, **kwargs)

    for module in (specs_module, loader, common):
        monkeypatch.setattr(module, "given_name", counting)
    return calls


def test_an_app_load_checks_the_model_name_once(tiny_repos, name_checks):
    model = ModelCache().get(f" {tiny_repos['vit']} ")
    assert model.model_id == tiny_repos["vit"]
    assert name_checks == ["model"]  # before issue 17: the app's check_name, then load_model's


def test_an_empty_model_id_is_refused_once_even_on_a_space(monkeypatch, name_checks):
    monkeypatch.setenv("SYSTEM", "spaces")
    monkeypatch.setenv("SPACE_ID", "owner/vit-feature-viz")
    for empty in ("", "  ", None):
        with pytest.raises(VizError, match="^No model given: enter a Hub model id such as google/vit-base-patch16-224"):
            ModelCache().get(empty)  # not "a local path": looks_like_path("") is True
    assert name_checks == ["model"] * 3  # before issue 17: 2 per load


@pytest.fixture
def key_checks(monkeypatch) -> list[tuple]:
    """Every resolution of (model, layer, objective) into a gallery key (Gallery.key)."""
    calls, real = [], pages.Gallery.key

    def counting(self, *args, **kwargs):
        calls.append(args)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pages.Gallery, "key", counting)
    return calls


def test_a_deep_link_resolves_its_gallery_key_once(tmp_path, key_checks):
    from types import SimpleNamespace

    from vit_feature_viz.app.galleries_tab import GRID_PAGE, Galleries

    folder = str(write_synthetic_gallery(tmp_path / "gallery", 2, GRID_PAGE + 5, top_images=2))
    galleries, feature = Galleries(), GRID_PAGE + 2
    request = SimpleNamespace(query_params={"gallery": folder, "layer": "1", "feature": str(feature)}, headers={})
    outputs = galleries.from_link(request)
    assert len(key_checks) == 1  # before issue 17: 4 (entry, layer_rows, show_layer, feature_page)
    grid = galleries.show_layer(folder, MODEL, 1, "feature", 2)
    page = galleries.feature_page(folder, MODEL, 1, "feature", feature, request)
    assert outputs[5:9][1] == grid[1] and outputs[5:9][3] == grid[3] and outputs[5:9][2].value == 2
    assert [out for out in outputs[9:-1] if isinstance(out, str)] == [out for out in page if isinstance(out, str)]
    assert outputs[-1] == folder  # the Gallery box shows the gallery the link opened


def test_examples_to_folder_builds_its_objective_and_checks_its_features_once(vit, image_folder, tmp_path,
                                                                              objectives_built, feature_checks):
    found = jobs.examples_to_folder(vit, tmp_path / "gallery", 1, "0-3", str(image_folder), top_k=2, split="train",
                                    progress=False)
    assert found == 4
    assert objectives_built == ["feature"]  # before issue 17: 3 (the progress key, the scan, the rows)
    assert feature_checks == ["0-3"]
    rows = pages.open_gallery(tmp_path / "gallery").layer_rows(None, 1)
    assert (rows.objective, list(rows.features)) == ("feature", [0, 1, 2, 3])


def test_an_app_patch_map_checks_its_feature_once(tiny_repos, vit, objectives_built, feature_checks):
    from PIL import Image

    from spaces_config.presets import current_preset

    explorer = Explorer(current_preset({}), ModelCache())
    photo = Image.new("RGB", (40, 30), (200, 40, 40))
    overlay = explorer.patch_map(tiny_repos["vit"], 1, 3, photo)
    assert objectives_built == ["feature"] and feature_checks == [3]  # before issue 17: 2 and 2 (tab, then map)
    from vit_feature_viz.app.explore_tab import MAP_PX
    from vit_feature_viz.core.objectives import make_objective

    drawn = core_patchmap.draw_patch_map(vit, photo, make_objective("feature", 1), 3, display_px=MAP_PX)
    assert overlay.tobytes() == drawn.tobytes()


@pytest.fixture
def shard_reads(monkeypatch) -> dict[str, int]:
    """Every listing of a gallery's shards (GalleryFolder.shard_paths) and every read of a shard, wherever it is
    imported from."""
    from vit_feature_viz.store import card, folder, shards

    counts = {"listings": 0, "reads": 0}
    real_listing, real_read = folder.GalleryFolder.shard_paths, shards.read_shard

    def listing(self):
        counts["listings"] += 1
        return real_listing(self)

    def read(*args, **kwargs):
        counts["reads"] += 1
        return real_read(*args, **kwargs)

    monkeypatch.setattr(folder.GalleryFolder, "shard_paths", listing)
    for module in (card, folder, shards):
        monkeypatch.setattr(module, "read_shard", read)
    return counts


def test_an_app_push_checks_the_session_gallery_once(tmp_path, monkeypatch, shard_reads):
    from hub_fixtures import LoopbackHub, point_clients_at

    from vit_feature_viz.app.sharing_tab import Sharing

    monkeypatch.delenv("SYSTEM", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    session = write_synthetic_gallery(tmp_path / "session", 1, 3)
    with LoopbackHub() as hub:
        point_clients_at(monkeypatch, hub.url, tmp_path / "hf-home")
        message = Sharing.push("my-gallery", False, hub.write_token, str(session))  # a bare name: the repo is renamed
        assert "Pushed 3 feature(s)" in message and "alice/my-gallery" in message
        card = hub.files("alice/my-gallery")["README.md"].decode()
    assert 'load_dataset("alice/my-gallery"' in card  # the card was rendered again for the renamed repo
    assert shard_reads == {"listings": 1, "reads": 1}  # before issue 17: 8 listings and 3 reads of every shard
