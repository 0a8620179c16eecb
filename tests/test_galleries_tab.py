"""The "Explore galleries" tab's API (/open_gallery, /feature_page, /show_layer, /compare), called with
gradio_client against app.py served on loopback, on a gallery folder made by the real renderer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from app_fixtures import app_error
from gallery_fixtures import MODEL, TOP_K, write_synthetic_gallery
from vit_feature_viz.app import galleries_tab
from vit_feature_viz.app.galleries_tab import ENV_FEATURED, featured_galleries
from vit_feature_viz.store.builtin import BUILTIN_GALLERY, BUILTIN_GALLERY_DIR
from vit_feature_viz.store.folder import GalleryFolder
from vit_feature_viz.store.index import GalleryIndex
from vit_feature_viz.store.pages import MAX_EXAMPLES

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
    assert [g["id"] for g in featured_galleries({}, config)] == ["org/a", "org/b", BUILTIN_GALLERY]
    assert featured_galleries({}, config)[0]["title"] == "A gallery"
    assert [g["id"] for g in featured_galleries({ENV_FEATURED: "x/y, z/w"}, config)] == ["x/y", "z/w", BUILTIN_GALLERY]
    assert [g["id"] for g in featured_galleries({}, tmp_path / "missing.yaml")] == [BUILTIN_GALLERY]
    # the shipped file parses (and lists no Hub gallery until some are pushed): the built-in one is the fallback
    assert [g["id"] for g in featured_galleries({})] == [BUILTIN_GALLERY]


@pytest.mark.slow
def test_an_installed_wheel_ships_the_featured_galleries_file_and_the_builtin_gallery(tmp_path):
    """Both are package data: a wheel holds them and the app installed from it reads them (the featured list once
    lived outside the package, so an installed app silently listed none); the built-in gallery opens from the
    installation by name and shows a feature page without writing a byte into it (no lock, no cache)."""
    root = Path(__file__).resolve().parents[1]
    build = tmp_path / "src"
    shutil.copytree(root, build, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", ".venv",
                                                               "tests", "benchmarks", "test-artifacts"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(build)], check=True, capture_output=True)
    [wheel] = (tmp_path / "dist").glob("vit_feature_viz-*.whl")
    shipped = {p.relative_to(root).as_posix() for p in BUILTIN_GALLERY_DIR.rglob("*") if p.is_file()}
    assert "vit_feature_viz/data/featured_galleries.yaml" in zipfile.ZipFile(wheel).namelist()
    assert shipped and shipped <= set(zipfile.ZipFile(wheel).namelist())
    installed = tmp_path / "installed"
    zipfile.ZipFile(wheel).extractall(installed)
    gallery_dir = installed / "vit_feature_viz/data/builtin_gallery"
    before = {p: p.stat().st_mtime_ns for p in gallery_dir.rglob("*")}
    probe = ("import vit_feature_viz.app.galleries_tab as tab; print(tab.__file__); "
             "print(tab.FEATURED_FILE.is_file()); print(tab.FEATURED_FILE.read_text() == "
             f"{(root / 'vit_feature_viz/data/featured_galleries.yaml').read_text()!r}); "
             "from vit_feature_viz.store.pages import open_gallery; "
             f"g = open_gallery({BUILTIN_GALLERY!r}, allow_local=False); print(g.source.path); "
             "p = g.feature_page(None, 3, 0); print(len(p.examples), p.visualizations[0].image.size)")
    env = {**os.environ, "PYTHONPATH": str(installed)}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0].startswith(str(installed)) and out[1:] == ["True", "True", str(gallery_dir), "5 (64, 64)"]
    assert {p: p.stat().st_mtime_ns for p in gallery_dir.rglob("*")} == before


# --- bounded cost for any gallery a visitor can name -----------------------------------------------------------
def on_page_load(server, function: str, query: str) -> httpx.Response:
    """Call the page-load handler `function` over HTTP as the page does: the query string of the page's URL on the
    request (gradio's client sends it along), nothing in the body."""
    fn_index = next(i for i, block in server.app.demo.fns.items() if getattr(block.fn, "__name__", "") == function)
    return httpx.post(f"{server.url}gradio_api/run/predict?{query}", timeout=60,
                      json={"data": [], "fn_index": fn_index, "session_hash": f"link-{function}"})


def test_a_deep_link_with_a_huge_number_is_one_line(server):
    huge = "9" * 30  # beyond 64 bits: once it reached the page's number boxes, the response could not be encoded
    model_link = on_page_load(server, "model_from_link", f"model=org/vit&layer=1&feature={huge}")
    assert model_link.status_code == 200, model_link.text[:300]  # HTTP 500 "Integer exceeds 64-bit range" before
    gallery_link = on_page_load(server, "from_link", f"model=org/vit&feature={huge}")
    error = gallery_link.json()["error"]
    assert error == (f"The feature must be at least 0 and at most 2147483647, got {huge}. (in the page's link)")


def test_a_grid_page_that_is_no_number_is_one_line(server, client, browse_gallery):
    for page in ("nan", "inf", "-inf", "two"):
        message = app_error(lambda: client.predict(str(browse_gallery), MODEL, 1, "feature", page,
                                                   api_name="/show_layer"))
        assert message == f"The grid page must be a number from 1 to 1, got {page!r}."
    for page in ("NaN", "Infinity"):  # JSON numbers Python reads (gradio_client refuses to send them)
        body = f'{{"data": ["{browse_gallery}", "{MODEL}", 1, "feature", {page}, null]}}'  # null: the session state
        response = httpx.post(f"{server.url}gradio_api/run/show_layer", content=body, timeout=60,
                              headers={"content-type": "application/json"})
        assert response.json()["error"].startswith("The grid page must be a number from 1 to 1, got "), response.text
    grid, _, _ = client.predict(str(browse_gallery), MODEL, 1, "feature", 1e300, api_name="/show_layer")
    assert len(grid) == 4  # a finite page past the end shows the last page, as the slider would


def test_compare_checks_the_feature_count_before_building_a_list(client, tmp_path):
    a = write_synthetic_gallery(tmp_path / "a", 2, 4)
    b = write_synthetic_gallery(tmp_path / "b", 2, [0, 1, 20_000_000])
    for spec, count in (("0-19999999", 20_000_000), ("all", 20_000_001)):
        started = time.perf_counter()
        message = app_error(lambda: client.predict(str(a), MODEL, 1, "feature", str(b), spec, api_name="/compare"))
        assert message.startswith(f"{count} features asked for, more than the 24 allowed per request: ask for fewer")
        assert message.endswith("(layer 1 of these galleries holds features 0-3, 20000000)")
        assert time.perf_counter() - started < 5  # no list of 20 million indices (1.28 GB and 5 s before)
    left, right, _ = client.predict(str(a), MODEL, 1, "feature", str(b), "3,20000000", api_name="/compare")
    assert [i["caption"].split(" · ")[1] for i in left] == ["1", "not here"]
    assert [i["caption"].split(" · ")[1] for i in right] == ["not here", "1"]


def test_a_row_with_thousands_of_top_images_shows_at_most_the_cap(client, tmp_path, monkeypatch):
    assert galleries_tab.EXAMPLES_SHOWN == MAX_EXAMPLES
    monkeypatch.setattr(galleries_tab, "EXAMPLES_SHOWN", 4)  # the app runs in this process; 32 take a while
    folder = write_synthetic_gallery(tmp_path / "tops", 1, 2, top_images=3000)
    examples = value(client.predict(str(folder), MODEL, 0, "feature", 1, api_name="/feature_page")[3])
    assert [item["caption"] for item in examples[::2]] == ["#1 · row 0 · 3000.000", "#2 · row 1 · 2999.000",
                                                            "#3 · row 2 · 2998.000", "#4 · row 3 · 2997.000"]
    assert len(examples) == 2 * 4  # each example and its patch map


def test_two_visitors_opening_one_gallery_at_once_build_one_index(client, tmp_path, monkeypatch):
    folder = write_synthetic_gallery(tmp_path / "busy", 2, 300)
    builds = []
    real_init = GalleryIndex.__init__

    def slow_init(self, *args, **kwargs):  # the app runs in this process
        builds.append(args[0].label)
        time.sleep(1)  # the second visitor arrives while the first build runs
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(GalleryIndex, "__init__", slow_init)
    visitors = [Client(client.src, verbose=False) for _ in range(2)]
    jobs = [visitor.submit(str(folder), api_name="/open_gallery") for visitor in visitors]
    summaries = [value(job.result(timeout=120)[4]) for job in jobs]
    assert builds == [str(folder)] and all("600 features" in summary for summary in summaries)


def test_render_then_open_the_session_gallery_no_other_visitor_reaches(server, client, tiny_repos, tmp_path,
                                                                       monkeypatch):
    """Issue 19 item 2 over HTTP: what /render made opens in the gallery browser as "your session gallery", also on a
    Space (where no folder path opens); another visitor naming it gets their own (empty) one, never this one."""
    from app_fixtures import render
    from vit_feature_viz.app import common

    monkeypatch.setattr(common, "SESSION_ROOT", tmp_path / "sessions")  # the app runs in this process
    mine = client
    render(mine, tiny_repos["vit"], 1, "0-1", steps=1)  # off a Space: a Space reads models from the Hub only
    monkeypatch.setenv("SYSTEM", "spaces")
    monkeypatch.setenv("SPACE_ID", "org/space")
    source, model, layer, objective, summary = map(value, mine.predict(common.SESSION_GALLERY,
                                                                        api_name="/open_gallery"))
    assert (source, model, layer, objective) == ("your session gallery", tiny_repos["vit"], 1, "feature")
    assert "2 features" in summary and str(tmp_path) not in summary
    grid, _, note = mine.predict(source, model, 1, objective, 1, api_name="/show_layer")
    assert [item["caption"].split(" · ")[0] for item in grid] == ["0", "1"]
    header, link = map(value, mine.predict(source, model, 1, objective, 1, api_name="/feature_page")[:2])
    assert "Layer 1 · feature 1" in header and "?" not in link and "push it" in link  # no link to a private gallery

    other = Client(server.url, verbose=False)
    assert "Your gallery is empty" in app_error(lambda: other.predict(source, api_name="/open_gallery"))
    folder = next((tmp_path / "sessions").iterdir())
    assert "is a local path" in app_error(lambda: other.predict(str(folder), api_name="/open_gallery"))


def test_a_browsers_key_brings_back_its_gallery_after_a_reload_and_no_other(tmp_path, monkeypatch):
    """The page-load side of item 2: the key a browser keeps (gr.BrowserState) maps to one folder, named by its hash;
    closing the page's session keeps that folder (a reload closes it), and unused ones go after SESSION_TTL_S."""
    from vit_feature_viz.app import common

    monkeypatch.setattr(common, "SESSION_ROOT", tmp_path / "sessions")
    folder, key = common.restore_session(None, None)  # a first visit: a new key for the browser to keep
    assert common.SESSION_KEY.match(key) and key not in folder and Path(folder).is_dir()
    assert common.restore_session(key, None)[0] == folder  # a reload with the kept key: the same folder
    assert common.restore_session(key, folder)[0] == folder
    other, other_key = common.restore_session("../" + key, None)  # a malformed key never names a folder
    assert other != folder and other_key != key
    common.forget_session(folder)  # the old page's session closes on reload: the folder stays
    assert Path(folder).is_dir()
    api = common.session_path(None)  # an API caller's session gallery (no key) goes with its session
    common.forget_session(api)
    assert not Path(api).exists()
    common.prune_sessions(now=time.time() + common.SESSION_TTL_S + 60)
    assert not Path(folder).exists() and not Path(other).exists()


def test_offline_errors_in_the_app_name_what_a_visitor_can_do():
    """HF_HUB_OFFLINE (set for this suite) is the server owner's setting: the CLI says to unset it, the app names
    what works without the Hub instead (issue 19 item 7)."""
    from vit_feature_viz.app.common import APP
    from vit_feature_viz.errors import VizError
    from vit_feature_viz.image_datasets import BUILTIN_DATASETS
    from vit_feature_viz.models.builtin import builtin_path
    from vit_feature_viz.store.pages import open_gallery

    with pytest.raises(VizError) as caught:
        open_gallery("org/not-here")
    assert str(caught.value).endswith(": unset it to pull")  # the CLI's line, as before
    line = caught.value.worded(APP)
    assert line.startswith("HF_HUB_OFFLINE is set, so the Hub cannot be reached: this app runs without the Hub")
    assert "unset" not in line and "\n" not in line
    assert builtin_path("vit-feature-viz/shapes-vit") is not None  # the names it gives are the built-in ones
    assert all(name in line for name in BUILTIN_DATASETS)


def test_a_feature_without_dataset_examples_says_why_and_what_to_do(client, browse_gallery):
    """Layer 2 of the gallery was rendered without a scan: no empty examples box, a line saying how to get them."""
    header, _, _, examples = client.predict(str(browse_gallery), MODEL, 2, "feature", 1, api_name="/feature_page")[:4]
    assert "No top dataset examples in this gallery for this feature" in header and "Explore a feature" in header
    assert examples["visible"] is False and not examples.get("value")
    header, _, _, examples = client.predict(str(browse_gallery), MODEL, 1, "feature", 1, api_name="/feature_page")[:4]
    assert "No top dataset examples" not in header and len(value(examples)) == 2 * TOP_K
