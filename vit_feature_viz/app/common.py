"""What every tab of the app shares: checks of UI/API input, one-line errors, the model cache, the visitor's
session gallery, and the `AppContext` each tab's `build(ctx)` receives.

Every endpoint validates its input and the hardware caps of the running preset before any heavy work, and
turns failures into one-line `gr.Error`s: a `VizError` worded for the app (`AppWording`: its controls, not CLI
flags), or a short generic line for anything unexpected (the traceback goes to the server log only).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import io
import logging
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from ..errors import VizError, Wording
from ..image_datasets import BUILTIN_DATASETS
from ..models.builtin import DEFAULT_BUILTIN
from ..lru import LRUCache
from ..markup import inert
from ..specs import given_name, looks_like_path, whole_number

try:  # ZeroGPU Spaces ship the `spaces` package; elsewhere the app runs unchanged
    import spaces
except ImportError:  # pragma: no cover - depends on the machine
    spaces = None

log = logging.getLogger("vit_feature_viz.app")

WELL_KNOWN_MODELS = [
    "google/vit-base-patch16-224",
    "openai/clip-vit-base-patch32",
    "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k",
    "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
]
DEFAULT_DATASET = "uoft-cs/cifar10"  # where the Hub answers; offline, the built-in shapes set (AppContext)
DEFAULT_SPLIT = ""  # empty: the dataset's first of test, validation, train (a local folder may have train only)
DEFAULT_REPO_NAME = "vit-feature-viz-gallery"
SESSION_ROOT = Path(tempfile.gettempdir()) / "vit-feature-viz-sessions"


# Error pop-ups (gradio's toasts) open at the top right, over the model box's Load button: a visitor fixing what a
# message says could not press Load again until they went. At the bottom right they cover nothing one needs.
PAGE_STYLE = """<style>
.toast-wrap { top: auto !important; bottom: var(--size-4); }
</style>"""


def on_space() -> bool:
    """True inside a Hugging Face Space (the same test gradio uses to switch to real OAuth)."""
    return os.environ.get("SYSTEM") == "spaces" and bool(os.environ.get("SPACE_ID"))


def visitor_token(oauth_token: gr.OAuthToken | None) -> str | bool | None:
    """The token every Hub read made for a visitor uses (galleries, datasets, models).

    On a Space: the visitor's own sign-in token, else False (anonymous), never None, with which huggingface_hub
    and datasets would read with the Space's HF_TOKEN and show its owner's private repos to anyone. Off a Space:
    None, the local user's own login (whose token gradio's local sign-in would hand out anyway).
    """
    if not on_space():
        return None
    token = getattr(oauth_token, "token", None)
    return token.strip() if isinstance(token, str) and token.strip() else False


def on_gpu(fn, duration):
    """`fn` inside `@spaces.GPU(duration=duration)` when the spaces package is there (a no-op off ZeroGPU)."""
    if spaces is None:
        return fn
    return spaces.GPU(duration=duration)(fn)


@contextlib.contextmanager
def user_errors(action: str):
    """Show a VizError's one line in the app's words, as text; anything unexpected as one generic line (traceback to the log only).

    Messages name what a visitor or a gallery gave (a model id, a folder, a link's value), and gradio shows them
    as HTML: `error_text` keeps them text."""
    try:
        yield
    except gr.Error:
        raise
    except VizError as err:
        raise gr.Error(error_text(err.worded(APP)), print_exception=False) from None
    except Exception as err:
        log.exception("unexpected error while %s", action)
        raise gr.Error(
            f"Unexpected error while {action} ({type(err).__name__}): try again, or with other settings.",
            print_exception=False,
        ) from None


# What the app decides itself, so a visitor cannot set it: the advice instead of the CLI's, by setting.
APP_DECIDES = {
    "allow_pickle": "this app loads only safetensors weights, so pick a checkpoint that has a .safetensors file",
    "trust_remote_code": "this app never runs code from a model repo, so pick a checkpoint that transformers, "
                         "timm or open_clip load by themselves",
    "image_column": "this app reads the dataset's first image column, so pick a dataset that has one",
    "batch_size": "this app picks the batch size itself, so try again with fewer images",
    "scan_batch_size": "this app picks the batch size itself, so try again with fewer images",
    "out": "this app writes into your session gallery, so try again or reload the page",
    "box_format": "this app reads boxes as x0, y0, x1, y1 pixels, so pick a Box column in that format or a Mask "
                  "column",
    "device": "the device comes with this Space's hardware (its owner picks it in the Space's settings)",
    "token": "paste a Hugging Face token with write access in the Token field (or sign in on a Space)",
    "cue_column": "this app reads a shape column and a color, colour, texture or cue column, so pick a dataset "
                  "that has both, e.g. vit-feature-viz/shapes-cue-conflict",
    # HF_HUB_OFFLINE is the server's setting (its owner's), not the visitor's
    "hub_offline": "this app runs without the Hub (its owner set HF_HUB_OFFLINE), so use what it has at hand: "
                   f"the built-in model {DEFAULT_BUILTIN}, the built-in datasets {', '.join(BUILTIN_DATASETS)}, "
                   "or a folder of images or a gallery on this machine",
    "hub_offline_push": "this app runs without the Hub (its owner set HF_HUB_OFFLINE), so download your gallery here "
                        "and push it from a machine that is online",
}


class AppWording(Wording):
    """A library error as the app's visitor reads it: the app's controls instead of CLI flags ("Layer", labelled
    as the setting is named), its own advice for what it decides itself, and "your gallery" for the session
    gallery (the server folder that holds it is none of the visitor's business)."""

    def setting(self, option: str, how: str = "") -> str:
        control = option.replace("_", " ").capitalize()
        if not how:
            return control
        return f"set {control} to" + (" e.g." if how.endswith("e.g.") else "")

    def gallery(self, folder: str) -> str:
        return "your gallery"

    def own_fix(self, option: str | None) -> str | None:
        return APP_DECIDES.get(option)


APP = AppWording()


def error_text(message: str) -> str:
    """A message for gr.Error: gradio's toast renders it as HTML, so what it quotes must stay text."""
    return inert(message, markdown=False)


# ------------------------------------------------------------------------------------------ small checks


def as_int(value: Any, name: str, *, minimum: int | None = None) -> int:
    """An integer from a UI or API value (numbers may arrive as floats or strings), or a VizError: the library's
    one check, so the app refuses exactly what the CLI and library refuse."""
    return whole_number(value, name, minimum=minimum)


HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(?:/[A-Za-z0-9][\w.-]*)?$")  # name or namespace/name


def check_name(name: Any, kind: str, example: str) -> str:
    """A stripped dataset id, never empty, that this server may read (see `space_checks`)."""
    return space_checks(given_name(name, kind, example), kind, example)


def space_checks(name: str, kind: str, example: str) -> str:
    """`name` (stripped) if this server may read it: on a Space only Hub ids are accepted (no reading the
    server's files): no local path, and for a dataset nothing else either, such as the `datasets` builders
    (imagefolder, csv, parquet, ...) that read the server's working directory. An empty name passes: the loader
    refuses it, once (`looks_like_path("")` is True, so it must not be called a local path here)."""
    if not name or not on_space():
        return name
    if looks_like_path(name):
        raise VizError(f"'{name}' is a local path: on this Space enter a Hub {kind} id such as {example}.")
    if kind == "dataset":
        from ..image_datasets import packaged_builders

        if name.lower() in packaged_builders():
            raise VizError(f"'{name}' is a builder of the datasets library, which reads this server's files: on "
                           f"this Space enter a Hub dataset id such as {example}.")
        if not HUB_NAME.match(name):
            raise VizError(f"'{name}' is not a Hub dataset id: on this Space enter namespace/name, such as {example}.")
    return name


def feature_spec(spec: Any) -> int | float | str:
    """A feature spec from the UI or API (7 | 0,5,9 | 0-63 | all | random N) as the planners read it: a number, or
    stripped text; they check it against the layer's width and the cap before any list is built ("0-30000000" is
    one line, not gigabytes)."""
    return spec if isinstance(spec, (int, float)) else str(spec if spec is not None else "").strip()


MAX_IMAGE_PIXELS = 4096 * 4096  # an uploaded image is checked from its header before it is decoded


def open_image(payload: Any, uploads: Collection[str]):
    """A PIL image from what an endpoint gets: a file that gradio itself received as an upload (its path is in
    `uploads`, the Blocks' upload_file_set), inline data (a data: URL), or a PIL image (Python callers).

    The endpoints skip gradio's preprocessing (so that all bounds are checked against the loaded model and the
    caps), and gradio checks a file payload only when it carries gradio's FileData meta: a bare
    {"path": "/some/server/file.png"} would reach us unchecked. So any path that is not one of this app's
    uploads is refused here, whatever the payload looks like.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(payload, Image.Image):
        return payload
    path = payload.get("path") if isinstance(payload, dict) else None
    url = payload.get("url") if isinstance(payload, dict) else payload if isinstance(payload, str) else None
    if isinstance(url, str) and url.startswith("data:"):
        source = _inline_data(url)
    elif isinstance(path, str) and path:
        if path not in uploads and str(Path(path).resolve()) not in uploads:
            raise VizError("The image was not uploaded to this app: upload it (the Your image box, or "
                           "gradio_client's handle_file) or send it inline as a data: URL, not as a server path.")
        source = path
    elif payload in (None, {}, ""):
        raise VizError("No image given: upload an image to map.")
    else:
        raise VizError("The image was not uploaded to this app: upload it (the Your image box, or "
                       "gradio_client's handle_file) or send it inline as a data: URL.")
    try:
        with Image.open(source) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise VizError(f"The image is {image.width}x{image.height} pixels, more than this app reads "
                               f"({MAX_IMAGE_PIXELS // 1_000_000} megapixels): upload a smaller one.")
            image.load()
            return image.copy()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        raise VizError("The uploaded file is not an image this app can read: upload a PNG, JPEG or WebP.") from None


def upload_sha256(payload: Any) -> str | None:
    """The sha256 of the bytes of an image `open_image` accepted (an upload's file or inline data), the hash a
    gallery row names so the visitor can tell which image it started from; None for a PIL image (no file)."""
    path = payload.get("path") if isinstance(payload, dict) else None
    url = payload.get("url") if isinstance(payload, dict) else payload if isinstance(payload, str) else None
    if isinstance(url, str) and url.startswith("data:"):
        return hashlib.sha256(_inline_data(url).getvalue()).hexdigest()
    if isinstance(path, str) and path:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return None


def _inline_data(url: str) -> io.BytesIO:
    """The bytes of a base64 data: URL (what a browser or an API client may send instead of an upload)."""
    header, _, data = url.partition(",")
    if not header.endswith(";base64") or len(data) > 30_000_000:
        raise VizError("The inline image is not a base64 data: URL under 20 MB: upload the image instead.")
    try:
        return io.BytesIO(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError):
        raise VizError("The inline image is not valid base64: upload the image instead.") from None


def over_cap(preset, what: str, asked: int, cap: int, unit: str) -> VizError:
    return VizError(
        f"{asked} {unit} is over this Space's cap of {cap} {unit} per request ({what}, hardware preset "
        f"{preset.name}): ask for at most {cap}."
    )


# ------------------------------------------------------------------------------------------- the models


class ModelCache:
    """Loaded models shared by every tab and request, keyed by (id, revision, reader): the weights are read once.

    Small on purpose (a model can take gigabytes): the least recently used one is dropped when a new one comes
    in. Two requests for the same model wait for one load instead of loading it twice. A checkpoint larger than
    `max_parameters` is refused from its config and weight headers, before any weights are downloaded. A model
    loaded with one visitor's token is handed to that token only (hub.reader_key); one loaded anonymously (or a
    built-in) is public, so it serves everyone.
    """

    def __init__(self, max_parameters: int | None = None, size: int = 2):
        self.max_parameters = max_parameters
        self.size = size
        self._models = LRUCache(size)  # (id, revision, reader) -> VisionModel

    def get(self, model_id: Any, revision: str | None = None, token: str | bool | None = None):
        """The loaded model for a UI/API model id (checked first), loading it with `token` (visitor_token) if
        needed."""
        from ..models.loader import load_model

        name = space_checks(str(model_id or "").strip(), "model", WELL_KNOWN_MODELS[0])  # load_model refuses ""
        key, *shared = self._keys(name, revision, token)
        return self._models.get_or_build(
            key, lambda: load_model(name, revision=revision, max_parameters=self.max_parameters, token=token), shared)

    @staticmethod
    def _keys(name: str, revision: str | None, token: str | bool | None) -> list[tuple]:
        """The cache key a model loads under for this reader, then the keys it may also be served from: a model
        loaded anonymously (or a built-in) is public, which any token may read too."""
        from ..models.builtin import builtin_path
        from ..store.hub import reader_key

        public = (name, revision, reader_key(False))
        if builtin_path(name) is not None:
            return [public]
        own = (name, revision, reader_key(token))
        return [own, public] if isinstance(token, str) else [own]

    def layers(self, model_id: str, oauth_token: gr.OAuthToken | None = None) -> dict:
        """/layers: the model's structure (blocks and their MLP widths) as JSON."""
        with user_errors("loading the model"):
            return self.get(model_id, token=visitor_token(oauth_token)).describe()


def loading_message(model_id: Any) -> str:
    """Shown at once when Load is pressed: loading a model the first time can take a while."""
    return (f"Loading **{inert(str(model_id or '').strip())}**… (the first load of a model reads its weights; "
            "later requests reuse it)")


def load_failed(model_id: Any) -> str:
    return f"Could not load **{inert(str(model_id or '').strip())}**: see the message in the corner, fix it and Load again."


def pickers(info: dict | None, layer: Any):
    """After /layers: the layer slider spans the blocks, the feature slider the chosen block's width."""
    if not info or not info.get("layers"):
        return gr.skip(), gr.skip(), gr.skip()
    blocks = info["layers"]
    layer = min(max(int(layer or 0), 0), len(blocks) - 1)
    width = blocks[layer]["features"]
    summary = (
        f"**{inert(info['model_id'])}** ({inert(info['backend'])}{', CLIP' if info.get('is_clip') else ''}): "
        f"{len(blocks)} blocks, MLP width {width}, {info['image_size']} px input, patch {info['patch_size']}"
        + (f", {info['num_classes']} classes" if info.get("num_classes") else "")
    )
    return (
        gr.Slider(minimum=0, maximum=len(blocks) - 1, value=layer, step=1),
        gr.Slider(minimum=0, maximum=width - 1, step=1),
        summary,
    )


def structure_reader(models: "ModelCache", *, at_start: bool = False):
    """The sliders' source when no one pressed Load: the structure of the model in the box, read when it needs no
    download (a built-in model, or one in the local Hub cache), at start, whenever the box changes and after a
    render. Other names wait for Load, and a failure leaves the page as it was (Load reports it). At start, a
    deep link sets the box and the sliders itself (its model box change reads the structure then)."""
    from ..models.builtin import builtin_path, is_cached
    from .links import LINK_KEYS

    def read(model_id: Any, layer: Any, request: gr.Request, oauth_token: gr.OAuthToken | None = None):
        name = str(model_id or "").strip()
        skip = (gr.skip(),) * 4
        if at_start and request is not None and set(request.query_params) & set(LINK_KEYS):
            return skip
        try:
            at_hand = bool(name) and (builtin_path(name) is not None or is_cached(name))
        except Exception:  # noqa: BLE001 - not a repo id the cache can look up: wait for Load
            return skip
        if not at_hand:
            return skip
        try:
            info = models.layers(name, oauth_token)
        except gr.Error:
            return skip
        return (info, *pickers(info, layer))

    return read


def feature_picker(info: dict | None, layer: Any, feature: Any):
    """When the layer changes, the feature slider follows that block's width."""
    if not info or not info.get("layers"):
        return gr.skip()
    blocks = info["layers"]
    width = blocks[min(max(int(layer or 0), 0), len(blocks) - 1)]["features"]
    return gr.Slider(minimum=0, maximum=width - 1, value=min(int(feature or 0), width - 1), step=1)


# ------------------------------------------------------------------------- the visitor's session gallery


def session_path(session: str | None) -> str:
    """The session's gallery folder; a new (empty) one under SESSION_ROOT if it has none yet."""
    if not session or not Path(session).is_dir():
        SESSION_ROOT.mkdir(parents=True, exist_ok=True)
        session = tempfile.mkdtemp(prefix="gallery-", dir=SESSION_ROOT)
    return session


SESSION_KEY = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32): 256 random bits
BROWSER_PREFIX = "browser-"  # a gallery folder bound to a browser's key: it outlives a page reload
SESSION_TTL_S = 6 * 3600  # a browser's gallery goes this long after its last use (a reload, a render)


def restore_session(key: Any, session: str | None):
    """On page load: (the gallery folder, the key) of this browser, kept in its localStorage (gr.BrowserState), so
    what a visitor rendered is still theirs after a reload. A new key when the browser has none (or a malformed
    one). The folder is named by the key's hash: only a browser holding the key reaches it (no folder name or
    server path ever gives it), and folders of keys unused for SESSION_TTL_S go."""
    if session and Path(session).is_dir():  # this session already has its gallery (an API caller's, say)
        return session, gr.skip()
    prune_sessions()
    fresh = not (isinstance(key, str) and SESSION_KEY.match(key))
    key = secrets.token_urlsafe(32) if fresh else key
    folder = SESSION_ROOT / (BROWSER_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:40])
    folder.mkdir(parents=True, exist_ok=True)
    os.utime(folder)  # used now
    return str(folder), (key if fresh else gr.skip())


