"""The app in a real browser: Debian's chromium, driven by Playwright, against the app on a loopback port.

Leaves a screenshot in test-artifacts/browser-render.png so a person can see what the page showed.
"""

from __future__ import annotations

import http.server
import importlib.util
import sys
import threading
from pathlib import Path
from urllib.parse import urlencode

import pytest
from PIL import Image

from gallery_fixtures import TOP_K, hostile, make_hostile_gallery, write_synthetic_gallery
from helpers import free_port
from hub_fixtures import IGNORE_CLIENT_UPLOAD_WARNING
from vit_feature_viz.store.builtin import BUILTIN_GALLERY

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
FIRST_SCREEN = {"width": 1400, "height": 1000}  # what a newcomer sees without scrolling
# Headless, fresh profile, no background traffic (shared reference: browser-testing.md). Playwright launches the
# browser with its own empty temporary profile, once for this file; each test gets a new context (no cookies,
# storage or cache from another test).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.browser, pytest.mark.slow, IGNORE_CLIENT_UPLOAD_WARNING]


@pytest.fixture(scope="module")
def app_url(tiny_repos):
    sys.path.insert(0, str(ROOT))
    spec = importlib.util.spec_from_file_location("vfv_space_app_browser", ROOT / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    from spaces_config.presets import current_preset

    demo = app.build_demo(current_preset({"VFV_HARDWARE": "cpu-basic", "VFV_MAX_STEPS": "300", "VFV_MAX_FEATURES": "3"}))
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture(scope="module")
def browser():
    """One chromium for the file (launching it costs a second or two a test)."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    outside: list[str] = []

    def loopback_only(route):  # the page must work with no network: refuse (and record) anything else
        if route.request.url.startswith("http://127.0.0.1"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", loopback_only)
    try:
        yield context.new_page(), outside
    finally:
        context.close()


def test_render_in_the_browser(app_url, page, tiny_repos):
    page, outside = page
    page.goto(app_url, wait_until="domcontentloaded")
    page.get_by_role("tab", name="Render").click()  # "Explore galleries" is the first tab
    model = page.locator("#model-id input, #model-id textarea").first
    model.wait_for(timeout=30_000)
    model.fill(tiny_repos["vit"])
    model.press("Enter")  # Enter loads, as Load does
    page.get_by_text("4 blocks, MLP width 128").wait_for(timeout=60_000)
    # the pickers follow the model: 4 blocks -> layer max 3, 128 features -> feature max 127
    assert page.locator("#layer input[type=number]").get_attribute("max") == "3"
    assert page.locator("#feature input[type=number]").get_attribute("max") == "127"

    page.locator("#steps input[type=number]").fill("4")
    page.locator("#steps input[type=number]").press("Enter")
    page.locator("#features textarea, #features input").first.fill("0-2")
    page.locator("#render").click()
    page.get_by_text("feature 2 · activation").wait_for(timeout=90_000)
    images = page.locator("#gallery img")
    assert images.count() == 3
    sources = [images.nth(i).get_attribute("src") for i in range(3)]
    assert all(src and "/gradio_api/file=" in src for src in sources)
    page.wait_for_function(  # the files behind the src attributes load as real images
        "[...document.querySelectorAll('#gallery img')].every(img => img.complete && img.naturalWidth > 0)",
        timeout=30_000,
    )
    page.get_by_text("activation_init").wait_for()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-render.png"), full_page=True)

    # a long render: Render is disabled while it runs, the progress with the time left shows under the buttons
    # (not over the activations table), and Stop gives Render back
    page.locator("#steps input[type=number]").fill("60")
    page.locator("#steps input[type=number]").press("Enter")
    page.locator("#features textarea, #features input").first.fill("0")
    page.locator("#render").click()
    page.wait_for_function("document.querySelector('#render').disabled", timeout=10_000)
    page.locator("#render-status").get_by_text("left").first.wait_for(timeout=60_000)
    assert page.locator("#activations").get_by_text("left").count() == 0
    assert page.locator("#activations").get_by_text("activation_init").first.is_visible()
    page.screenshot(path=str(ARTIFACTS / "browser-rendering.png"), full_page=False)
    page.locator("#stop").click()
    page.wait_for_function("!document.querySelector('#render').disabled", timeout=10_000)

    # an image uploaded in the page is mapped (the app reads only what gradio received as an upload)
    photo = ARTIFACTS / "upload.png"
    Image.new("RGB", (48, 40), (220, 60, 30)).save(photo)
    page.get_by_role("tab", name="Explore a feature").click()
    page.locator("#upload input[type=file]").set_input_files(str(photo))
    page.locator("#upload img").first.wait_for(timeout=30_000)
    page.locator("#map-image").click()
    page.wait_for_function("(() => { const img = document.querySelector('#overlay img');"
                           " return img && img.complete && img.naturalWidth === 320; })()", timeout=60_000)
    shown = page.locator("#overlay img").first.bounding_box()  # drawn at its box's size, not a 32 px map enlarged
    assert shown["height"] <= 320 + 1 and shown["width"] <= 320 + 1, shown
    page.wait_for_function("(() => { const img = document.querySelector('#cls-attention img');"  # mean + 2 heads
                           " return img && img.complete && img.naturalWidth === 3 * 96; })()", timeout=60_000)
    page.locator("#accentuate").click()  # the same image with the feature raised (issue 20): four captioned images
    page.locator("#accentuated").get_by_text("patch map of the accentuated image").first.wait_for(timeout=60_000)
    assert page.locator("#accentuated img").count() == 4
    page.get_by_role("tab", name="Render").click()

    # beyond one channel (issue 20): two typed features as a direction, negated, as a set of two
    page.locator("#features textarea, #features input").first.fill("0")
    page.locator("#steps input[type=number]").fill("4")
    page.locator("#steps input[type=number]").press("Enter")
    page.locator("#render-more").get_by_text("Direction, negative, diversity").first.click()
    page.locator("#direction textarea, #direction input").first.fill("3-4")
    page.locator("#negative input[type=checkbox]").check()
    page.locator("#diversity input[type=number]").fill("2")
    page.locator("#diversity input[type=number]").press("Enter")
    page.wait_for_function("!document.querySelector('#render').disabled", timeout=30_000)  # the stopped render ended
    page.locator("#render").click()
    page.get_by_text("feature-direction(difference:3,4)-negative-facet2of2").first.wait_for(timeout=90_000)
    assert page.locator("#gallery img").count() == 2
    page.screenshot(path=str(ARTIFACTS / "browser-render-direction.png"), full_page=True)

    # a bad request shows its one-line message in the page
    page.locator("#features textarea, #features input").first.fill("0-x")
    page.locator("#render").click()
    page.get_by_text("Cannot read feature spec '0-x'").first.wait_for(timeout=30_000)
    page.wait_for_timeout(1_500)  # the toast slides in
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / "browser-error.png"), full_page=False)
    toast, load = page.locator(".toast-wrap").bounding_box(), page.locator("#load").bounding_box()
    assert toast["y"] >= load["y"] + load["height"] or toast["x"] >= load["x"] + load["width"], (toast, load)
    assert load["y"] >= 0 and page.locator("#load").is_visible()  # the error leaves Load free to press again
    assert outside == [], f"the page tried to reach outside hosts: {outside[:3]}"


def test_first_screen_has_examples_and_fits_a_phone(app_url, page):
    """At 400 px the model box is whole and usable; examples of models and render settings fill the fields."""
    page, outside = page
    page.set_viewport_size({"width": 400, "height": 900})
    page.goto(app_url, wait_until="domcontentloaded")
    model = page.locator("#model-id input, #model-id textarea").first
    model.wait_for(timeout=30_000)
    box, load = model.bounding_box(), page.locator("#load").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 400 and box["width"] >= 200, box
    assert load["x"] >= 0 and load["x"] + load["width"] <= 400, load
    model.fill("openai/clip-vit-base-patch32-and-a-long-suffix")
    assert model.evaluate("el => el.scrollWidth <= el.clientWidth + 1") or box["width"] >= 300
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-400px.png"), full_page=False)

    examples = page.locator("#model-examples")
    examples.get_by_text("laion/CLIP-ViT-B-32-laion2B-s34B-b79K").first.click()
    page.wait_for_function("document.querySelector('#model-id input, #model-id textarea').value"
                           " === 'laion/CLIP-ViT-B-32-laion2B-s34B-b79K'", timeout=10_000)
    page.get_by_role("tab", name="Render").click()
    page.locator("#render-examples").get_by_text("random 2").first.click()
    page.wait_for_function("document.querySelector('#features textarea, #features input').value === 'random 2'",
                           timeout=10_000)
    page.locator("#objective").get_by_text("What to maximize").first.wait_for()  # short help under each control
    page.locator("#recipe").get_by_text("How the image is made").first.wait_for()
    assert outside == [], f"the page tried to reach outside hosts: {outside[:3]}"


def images_loaded(page, selector: str, count: int) -> None:
    """`count` images under `selector`, each served by the app and decoded by the browser."""
    page.wait_for_function(
        "([sel, n]) => { const imgs = [...document.querySelectorAll(sel + ' img')];"
        " return imgs.length === n && imgs.every(img => img.complete && img.naturalWidth > 0); }",
        arg=[selector, count], timeout=30_000,
    )


def test_browse_a_pushed_gallery_and_follow_a_deep_link(app_url, page, hub, browse_gallery, monkeypatch):
    from vit_feature_viz.store.hub import push_gallery

    monkeypatch.setenv("HF_TOKEN", hub.write_token)
    push_gallery(browse_gallery, "alice/browse-me")
    monkeypatch.delenv("HF_TOKEN")  # visitors browse without a token
    page, outside = page
    page.goto(app_url, wait_until="domcontentloaded")
    source = page.locator("#gallery-source input")
    source.wait_for(timeout=30_000)
    page.get_by_text(f"{BUILTIN_GALLERY}: 24 features").wait_for(timeout=30_000)  # the start gallery opened first
    source.fill("alice/browse-me")
    source.press("Enter")
    page.locator("#open-gallery").click()
    images_loaded(page, "#layer-grid", 4)  # layer 1: features 0-3
    page.get_by_text("6 features of tiny-org/vit-classifier").wait_for()

    page.locator("#layer-grid img").nth(2).click()  # feature 2
    header = page.locator("#feature-header")
    header.get_by_text("Layer 1 · feature 2").wait_for(timeout=30_000)
    images_loaded(page, "#feature-visualizations", 2)  # the visualization and its patch map
    images_loaded(page, "#feature-examples", 2 * TOP_K)  # top examples and their patch maps
    captions = page.locator("#feature-visualizations .caption-label")  # whole, not cut ("feature · recipe f...")
    assert captions.count() == 2 and captions.first.inner_text().startswith("feature · ") and page.evaluate(
        "[...document.querySelectorAll('#feature-visualizations .caption-label')].every("
        "el => el.scrollWidth <= el.clientWidth)")
    page.locator("#feature-stats").get_by_text("rank in layer").wait_for()
    link = page.locator("#feature-link textarea, #feature-link input").first.input_value()
    assert link == f"{app_url}?gallery=alice/browse-me&layer=1&feature=2"
    page.wait_for_url("**/?gallery=alice/browse-me&layer=1&feature=2")  # the address bar follows
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-gallery-feature.png"), full_page=True)

    page.locator("#next-feature").click()
    header.get_by_text("Layer 1 · feature 3").wait_for(timeout=30_000)
    assert page.locator("#next-feature").is_disabled()  # feature 3 is the layer's last

    page.goto(f"{app_url}?gallery=alice/browse-me&layer=2&feature=1", wait_until="domcontentloaded")
    page.locator("#feature-header").get_by_text("Layer 2 · feature 1").wait_for(timeout=30_000)
    images_loaded(page, "#feature-visualizations", 2)
    images_loaded(page, "#layer-grid", 2)  # layer 2: features 0-1
    assert page.locator("#gallery-layer input").input_value() == "2"
    assert page.locator("#feature-examples img").count() == 0  # layer 2 has no dataset examples
    page.screenshot(path=str(ARTIFACTS / "browser-gallery-deep-link.png"), full_page=True)

    # a link naming a model (no gallery) fills the model box, layer and feature for the Render and Explore tabs
    page.goto(f"{app_url}?model=tiny-org/vit-classifier&layer=2&feature=7", wait_until="domcontentloaded")
    page.wait_for_function("document.querySelector('#model-id input, #model-id textarea')?.value"
                           " === 'tiny-org/vit-classifier'", timeout=30_000)
    assert page.locator("#layer input[type=number]").input_value() == "2"
    assert page.locator("#feature input[type=number]").input_value() == "7"
    assert outside == [], f"the page tried to reach outside hosts: {outside[:3]}"


class RecordingHandler(http.server.BaseHTTPRequestHandler):
    """Answers 404 to everything and records the path: a request here is a request the page should not make."""

    def do_GET(self):
        self.server.requests.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def recorder():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RecordingHandler)
    server.requests = []
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_nothing_a_gallery_or_a_link_holds_becomes_markup(app_url, page, recorder, tmp_path):
    """A gallery whose model id, objective, recipe, dataset name, CLIP concept names and card fields hold HTML,
    Markdown images and links and bare URLs pointing at a loopback server, opened in the Explore tab, compared
    with itself and reached through deep links (one with a hostile model in its query): the page shows all of
    it as text, holds no element it injected, and never asks the loopback server for anything."""
    page, outside = page
    url = f"http://127.0.0.1:{recorder.server_port}"
    folder = make_hostile_gallery(tmp_path / "gallery", url)
    model, asked = hostile("model", url), hostile("asked", url)

    def assert_nothing_injected():
        for selector in ('img[src*="leak"]', 'a[href*="leak"]', 'a[href^="mailto"]', ".katex"):
            assert page.locator(selector).count() == 0, selector
        assert page.locator("script", has_text="alert(1)").count() == 0

    def text_of(selector: str) -> str:
        return " ".join(page.locator(selector).inner_text().split())

    page.goto(app_url, wait_until="domcontentloaded")
    source = page.locator("#gallery-source input")
    source.wait_for(timeout=30_000)
    page.get_by_text(f"{BUILTIN_GALLERY}: 24 features").wait_for(timeout=30_000)  # the start gallery opened first
    source.fill(str(folder))
    source.press("Enter")
    page.locator("#open-gallery").click()
    images_loaded(page, "#layer-grid", 2)
    page.locator("#gallery-summary").get_by_text("2 features of").wait_for()
    assert model in text_of("#gallery-summary")

    page.locator("#layer-grid img").first.click()
    page.locator("#feature-header").get_by_text("Layer 1 · feature 0").wait_for(timeout=30_000)
    images_loaded(page, "#feature-examples", 2)
    header = text_of("#feature-header")
    for shown in (model, hostile("dataset", url), hostile("concept1", url), hostile("concept2", url)):
        assert shown in header
    assert hostile("dataset", url) in text_of("#feature-stats")
    assert hostile("recipe", url) in text_of("#feature-stats")  # "made with", under the short captions
    assert hostile("objective", url) in text_of("#feature-visualizations")

    page.get_by_text("Compare with another gallery").click()
    page.locator("#compare-source textarea, #compare-source input").first.fill(str(folder))
    page.locator("#compare-features textarea, #compare-features input").first.fill("0-1")
    page.locator("#compare").click()
    note = page.get_by_text("Layer 1, features 0, 1:")
    note.wait_for(timeout=30_000)
    assert model in " ".join(note.inner_text().split())
    assert_nothing_injected()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-hostile-gallery.png"), full_page=True)

    page.goto(f"{app_url}?{urlencode({'gallery': str(folder), 'layer': 1, 'feature': 1})}",
              wait_until="domcontentloaded")
    page.locator("#feature-header").get_by_text("Layer 1 · feature 1").wait_for(timeout=30_000)
    assert model in text_of("#feature-header")
    assert_nothing_injected()

    page.goto(f"{app_url}?{urlencode({'gallery': str(folder), 'model': asked})}", wait_until="domcontentloaded")
    toast = page.get_by_test_id("toast-body").filter(has_text="has no model")
    toast.wait_for(timeout=30_000)
    assert asked in " ".join(toast.inner_text().split())
    assert_nothing_injected()

    page.goto(f"{app_url}?{urlencode({'model': asked})}", wait_until="domcontentloaded")  # fills the model box
    page.wait_for_function("document.querySelector('#model-id input, #model-id textarea')?.value.includes('leak')",
                           timeout=30_000)
    page.locator("#load").click()
    page.locator("#model-summary").get_by_text("Could not load").wait_for(timeout=30_000)
    assert asked in text_of("#model-summary")
    assert_nothing_injected()
    page.screenshot(path=str(ARTIFACTS / "browser-hostile-link.png"), full_page=False)
    assert recorder.requests == [], f"the page fetched injected addresses: {recorder.requests[:3]}"
    assert outside == [], f"the page tried to reach outside hosts: {outside[:3]}"


def test_the_sliders_describe_the_model_in_the_box_from_the_start(app_url, page, tiny_repos):
    """Offline the box starts on the built-in model: its structure is read at start (it needs no download), so the
    sliders never describe a model that is not there; typing a model that is in the local cache re-reads it
    without Load."""
    page, outside = page
    page.goto(app_url, wait_until="domcontentloaded")
    summary = page.locator("#model-summary")
    summary.get_by_text("6 blocks, MLP width 384").wait_for(timeout=60_000)
    assert "No model loaded yet" not in summary.inner_text()
    assert page.locator("#layer input[type=number]").get_attribute("max") == "5"
    model = page.locator("#model-id input, #model-id textarea").first
    model.fill(tiny_repos["vit"])
    summary.get_by_text("4 blocks, MLP width 128").wait_for(timeout=60_000)
    assert page.locator("#layer input[type=number]").get_attribute("max") == "3"
    assert not outside


def test_the_prompt_box_is_offered_for_a_model_with_a_text_tower(app_url, page, tiny_repos):
    """Issue 20: the Render tab's text prompt box shows for a CLIP with its text tower (the built-in shapes CLIP,
    read without Load) and hides again for a ViT."""
    page, outside = page
    page.goto(app_url, wait_until="domcontentloaded")
    page.get_by_role("tab", name="Render").click()
    summary, prompt = page.locator("#model-summary"), page.locator("#prompt textarea, #prompt input").first
    summary.get_by_text("6 blocks, MLP width 384").wait_for(timeout=60_000)  # the built-in ViT: no text tower
    assert not prompt.is_visible()
    model = page.locator("#model-id input, #model-id textarea").first
    model.fill("vit-feature-viz/shapes-clip")
    summary.get_by_text("(transformers, CLIP)").wait_for(timeout=60_000)
    prompt.wait_for(state="visible", timeout=10_000)
    model.fill(tiny_repos["vit"])
    summary.get_by_text("4 blocks, MLP width 128").wait_for(timeout=60_000)
    prompt.wait_for(state="hidden", timeout=10_000)
    assert not outside


def wait_in_viewport(page, selector: str) -> None:
    """Until the element's box lies inside the window (what is seen without scrolling; sub-pixel scroll allowed)."""
    page.wait_for_function(
        "sel => { const el = document.querySelector(sel); if (!el) return false;"
        " const r = el.getBoundingClientRect();"
        " return r.height > 0 && r.top > -1 && r.bottom < window.innerHeight + 1; }", arg=selector, timeout=15_000)


