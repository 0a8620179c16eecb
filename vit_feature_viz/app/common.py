"""What every tab of the app shares: checks of UI/API input, one-line errors, the model cache, the visitor's
session gallery, and the `AppContext` each tab's `build(ctx)` receives.

Every endpoint validates its input and the hardware caps of the running preset before any heavy work, and
turns failures into one-line `gr.Error`s: a `VizError`'s own text, or a short generic line for anything
unexpected (the traceback goes to the server log only).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from ..errors import VizError

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
DEFAULT_DATASET = "uoft-cs/cifar10"
DEFAULT_SPLIT = "test"
DEFAULT_REPO_NAME = "vit-feature-viz-gallery"
SESSION_ROOT = Path(tempfile.gettempdir()) / "vit-feature-viz-sessions"


def on_space() -> bool:
    """True inside a Hugging Face Space (the same test gradio uses to switch to real OAuth)."""
    return os.environ.get("SYSTEM") == "spaces" and bool(os.environ.get("SPACE_ID"))


def on_gpu(fn, duration):
    """`fn` inside `@spaces.GPU(duration=duration)` when the spaces package is there (a no-op off ZeroGPU)."""
    if spaces is None:
        return fn
    return spaces.GPU(duration=duration)(fn)


@contextlib.contextmanager
def user_errors(action: str):
    """Show a VizError's one line as is; anything unexpected as one generic line (traceback to the log only)."""
    try:
        yield
    except gr.Error:
        raise
    except VizError as err:
        raise gr.Error(str(err), print_exception=False) from None
    except Exception as err:
        log.exception("unexpected error while %s", action)
        raise gr.Error(
            f"Unexpected error while {action} ({type(err).__name__}): try again, or with other settings.",
            print_exception=False,
        ) from None


# ------------------------------------------------------------------------------------------ small checks


def as_int(value: Any, name: str, *, minimum: int | None = None) -> int:
    """An integer from a UI or API value (numbers may arrive as floats or strings), or a VizError."""
    try:
        number = float(value)
        if number != int(number):
            raise ValueError
        number = int(number)
    except (TypeError, ValueError, OverflowError):
        raise VizError(f"{name.capitalize()} must be a whole number, not {value!r}.") from None
    if minimum is not None and number < minimum:
        raise VizError(f"{name.capitalize()} must be at least {minimum}, not {number}.")
    return number


def looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~", "\\")) or ".." in name or name.count("/") > 1 or Path(name).exists()


def check_name(name: Any, kind: str, example: str) -> str:
    """A stripped model/dataset id; on a Space only Hub ids are accepted (no reading the server's files)."""
    name = str(name or "").strip()
    if not name:
        raise VizError(f"No {kind} given: enter a Hub {kind} id such as {example}.")
    if on_space() and looks_like_path(name):
        raise VizError(f"'{name}' is a local path: on this Space enter a Hub {kind} id such as {example}.")
    return name


def resolve_features(spec: Any, num_features: int, seed: int) -> list[int]:
    """Parse a feature spec from the UI or API: 7 | 0,5,9 | 0-63 | all | random N (drawn with the seed)."""
    from ..specs import parse_features

    return parse_features(spec if isinstance(spec, (int, float)) else str(spec if spec is not None else "").strip(),
                          num_features, seed)


def open_image(payload: Any):
    """A PIL image from what the endpoint gets: a PIL image, or gradio's file payload (a dict whose path gradio
    has already checked is an upload in its cache; the endpoints skip gradio's preprocessing so that all
    bounds are checked here, against the loaded model and the caps)."""
    from PIL import Image, UnidentifiedImageError

    if payload is None or payload == {}:
        raise VizError("No image given: upload an image to map.")
    if isinstance(payload, Image.Image):
        return payload
    path = payload.get("path") if isinstance(payload, dict) else None
    if not path:
        raise VizError("No image given: upload an image to map.")
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (UnidentifiedImageError, OSError):
        raise VizError("The uploaded file is not an image this app can read: upload a PNG, JPEG or WebP.") from None