def prune_sessions(now: float | None = None) -> None:
    """Remove browser-bound gallery folders unused for SESSION_TTL_S (a reload or a render touches them)."""
    import time

    now = time.time() if now is None else now
    for folder in SESSION_ROOT.glob(BROWSER_PREFIX + "*") if SESSION_ROOT.is_dir() else ():
        with contextlib.suppress(OSError):
            if now - folder.stat().st_mtime > SESSION_TTL_S:
                shutil.rmtree(folder, ignore_errors=True)


def add_rows(session: str | None, rows: list[dict], backend: str) -> str:
    """Save finished rows into the session gallery at once (a later Stop or error never loses them)."""
    from ..store.folder import GalleryFolder

    session = session_path(session)
    GalleryFolder(session).add(rows, card_info={"backend": backend})
    with contextlib.suppress(OSError):
        os.utime(session)  # used now (see prune_sessions)
    return session


def forget_session(session: str | None) -> None:
    """gr.State's delete_callback: the session's gallery folder goes when the visitor leaves, unless a browser's
    key holds it (a reload closes the old session and opens it again; `prune_sessions` removes it later)."""
    if (session and Path(session).resolve().parent == SESSION_ROOT.resolve()
            and not Path(session).name.startswith(BROWSER_PREFIX)):
        shutil.rmtree(session, ignore_errors=True)