def test_first_screen_shows_learned_features_and_a_clicked_feature_in_view(app_url, page, tmp_path):
    """Issue 19's "Done when": the app offline on the suite's fresh offline cache shows the built-in gallery's learned
    features on its first screen (1400 x 1000) without anyone typing; a clicked feature's page, and a deep link's,
    land inside the viewport (not 1,300 px below it). Leaves first-screen.png and feature-page.png."""
    page, outside = page
    page.set_viewport_size(FIRST_SCREEN)
    page.goto(app_url, wait_until="domcontentloaded")
    images_loaded(page, "#layer-grid", 8)  # nothing typed: the built-in gallery opened on start, layer 1
    page.get_by_text("24 features of vit-feature-viz/shapes-vit in 3 layer(s)").wait_for(timeout=15_000)
    assert page.locator("#gallery-source input").input_value() == BUILTIN_GALLERY
    assert page.evaluate("window.scrollY") == 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "first-screen.png"))
    boxes = [page.locator("#layer-grid img").nth(i).bounding_box() for i in range(8)]
    assert all(b["y"] >= 0 and b["y"] + b["height"] <= FIRST_SCREEN["height"] for b in boxes), boxes  # on the first screen
    images_loaded(page, "#analysis-plots", 5)  # below the grid: the paper's analyses saved with the gallery

    page.locator("#layer-grid img").nth(3).click()  # feature 3
    page.locator("#feature-header").get_by_text("Layer 1 · feature 3").wait_for(timeout=30_000)
    wait_in_viewport(page, "#feature-header")
    images_loaded(page, "#feature-visualizations", 2)  # the visualization and where it fires
    wait_in_viewport(page, "#feature-visualizations img")
    page.screenshot(path=str(ARTIFACTS / "feature-page.png"))

    # a shared link to another gallery: the Gallery box names the gallery it opened, and the page is in view at once
    other = str(write_synthetic_gallery(tmp_path / "shared", 2, 40, top_images=2))
    page.goto(f"{app_url}?gallery={other}&layer=1&feature=33", wait_until="domcontentloaded")
    page.locator("#feature-header").get_by_text("Layer 1 · feature 33").wait_for(timeout=30_000)
    wait_in_viewport(page, "#feature-header")
    page.wait_for_function(f"document.querySelector('#gallery-source input').value === {other!r}", timeout=10_000)


