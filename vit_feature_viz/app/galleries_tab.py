"""The "Explore galleries" tab: browse galleries computed once and pushed to the Hub (or, off a Space, a gallery
folder), like OpenAI Microscope: a layer as a grid of feature images, a click opens the feature's page.

Browsing costs no model compute, so these events run outside the device's concurrency group. The URL carries
what is shown (`?gallery=org/name&layer=5&feature=812`, plus `model` and `objective` when needed): it is read
when the page loads, updated when a feature opens, and shown on every feature page so it can be shared.
Named API endpoints: /open_gallery, /show_layer, /feature_page, /compare.
"""

from __future__ import annotations

import logging
import math
import os
from importlib import resources
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from ..errors import VizError
from ..store.builtin import BUILTIN_GALLERY
from ..store.pages import MAX_EXAMPLES, GalleryCache, compact_ranges
from .common import (
    SESSION_GALLERY, AppContext, error_text, inert, is_session_gallery, on_space, open_session_gallery, user_errors,
    visitor_token,
)
from .links import feature_link, parse_deep_link

log = logging.getLogger("vit_feature_viz.app")
GRID_PAGE = 48  # features per page of a layer's grid
COMPARE_MAX = 24  # features per comparison
THUMB_PX = 192  # grid thumbnails are shrunk to this (the feature page shows full size)
EXAMPLES_SHOWN = MAX_EXAMPLES  # top dataset examples on a feature page, however many a gallery row holds
# Shipped in the package (a wheel, or the Space's copy of the repo), so an installed app finds it too
FEATURED_FILE = resources.files("vit_feature_viz.data") / "featured_galleries.yaml"
NO_EXAMPLES = ("No top dataset examples in this gallery for this feature: its rows were rendered without a dataset "
               "scan. Find them in the *Explore a feature* tab (they go into your session gallery), or with "
               "`vit-feature-viz examples` into the gallery folder.")
PRIVATE_LINK = "Your session gallery is yours alone: push it (Gallery & sharing tab) to share a link."
ENV_FEATURED = "VFV_FEATURED_GALLERIES"  # comma-separated Hub ids; replaces the file's list when set
ENV_OPEN = "VFV_OPEN_GALLERY"  # the gallery `vit-feature-viz open` starts the app on (a folder or a Hub id)
# Always offered, last: shipped in the package, it opens offline, so the first screen is never empty
BUILTIN_FEATURED = {"id": BUILTIN_GALLERY, "title": "Built-in: the shapes ViT that ships with the package",
                    "description": "3 of its 6 blocks, top examples from the built-in shapes set, the paper's analyses"}
NO_GALLERY = ("Open a gallery: a Hub dataset id made with `vit-feature-viz push` (or the Sharing tab)"
              " such as org/name{local}.")
# Keep the address bar (and, inside a Space's iframe, the Space page's) on the feature being shown, and bring
# its page into view: it lies below the layer's grid, out of sight after a click (or a deep link) otherwise.
# The page's column turns visible a frame or two after the outputs arrive, and a link's grid images load after
# that and push the page down: scroll once both are in (or after 3 s).
UPDATE_URL_JS = """(link) => {
  if (!link || !link.includes("?")) return;
  const query = link.slice(link.indexOf("?"));
  try { history.replaceState(null, "", location.pathname + query); } catch (e) {}
  if (window.parent !== window) {
    try { window.parent.postMessage({ queryString: query }, "https://huggingface.co"); } catch (e) {}
  }
  let tries = 0;
  const show = () => {
    const page = document.getElementById("feature-page");
    const grid = [...document.querySelectorAll("#layer-grid img")];
    const ready = page && page.getBoundingClientRect().height > 0 && grid.every((img) => img.complete);
    if (ready || (page && tries >= 60)) {
      page.scrollIntoView({ block: "start", behavior: "instant" });
    } else if (++tries <= 60) {
      setTimeout(show, 50);
    }
  };
  requestAnimationFrame(show);
}"""