def session_folder(session: str | None):
    """The session's gallery folder, or a VizError when nothing was rendered or found yet."""
    return session_gallery(session).folder


def session_gallery(session: str | None):
    """The session's gallery with its shards found once (a push takes it as it is, `store.hub.push_gallery`), or
    a VizError when nothing was rendered or found yet."""
    from ..store.folder import CheckedGallery, GalleryFolder

    folder = GalleryFolder(session) if session else None
    shards = folder.shard_paths() if folder is not None else []
    if not shards:
        raise VizError("Your gallery is empty: render some features or find dataset examples first.")
    return CheckedGallery(folder, tuple(shards))


SESSION_GALLERY = "your session gallery"  # what the Explore tab's gallery box says for it, never a server path


def is_session_gallery(source: Any) -> bool:
    return isinstance(source, str) and source.strip().lower() == SESSION_GALLERY


def open_session_gallery(session: str | None, cache):
    """The visitor's own session gallery for browsing (`cache`: the tab's GalleryCache), labelled SESSION_GALLERY;
    the folder comes from the visitor's session state, which no request can set, so no one else's is reachable."""
    from ..store.pages import Gallery
    from ..store.sources import FolderSource

    folder = session_folder(session)  # a VizError when nothing was rendered or found yet
    return Gallery(FolderSource(folder.path, label=SESSION_GALLERY), max_rows=cache.max_rows, indexes=cache)