def test_render_with_defaults_then_open_in_explore_also_after_a_reload(app_url, page, tmp_path, monkeypatch):
    """Issue 19's "Done when", second half: render with the defaults (offline: the built-in model), "Open in Explore"
    shows the Explore galleries tab on the session gallery with the new features; after a reload (same browser) the
    button still opens it."""
    from vit_feature_viz.app import common

    monkeypatch.setattr(common, "SESSION_ROOT", tmp_path / "sessions")  # the app runs in this process
    page, outside = page
    page.goto(app_url, wait_until="domcontentloaded")
    page.locator("#model-summary").get_by_text("6 blocks").wait_for(timeout=60_000)  # the page's load events ran
    page.get_by_role("tab", name="Render").click()
    page.locator("#render").click()
    page.locator("#gallery").get_by_text("feature 2 · activation").wait_for(timeout=180_000)

    def open_in_explore(button="#open-in-explore"):
        page.locator(button).click()
        images_loaded(page, "#layer-grid", 3)  # the three new features, in the Explore galleries tab
        assert page.locator("#gallery-source input").input_value() == common.SESSION_GALLERY
        captions = page.locator("#layer-grid").inner_text()
        assert all(f"{feature} · " in captions for feature in range(3)), captions
        box = page.locator("#layer-grid img").first.bounding_box()
        assert box and box["width"] > 0 and box["y"] < page.viewport_size["height"]

    open_in_explore()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-open-in-explore.png"), full_page=False)
    page.reload(wait_until="domcontentloaded")
    page.locator("#model-summary").get_by_text("6 blocks").wait_for(timeout=60_000)
    page.get_by_role("tab", name="Render").click()
    open_in_explore()
    page.get_by_role("tab", name="Gallery & sharing").click()  # the same gallery from where it is shared
    open_in_explore("#sharing-open-in-explore")
    assert len(list((tmp_path / "sessions").iterdir())) == 1  # one browser, one gallery

    # issue 21: a tiny SAE trained in the SAE tab (within the cap) fills the Render tab's SAE box, which offers the
    # sae objectives; one latent renders, named after the SAE
    page.get_by_role("tab", name="SAE").click()
    page.locator("#sae-images input[type=number]").fill("64")
    page.locator("#sae-latents input[type=number]").fill("64")
    page.locator("#sae-train").click()
    page.locator("#sae-report").get_by_text("latents, K = 16").wait_for(timeout=120_000)
    page.get_by_role("tab", name="Render").click()
    assert page.locator("#render-sae input, #render-sae textarea").first.input_value() == "your session gallery (fc1)"
    page.locator("#objective input").first.click()
    page.get_by_role("option", name="sae", exact=True).click()
    page.locator("#features textarea, #features input").first.fill("0")
    page.locator("#steps input[type=number]").fill("8")
    page.locator("#steps input[type=number]").press("Enter")
    page.locator("#render").click()
    page.locator("#gallery").get_by_text("feature 0 · sae(fc1 ").first.wait_for(timeout=120_000)
    page.screenshot(path=str(ARTIFACTS / "browser-sae-latent.png"), full_page=False)
    assert outside == [], f"the page tried to reach outside hosts: {outside[:3]}"