def over_cap(preset, what: str, asked: int, cap: int, unit: str) -> VizError:
    return VizError(
        f"{asked} {unit} is over this Space's cap of {cap} {unit} per request ({what}, hardware preset "
        f"{preset.name}): ask for at most {cap}."
    )


# ------------------------------------------------------------------------------------------- the models


class ModelCache:
    """Loaded models shared by every tab and request, keyed by (id, revision): the weights are read once.

    Small on purpose (a model can take gigabytes): the least recently used one is dropped when a new one comes
    in. Two requests for the same model wait for one load instead of loading it twice.
    """

    def __init__(self, size: int = 2):
        self.size = size
        self._models: OrderedDict[tuple[str, str | None], Any] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, str | None], threading.Lock] = {}

    def get(self, model_id: Any, revision: str | None = None):
        """The loaded model for a UI/API model id (checked first), loading it if needed."""
        from ..models.loader import load_model

        key = (check_name(model_id, "model", WELL_KNOWN_MODELS[0]), revision)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                if key in self._models:
                    return self._models[key]
            try:
                model = load_model(key[0], revision=revision)
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            with self._lock:
                self._models[key] = model
                while len(self._models) > self.size:
                    self._models.popitem(last=False)
            return model

    def layers(self, model_id: str) -> dict:
        """/layers: the model's structure (blocks and their MLP widths) as JSON."""
        with user_errors("loading the model"):
            return self.get(model_id).describe()


def pickers(info: dict | None, layer: Any):
    """After /layers: the layer slider spans the blocks, the feature slider the chosen block's width."""
    if not info or not info.get("layers"):
        return gr.skip(), gr.skip(), gr.skip()
    blocks = info["layers"]
    layer = min(max(int(layer or 0), 0), len(blocks) - 1)
    width = blocks[layer]["features"]
    summary = (
        f"**{info['model_id']}** ({info['backend']}{', CLIP' if info.get('is_clip') else ''}): "
        f"{len(blocks)} blocks, MLP width {width}, {info['image_size']} px input, patch {info['patch_size']}"
        + (f", {info['num_classes']} classes" if info.get("num_classes") else "")
    )
    return (
        gr.Slider(minimum=0, maximum=len(blocks) - 1, value=layer, step=1),
        gr.Slider(minimum=0, maximum=width - 1, step=1),
        summary,
    )


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


def add_rows(session: str | None, rows: list[dict], backend: str) -> str:
    """Save finished rows into the session gallery at once (a later Stop or error never loses them)."""
    from ..gallery import GalleryFolder

    session = session_path(session)
    GalleryFolder(session).add(rows, card_info={"backend": backend})
    return session


def forget_session(session: str | None) -> None:
    """gr.State's delete_callback: the session's gallery folder goes when the visitor leaves."""
    if session and Path(session).resolve().parent == SESSION_ROOT.resolve():
        shutil.rmtree(session, ignore_errors=True)


def session_folder(session: str | None):
    """The session's gallery, or a VizError when nothing was rendered or found yet."""
    from ..gallery import GalleryFolder

    folder = GalleryFolder(session) if session else None
    if folder is None or not folder.exists():
        raise VizError("Your gallery is empty: render some features or find dataset examples first.")
    return folder


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
    jobs: list = field(default_factory=list)
    stop_buttons: list = field(default_factory=list)

    def device_job(self) -> dict:
        """Event options of a model job: at most preset.concurrency of them run at once, all tabs together.

        preprocess=False: gradio would check inputs against the sliders' static bounds, which API callers never
        update; the endpoints check every input against the loaded model and the preset's caps instead."""
        return dict(preprocess=False, concurrency_id="device", concurrency_limit=self.preset.concurrency)

    def wire_stop_buttons(self) -> None:
        """Every Stop button cancels every long job of the page (called once all tabs are built)."""
        for button in self.stop_buttons:
            button.click(None, None, None, cancels=list(self.jobs), api_visibility="private")