# ------------------------------------------------------------------------------------------ the context


@dataclass
class AppContext:
    """What a tab's `build(ctx)` gets: the preset, the shared logic and the shared components of the page.

    Long model jobs a tab starts go into `jobs` (the Stop buttons in `stop_buttons` cancel all of them, wired
    once every tab is built, by `wire_stop_buttons`); `device_job()` gives the event options that put a job
    in the one concurrency group of the device.
    """

    preset: Any
    models: ModelCache
    demo: gr.Blocks
    show_login: bool
    model_id: gr.components.Component  # the model box (a Hub id or, off-Space, a local folder)
    info: gr.JSON  # the loaded model's structure (/layers): blocks and their widths
    layer: gr.Slider
    feature: gr.Slider  # the one feature a tab explores
    session: gr.State  # the visitor's session gallery folder (str or None)
    summary: Any = None  # the line under the model box that says which model the sliders describe
    default_dataset: str = DEFAULT_DATASET  # the built-in shapes set when the Hub cannot be reached
    tabs: Any = None  # the gr.Tabs holding every tab (a button may switch to one)
    open_in_explore: Any = None  # set by the Explore galleries tab: open_in_explore(button) opens the session gallery
    jobs: list = field(default_factory=list)
    stop_buttons: list = field(default_factory=list)
    sae_boxes: list = field(default_factory=list)  # each tab's SAE box (app/sae_source.py), filled by the SAE tab

    def refresh_structure(self, event) -> None:
        """After `event` succeeds (a render loads the model in the box), the sliders describe that model."""
        event.success(structure_reader(self.models), [self.model_id, self.layer],
                      [self.info, self.layer, self.feature, self.summary], api_visibility="private", queue=False,
                      preprocess=False)  # the slider's value is clamped by the reader (see app.py's sliders_in)

    def device_job(self) -> dict:
        """Event options of a model job: at most preset.concurrency of them run at once, all tabs together.

        preprocess=False: gradio would check inputs against the sliders' static bounds, which API callers never
        update; the endpoints check every input against the loaded model and the preset's caps instead."""
        return dict(preprocess=False, concurrency_id="device", concurrency_limit=self.preset.concurrency)

    def wire_stop_buttons(self) -> None:
        """Every Stop button cancels every long job of the page (called once all tabs are built)."""
        for button in self.stop_buttons:
            button.click(None, None, None, cancels=list(self.jobs), api_visibility="private")