def featured_galleries(env=os.environ, path=FEATURED_FILE) -> list[dict]:
    """Featured galleries offered on the first screen: [{id, title, description}] from the env or the YAML file
    (`path`: a Path or an importlib.resources file), then the built-in gallery, the fallback that needs no
    network."""
    return [*(g for g in listed_galleries(env, path) if g["id"] != BUILTIN_GALLERY), BUILTIN_FEATURED]


def listed_galleries(env, path) -> list[dict]:
    """The featured galleries a Space owner lists: VFV_FEATURED_GALLERIES, else the YAML file."""
    if env.get(ENV_FEATURED, "").strip():
        return [{"id": i.strip(), "title": i.strip(), "description": ""}
                for i in env[ENV_FEATURED].split(",") if i.strip()]
    if not path.is_file():
        return []
    import yaml

    items = (yaml.safe_load(path.read_text()) or {}).get("galleries") or []
    return [{"id": str(i["id"]), "title": str(i.get("title") or i["id"]),
             "description": str(i.get("description") or "")} for i in items if isinstance(i, dict) and i.get("id")]


def start_galleries(env=os.environ, path=FEATURED_FILE) -> list[str]:
    """What the tab opens on start, the first that opens wins: the gallery `vit-feature-viz open` named, the
    featured ones, the built-in one last (it opens offline, so a Hub gallery that cannot be reached falls back
    to it)."""
    asked = env.get(ENV_OPEN, "").strip()
    return list(dict.fromkeys([*([asked] if asked else []), *(g["id"] for g in featured_galleries(env, path))]))


def featured_markdown(featured: list[dict]) -> str:
    if not featured:
        return NO_GALLERY.format(local="" if on_space() else ", or the path of a gallery folder")
    lines = ["**Featured galleries** (pick one in the box above, then **Open**):", ""]
    lines += [f"- <code>{inert(g['id'])}</code>: {inert(g['title'])}"
              + (f". {inert(g['description'])}" if g["description"] else "") for g in featured]
    return "\n".join(lines)


def base_url(request: gr.Request | None) -> str:
    """Where a shared link should point: the Space's page on the Hub (it hands its query to the app), else this
    server as the browser reached it."""
    space = os.environ.get("SPACE_ID")
    if on_space() and space:
        return f"https://huggingface.co/spaces/{space}"
    headers = getattr(request, "headers", None) or {}
    host = headers.get("x-forwarded-host") or headers.get("host") or "127.0.0.1:7860"
    scheme = (headers.get("x-forwarded-proto") or "http").split(",")[0].strip()
    return f"{scheme}://{host}/"


def grid_page(page: Any, pages: int) -> int:
    """The grid page asked for (1 when none), within 1..pages; a page that is no number (nan, inf, text) is a
    VizError rather than a traceback."""
    try:
        number = float(page or 1)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise VizError(f"The grid page must be a number from 1 to {pages}, got {str(page)[:20]!r}.")
    return min(max(int(number), 1), pages)


def placeholder(size: int) -> Image.Image:
    """A grey square standing in for a feature one side of a comparison lacks."""
    return Image.new("RGB", (size, size), (200, 200, 200))


class Galleries:
    """The tab's endpoints; a gallery's index is shared by all visitors, one per revision (GalleryCache)."""

    def __init__(self, cache: GalleryCache | None = None):
        self.cache = cache or GalleryCache()

    def gallery(self, source: Any, oauth_token: gr.OAuthToken | None = None, session: str | None = None):
        """The gallery, read as the visitor may read it (their sign-in token on a Space, never the Space's);
        SESSION_GALLERY is the visitor's own session gallery (`session`, their session state)."""
        if is_session_gallery(source):
            return open_session_gallery(session, self.cache)
        return self.cache.get(source, allow_local=not on_space(), token=visitor_token(oauth_token))

    # --- open -------------------------------------------------------------------------------------------
    def open(self, source: Any, session: str | None = None, oauth_token: gr.OAuthToken | None = None):
        """/open_gallery: (source, model, layer, objective pickers, summary) of a gallery."""
        with user_errors("opening the gallery"):
            gallery = self.gallery(source, oauth_token, session)
            return (gallery.label, *self._pickers(gallery, None, None, None), self._summary(gallery))

    def pick_model(self, source: Any, model: Any, session: str | None = None,
                   oauth_token: gr.OAuthToken | None = None):
        with user_errors("opening the gallery"):
            return self._pickers(self.gallery(source, oauth_token, session), model, None, None)

    def pick_layer(self, source: Any, model: Any, layer: Any, session: str | None = None,
                   oauth_token: gr.OAuthToken | None = None):
        with user_errors("opening the gallery"):
            return self._pickers(self.gallery(source, oauth_token, session), model, layer, None)

    @staticmethod
    def _choose(gallery, model, layer, objective) -> tuple[str, int, str]:
        """Model, layer and objective checked against the gallery; the first of each where not given."""
        model = gallery.model(model or None)
        layer = gallery.layers(model)[0] if layer in (None, "") else layer
        objectives = gallery.objectives(model, layer)
        return model, int(layer), objective if objective in objectives else objectives[0]

    @classmethod
    def _pickers(cls, gallery, model, layer, objective):
        model, layer, objective = cls._choose(gallery, model, layer, objective)
        objectives = gallery.objectives(model, layer)
        return (gr.Dropdown(choices=gallery.models(), value=model),
                gr.Dropdown(choices=gallery.layers(model), value=layer),
                gr.Dropdown(choices=objectives, value=objective, visible=len(objectives) > 1))

    @staticmethod
    def _summary(gallery) -> str:
        models = gallery.models()
        revision = f" at <code>{inert(gallery.source.revision[:8])}</code>" if gallery.source.revision else ""
        return (f"**{inert(gallery.label)}**{revision}: {gallery.feature_count} features of "
                f"{', '.join(inert(m) for m in models)} in "
                f"{gallery.layer_count} layer(s). Click a feature to open its page.")

    def analyses(self, source: Any, session: str | None = None, oauth_token: gr.OAuthToken | None = None):
        """The opened gallery's experiment plots (the paper's analyses saved with it), and whether their box shows."""
        if not str(source or "").strip():  # nothing opened (yet)
            return gr.Accordion(visible=False), []
        with user_errors("reading the gallery's analyses"):
            plots = self.gallery(source, oauth_token, session).analysis_plots()
            return gr.Accordion(visible=bool(plots)), plots

    # --- a layer ----------------------------------------------------------------------------------------
    def show_layer(self, source: Any, model: Any, layer: Any, objective: Any, page: Any = 1,
                   session: str | None = None, oauth_token: gr.OAuthToken | None = None):
        """/show_layer: one page of the layer's grid [(thumbnail, 'feature · activation')], its feature list,
        the page slider and a note."""
        with user_errors("showing the layer"):
            gallery = self.gallery(source, oauth_token, session)
            return self._grid(gallery, gallery.layer_rows(model or None, layer, objective or None), page)

    @staticmethod
    def _grid(gallery, rows, page: Any):
        """The grid outputs of one page of a layer's rows (see `show_layer`)."""
        with user_errors("showing the layer"):
            pages = max(1, -(-len(rows) // GRID_PAGE))
            page = grid_page(page, pages)
            shown = rows.entries((page - 1) * GRID_PAGE, page * GRID_PAGE)
            grid = [(image if image is not None else placeholder(THUMB_PX),
                     f"{e.feature} · {e.activation:.3g}" if e.rendered else f"{e.feature} · examples only")
                    for e, image in zip(shown, gallery.thumbnails(shown, THUMB_PX))]
            note = (f"Layer {shown[0].layer}: features {shown[0].feature}-{shown[-1].feature} "
                    f"({len(rows)} in this layer), activation after optimization under each image.")
            return (grid, [e.feature for e in shown],
                    gr.Slider(minimum=1, maximum=max(pages, 2), value=page, step=1, visible=pages > 1), note)

    def show_first_page(self, source: Any, model: Any, layer: Any, objective: Any, session: str | None = None,
                        oauth_token: gr.OAuthToken | None = None):
        """The first page of a layer's grid, for events without a page input (gradio hands the visitor's token
        to the parameter after the inputs, so it cannot follow an optional `page`)."""
        return self.show_layer(source, model, layer, objective, 1, session, oauth_token)

    @staticmethod
    def clicked(features: list[int] | None, event: gr.SelectData) -> int:
        """The feature of the grid cell a visitor clicked."""
        if not features or event.index is None or not 0 <= int(event.index) < len(features):
            raise gr.Error("That cell is no longer shown: open the layer again.", print_exception=False)
        return features[int(event.index)]

    # --- a feature --------------------------------------------------------------------------------------
    def feature_page(self, source: Any, model: Any, layer: Any, objective: Any, feature: Any,
                     request: gr.Request = None, session: str | None = None,
                     oauth_token: gr.OAuthToken | None = None):
        """/feature_page: header, shareable link, visualizations, top examples with patch maps, statistics,
        previous/next feature, and the feature number."""
        with user_errors("opening the feature"):
            page = self.gallery(source, oauth_token, session).feature_page(model or None, layer, feature, objective or None,
                                                     max_examples=EXAMPLES_SHOWN)
            return self._page_outputs(page, base_url(request))

    @staticmethod
    def _page_outputs(page, base: str):
        link = PRIVATE_LINK if page.source == SESSION_GALLERY else feature_link(page, base)
        concepts = f"  \nCLIP concepts: {', '.join(map(inert, page.concept_names))}" if page.concept_names else ""
        header = (f"### Layer {page.layer} · feature {page.feature}\n{inert(page.model_id)} in "
                  f"<code>{inert(page.source)}</code>"
                  + (f" · examples from {inert(page.dataset)}" if page.dataset else "") + concepts)
        visualizations = []
        for viz in page.visualizations:
            if viz.image is not None:
                visualizations.append((viz.image, viz.caption))
            if viz.patch_map is not None:
                visualizations.append((viz.patch_map, "where it fires"))
        examples = []
        for example in page.examples:
            examples.append((example.image, example.caption))
            if example.patch_map is not None:
                examples.append((example.patch_map, f"#{example.rank} patch map"))
        if not examples:  # say why instead of showing an empty box
            header += "\n\n" + NO_EXAMPLES
        stats = [[name, f"{value:.4g}" if isinstance(value, float) else str(value)]
                 for name, value in page.stats.items()]
        return (gr.Column(visible=True), header, link, visualizations, gr.Gallery(examples, visible=bool(examples)),
                stats,
                gr.Button(interactive=page.previous is not None), gr.Button(interactive=page.next is not None),
                page.previous, page.next, page.feature)

    # --- deep links -------------------------------------------------------------------------------------
    def from_link(self, request: gr.Request, oauth_token: gr.OAuthToken | None = None):
        """On page load: open what the URL's query names (nothing changes when it names no gallery)."""
        try:
            wanted = parse_deep_link(dict(request.query_params) if request is not None else {})
        except VizError as err:
            raise gr.Error(error_text(f"{err} (in the page's link)"), print_exception=False) from None
        if wanted is None or wanted.gallery is None:
            return self.open_on_start(oauth_token)
        with user_errors("opening the link"):
            gallery = self.gallery(wanted.gallery, oauth_token)
            model, layer, objective = self._choose(gallery, wanted.model, wanted.layer, wanted.objective)
            pickers = self._pickers(gallery, model, layer, objective)
            key = gallery.key(model, layer, objective)  # resolved once: the grid and the page take it as it is
            rows = gallery.rows_at(key)
            page = 1
            if wanted.feature is not None:
                gallery.entry_in(rows, wanted.feature)  # a one-line error when it has none
                page = rows.position(wanted.feature) // GRID_PAGE + 1
            opened = (gallery.label, *pickers, self._summary(gallery))
            grid = self._grid(gallery, rows, page)
            if wanted.feature is None:
                shown = tuple(gr.skip() for _ in range(OUTPUTS_OF_PAGE))
            else:
                with user_errors("opening the feature"):
                    shown = self._page_outputs(gallery.page_at(key, wanted.feature, max_examples=EXAMPLES_SHOWN),
                                               base_url(request))
            return (*opened, *grid, *shown, gallery.label)  # the last fills the Gallery box

    def open_on_start(self, oauth_token: gr.OAuthToken | None = None, sources: list[str] | None = None):
        """A page loaded without a gallery link: the first of `sources` (default: `start_galleries()`) that opens,
        at its first layer, so the first screen shows features before anyone types. A gallery that fails (a Hub
        one offline) is logged and the next is tried; the built-in one comes last and needs no network."""
        for source in start_galleries() if sources is None else sources:
            try:
                gallery = self.gallery(source, oauth_token)
                model, layer, objective = self._choose(gallery, None, None, None)
                grid = self._grid(gallery, gallery.rows_at(gallery.key(model, layer, objective)), 1)
            except Exception as err:  # noqa: BLE001 - any failure at start means: show the next one
                log.warning("could not open the start gallery %s: %s", source, getattr(err, "message", err))
                continue
            opened = (gallery.label, *self._pickers(gallery, model, layer, objective), self._summary(gallery))
            return (*opened, *grid, *(gr.skip() for _ in range(OUTPUTS_OF_PAGE)), gallery.label)
        return tuple(gr.skip() for _ in range(OUTPUTS_ON_LOAD))

    @staticmethod
    def model_from_link(request: gr.Request):
        """On page load: a link naming a model and no gallery (`?model=org/vit&layer=5&feature=812`) fills the
        shared model box, layer and feature, ready for the Load, Render and Explore buttons (no compute here)."""
        try:
            wanted = parse_deep_link(dict(request.query_params) if request is not None else {})
        except VizError:
            wanted = None  # from_link reports it
        if wanted is None or wanted.gallery is not None:
            return gr.skip(), gr.skip(), gr.skip()
        layer = gr.Slider(value=wanted.layer, maximum=max(wanted.layer, 11)) if wanted.layer is not None else gr.skip()
        feature = (gr.Slider(value=wanted.feature, maximum=max(wanted.feature, 3071)) if wanted.feature is not None
                   else gr.skip())
        return wanted.model, layer, feature

    # --- compare ----------------------------------------------------------------------------------------
    def compare(self, source_a: Any, model_a: Any, layer: Any, objective: Any, source_b: Any, features: Any,
                session: str | None = None, oauth_token: gr.OAuthToken | None = None):
        """/compare: the same layer and features of two galleries side by side (a grey square where one lacks
        a feature); features default to the first of the layer."""
        from ..specs import parse_features

        with user_errors("comparing galleries"):
            a = self.gallery(source_a, oauth_token, session)
            if not str(source_b or "").strip():
                raise VizError("Enter a second gallery to compare with (a Hub dataset id).")
            b = self.gallery(source_b, oauth_token, session)
            model_a = a.model(model_a or None)
            rows_a = a.layer_rows(model_a, layer, objective or None)
            layer, objective = rows_a.layer, rows_a.objective
            model_b = model_a if model_a in b.models() else b.model(None)
            rows_b = b.layer_rows(model_b, layer, objective if objective in b.objectives(model_b, layer) else None)
            spec = str(features or "").strip()
            held = np.union1d(rows_a.features, rows_b.features)
            try:  # the count is checked before any list is built, as for render
                wanted = (parse_features(spec, int(held[-1]) + 1, max_count=COMPARE_MAX) if spec
                          else np.unique(rows_a.features)[:COMPARE_MAX].tolist())
            except VizError as err:
                raise VizError(f"{err} (layer {layer} of these galleries holds features "
                               f"{compact_ranges(held)})") from None
            sides = []
            for gallery, rows in ((a, rows_a), (b, rows_b)):
                found = rows.find(wanted)
                images = dict(zip(found, gallery.thumbnails(list(found.values()), THUMB_PX)))
                sides.append([
                    (images.get(f) or placeholder(THUMB_PX),
                     f"{f} · {found[f].activation:.3g}" if f in found and found[f].rendered else f"{f} · not here")
                    for f in wanted
                ])
            note = (f"Layer {layer}, features {', '.join(map(str, wanted[:8]))}{'…' if len(wanted) > 8 else ''}: "
                    f"left **{inert(a.label)}** ({inert(model_a)}), right **{inert(b.label)}** ({inert(model_b)}).")
            return sides[0], sides[1], note


OUTPUTS_OF_PAGE = 11  # what _page_outputs returns
OUTPUTS_ON_LOAD = 5 + 4 + OUTPUTS_OF_PAGE + 1  # open + show_layer + feature page + the Gallery box


def build(ctx: AppContext) -> Galleries:
    """The "Explore galleries" tab inside the open gr.Tabs, and the page-load handler that reads deep links."""
    galleries = Galleries(GalleryCache(max_rows=ctx.preset.max_gallery_rows))
    featured = featured_galleries()
    with gr.Tab("Explore galleries", id="galleries"):
        # one row for where to look, so the grid's first row of images is on the first screen (1400 x 1000)
        with gr.Row(equal_height=True):
            source_box = gr.Dropdown([g["id"] for g in featured], value=start_galleries()[0],
                                     allow_custom_value=True, scale=4, min_width=240, elem_id="gallery-source",
                                     label="Gallery (Hub dataset id" + (")" if on_space() else " or folder)"))
            open_button = gr.Button("Open", scale=1, min_width=80, variant="primary", elem_id="open-gallery")
            model = gr.Dropdown([], label="Model", scale=2, min_width=160, elem_id="gallery-model")
            layer = gr.Dropdown([], label="Layer", scale=1, min_width=80, elem_id="gallery-layer")
            objective = gr.Dropdown([], label="Objective", scale=1, min_width=120, visible=False)
        summary = gr.Markdown(featured_markdown(featured), elem_id="gallery-summary")
        # the opened gallery (the box may be edited without opening it); a hidden textbox, not a State, so that
        # API callers pass it too
        source = gr.Textbox(visible=False, label="gallery")
        page = gr.Slider(1, 2, value=1, step=1, label="Grid page", visible=False, elem_id="grid-page")
        layer_note = gr.Markdown()
        grid = gr.Gallery(label="Features of the layer (click one)", columns=8, fit_columns=False,
                          allow_preview=False, format="png", height="auto", elem_id="layer-grid")
        shown_features = gr.State([])
        with gr.Column(visible=False, elem_id="feature-page") as feature_page:
            header = gr.Markdown(elem_id="feature-header")
            link = gr.Textbox(label="Link to this feature", buttons=["copy"], interactive=False,
                              elem_id="feature-link")
            with gr.Row():
                previous = gr.Button("← Previous feature", elem_id="previous-feature")
                feature = gr.Number(label="Feature", precision=0, minimum=0, elem_id="gallery-feature")
                go = gr.Button("Go", elem_id="go-feature")
                following = gr.Button("Next feature →", elem_id="next-feature")
            previous_feature, next_feature = gr.State(None), gr.State(None)
            with gr.Row():
                visualizations = gr.Gallery(label="Visualizations (and where the feature fires in them)", columns=4,
                                            fit_columns=False, format="png", height="auto",
                                            elem_id="feature-visualizations")
                stats = gr.Dataframe(headers=["statistic", "value"], label="Activation statistics",
                                     interactive=False, elem_id="feature-stats")
            examples = gr.Gallery(label="Top dataset examples and their patch maps", columns=6, fit_columns=False,
                                  format="png", height="auto", elem_id="feature-examples")
        with gr.Accordion("The paper's analyses saved with this gallery", visible=False,
                          elem_id="gallery-analyses") as analyses_box:
            analyses = gr.Gallery(label="Experiment plots (the gallery's analysis/ folder)", columns=3,
                                  fit_columns=False, format="png", height="auto", elem_id="analysis-plots")
        with gr.Accordion("Compare with another gallery (same layer and features)", open=False):
            with gr.Row(equal_height=True):
                other = gr.Textbox(label="Second gallery", scale=3, elem_id="compare-source")
                compare_features = gr.Textbox(label=f"Features (up to {COMPARE_MAX})", info="0-7 | 3,9 | empty = first",
                                              scale=2, elem_id="compare-features")
                compare_button = gr.Button("Compare", scale=1, elem_id="compare")
            compare_note = gr.Markdown()
            with gr.Row():
                left = gr.Gallery(label="This gallery", columns=4, fit_columns=False, allow_preview=False,
                                  format="png", elem_id="compare-a")
                right = gr.Gallery(label="Second gallery", columns=4, fit_columns=False, allow_preview=False,
                                   format="png", elem_id="compare-b")

    where = [source, model, layer, objective]
    opened = [source, model, layer, objective, summary]
    layer_view = [grid, shown_features, page, layer_note]
    page_view = [feature_page, header, link, visualizations, examples, stats, previous, following,
                 previous_feature, next_feature, feature]
    # Reads, no model: outside the device's concurrency group. preprocess=False: the pickers' choices are set
    # per gallery, which API callers never see; every input is checked against the gallery instead.
    fast = dict(preprocess=False, concurrency_limit=4, concurrency_id="browse")

    def then_layer(event):
        return event.success(galleries.show_first_page, [*where, ctx.session], layer_view, api_visibility="private", **fast)

    def then_feature(event):
        shown = event.success(galleries.feature_page, [*where, feature, ctx.session], page_view, api_visibility="private", **fast)
        shown.success(None, [link], None, js=UPDATE_URL_JS)
        return shown

    # The named endpoints first: gradio names an event after its function, and a later public event with the
    # same function would get a suffixed name.
    opening = [open_button.click(galleries.open, [source_box, ctx.session], opened, api_name="open_gallery", **fast)]
    page.release(galleries.show_layer, [*where, page, ctx.session], layer_view, api_name="show_layer", **fast)
    go_event = go.click(galleries.feature_page, [*where, feature, ctx.session], page_view, api_name="feature_page", **fast)
    go_event.success(None, [link], None, js=UPDATE_URL_JS)
    compare_button.click(galleries.compare, [*where[:2], layer, objective, other, compare_features, ctx.session],
                         [left, right, compare_note], api_name="compare", **fast)

    opening.append(source_box.select(galleries.open, [source_box, ctx.session], opened, api_visibility="private", **fast))

    def then_analyses(event):
        event.success(galleries.analyses, [source, ctx.session], [analyses_box, analyses], api_visibility="private", **fast)

    for event in opening:
        then_layer(event)
        then_analyses(event)
    then_layer(model.input(galleries.pick_model, [source, model, ctx.session], [model, layer, objective],
                           api_visibility="private", **fast))
    then_layer(layer.input(galleries.pick_layer, [source, model, layer, ctx.session], [model, layer, objective],
                           api_visibility="private", **fast))
    objective.input(galleries.show_first_page, [*where, ctx.session], layer_view, api_visibility="private", **fast)
    then_feature(grid.select(galleries.clicked, [shown_features], [feature], api_visibility="private", queue=False))
    then_feature(previous.click(lambda f: f, [previous_feature], [feature], api_visibility="private", queue=False))
    then_feature(following.click(lambda f: f, [next_feature], [feature], api_visibility="private", queue=False))

    def open_in_explore(button):
        """`button` (another tab's) opens the visitor's session gallery here: the box says so, this tab shows."""
        shown = button.click(lambda: (SESSION_GALLERY, gr.Tabs(selected="galleries")), None, [source_box, ctx.tabs],
                             api_visibility="private", queue=False)
        opening = shown.then(galleries.open, [source_box, ctx.session], opened, api_visibility="private", **fast)
        then_layer(opening)
        then_analyses(opening)

    ctx.open_in_explore = open_in_explore
    ctx.demo.load(galleries.model_from_link, None, [ctx.model_id, ctx.layer, ctx.feature], api_visibility="private",
                  queue=False)
    on_start = ctx.demo.load(galleries.from_link, None, [*opened, *layer_view, *page_view, source_box],
                             api_visibility="private", **fast)
    on_start.success(None, [link], None, js=UPDATE_URL_JS)
    then_analyses(on_start)
    return galleries
