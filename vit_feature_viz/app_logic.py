"""What the Gradio app (app.py at the repo root) does, as plain functions; app.py only lays out and wires.

Every endpoint validates its input and the hardware caps of the running preset before any heavy work, and
turns failures into one-line `gr.Error`s: a `VizError`'s own text, or a short generic line for anything
unexpected (the traceback goes to the server log only). GPU work runs inside `@spaces.GPU` on ZeroGPU with a
duration computed from the request; without the `spaces` package it runs as is.

Nothing in the library imports this module.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from .errors import VizError

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
TABLE_HEADERS = ["feature", "activation", "activation_init"]
SESSION_ROOT = Path(tempfile.gettempdir()) / "vit-feature-viz-sessions"
UPDATE_S = 1.0  # a running render yields about this often: previews, and the points where a Stop lands
HEARTBEAT_S = 0.5  # the device side reports at least this often, even between slow steps
SECONDS_PER_SCANNED_IMAGE = 0.01  # ZeroGPU duration estimate for dataset scans


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
    from .specs import parse_features

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


# ----------------------------------------------------------------------------------------------- the app


class AppLogic:
    """The endpoints of the app for one hardware preset (see spaces_config/presets.py)."""

    def __init__(self, preset):
        self.preset = preset
        self._render_on_device = on_gpu(self._render_stream, duration=self._render_duration)
        self._scan_on_device = on_gpu(self._scan, duration=self._scan_duration)

    # --- models -------------------------------------------------------------------------------------------
    def load(self, model_id: Any):
        from .models.loader import load_model_cached

        return load_model_cached(check_name(model_id, "model", WELL_KNOWN_MODELS[0]))

    def layers(self, model_id: str) -> dict:
        """/layers: the model's structure (blocks and their MLP widths) as JSON."""
        with user_errors("loading the model"):
            return self.load(model_id).describe()

    def pickers(self, info: dict | None, layer: Any):
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

    def feature_picker(self, info: dict | None, layer: Any, feature: Any):
        """When the layer changes, the feature slider follows that block's width."""
        if not info or not info.get("layers"):
            return gr.skip()
        blocks = info["layers"]
        width = blocks[min(max(int(layer or 0), 0), len(blocks) - 1)]["features"]
        return gr.Slider(minimum=0, maximum=width - 1, value=min(int(feature or 0), width - 1), step=1)

    # --- render -------------------------------------------------------------------------------------------
    def plan(self, model_id, layer, features, objective, recipe, steps, image_size, seed):
        """Validate a render request against the model and the caps; returns (model, plan, seed)."""
        from .objectives import make_objective
        from .render import plan_render

        preset = self.preset
        steps = as_int(steps, "steps", minimum=1)
        if steps > preset.max_steps:
            raise over_cap(preset, "max steps", steps, preset.max_steps, "steps")
        seed = as_int(seed if seed not in (None, "") else 0, "seed", minimum=0)
        size = as_int(image_size if image_size not in (None, "") else 0, "image size", minimum=0)
        model = self.load(model_id)
        layer = as_int(layer, "layer")
        model.check_layer(layer)
        target = make_objective(objective, layer)
        target.check(model)
        wanted = resolve_features(features, target.num_channels(model), seed)
        if len(wanted) > preset.max_features:
            raise over_cap(preset, "max features", len(wanted), preset.max_features, "features")
        plan = plan_render(model, layer, wanted, objective, recipe, steps, size or None, None)
        if plan.image_size > preset.max_image_size:
            raise over_cap(preset, "max image size", plan.image_size, preset.max_image_size, "px")
        return model, plan, seed

    def render(self, model_id, layer, features, objective, recipe, steps, image_size, seed, session=None,
               progress=gr.Progress()) -> Iterator[tuple]:
        """/render: stream previews while optimizing, then (gallery, activation table).

        Each batch of features goes into the session gallery as soon as it finishes, so a Stop, a closed tab or
        an error in a later batch never loses the features already rendered. The session folder is handed to
        gradio (the first yield) before any work starts, so the session state points at it whatever happens next.
        """
        with user_errors("rendering"):
            model, plan, seed = self.plan(model_id, layer, features, objective, recipe, steps, image_size, seed)
            session = self._session_path(session)
            yield gr.skip(), gr.skip(), session
            total = plan.steps * len(plan.features)
            progress((0, total), desc="Starting", unit="feature-steps")
            results = []
            stream = self._render_on_device(model.model_id, plan.layer, plan.features, plan.objective.name,
                                            plan.recipe.name, plan.steps, plan.image_size, seed)
            previews: dict = {}  # feature -> latest image of the features being optimized
            shown, changed, batch_done = time.monotonic(), False, False
            with contextlib.closing(stream):
                for event in stream:
                    if event[0] == "step":  # not a tick
                        _, done, images, finished = event
                        if finished:  # saved now, not at the end: a Stop closes this generator at its next yield
                            self._add_rows(session, [r.to_row() for r in finished], model.backend)
                            batch_done = True
                        results.extend(finished)
                        previews.update(images)
                        for result in finished:
                            previews.pop(result.feature, None)
                        changed = True
                        progress((done, total), desc=f"{len(results)}/{len(plan.features)} features done",
                                 unit="feature-steps")
                    # Yield (the points where a Stop can close this generator) about every UPDATE_S, not more
                    # often: each yield hides the progress bar until the next progress message. A finished batch
                    # is shown at once.
                    if batch_done or time.monotonic() - shown >= UPDATE_S:
                        shown, batch_done = time.monotonic(), False
                        # the table stays put until the end: the progress bar is drawn on it (show_progress_on)
                        yield (self._gallery(results, previews) if changed else gr.skip()), gr.skip(), gr.skip()
                        changed = False
            yield self._gallery(results, {}), self._table(results), session

    def _render_duration(self, model_id, layer, features, objective, recipe, steps, image_size, seed) -> int:
        return self.preset.gpu_duration(len(features), steps)

    def _render_stream(self, model_id, layer, features, objective, recipe, steps, image_size, seed):
        """On the device: run the renderer in a thread and yield ('tick',) or ('step', done, previews, finished)."""
        from .render import render_batches

        with user_errors("rendering"):
            model = self.load(model_id)
            events: queue.Queue = queue.Queue()
            stop = threading.Event()
            progress_by_feature: dict[int, int] = {}

            def on_step(step, images):
                if stop.is_set():
                    raise _Cancelled
                progress_by_feature.update(dict.fromkeys(images, step))
                events.put(("step", sum(progress_by_feature.values()), images, []))

            def work():
                try:
                    for batch in render_batches(
                        model, layer, features, objective=objective, recipe=recipe, steps=steps,
                        image_size=image_size, seed=seed, progress=False, callback=on_step,
                        callback_every=max(1, min(steps // 20, 5)),
                    ):
                        progress_by_feature.update({r.feature: steps for r in batch})
                        events.put(("step", sum(progress_by_feature.values()), {}, batch))
                    events.put(("done",))
                except _Cancelled:
                    events.put(("done",))
                except BaseException as err:  # handed to the consumer, which raises it in the request
                    events.put(("error", err))

            threading.Thread(target=work, name="vfv-render", daemon=True).start()
            try:
                while True:
                    try:
                        event = events.get(timeout=HEARTBEAT_S)
                    except queue.Empty:
                        yield ("tick",)
                        continue
                    if event[0] == "done":
                        return
                    if event[0] == "error":
                        raise event[1]
                    yield event
            finally:
                stop.set()  # a Stop or a closed tab closes this generator: the worker ends at its next step

    @staticmethod
    def _gallery(results, previews: dict) -> list[tuple]:
        done = [(r.image, f"feature {r.feature} · activation {r.activation:.3f} (start {r.activation_init:.3f})")
                for r in results]
        return done + [(image, f"feature {f} · rendering…") for f, image in previews.items()]

    @staticmethod
    def _table(results) -> list[list]:
        return [[r.feature, round(r.activation, 6), round(r.activation_init, 6)] for r in results]

    # --- explore a feature --------------------------------------------------------------------------------
    def check_feature(self, model, layer, feature) -> tuple[int, int]:
        from .objectives import make_objective

        layer = as_int(layer, "layer")
        model.check_layer(layer)
        target = make_objective("feature", layer)
        features = resolve_features(feature, target.num_channels(model), 0)
        if len(features) != 1:
            raise VizError(f"Pick one feature here, not {len(features)}: e.g. {features[0]}.")
        return layer, features[0]

    def patch_map(self, model_id, layer, feature, image):
        """/patch_map: where `feature` of `layer` fires in an uploaded image (heatmap overlay)."""
        from .patchmap import patch_map

        with user_errors("drawing the patch map"):
            image = open_image(image)
            model = self.load(model_id)
            layer, feature = self.check_feature(model, layer, feature)
            return patch_map(model, image, layer, feature)

    def examples(self, model_id, layer, feature, dataset, split, max_images, top_k, session=None,
                 progress=gr.Progress()):
        """/examples: the dataset images that activate `feature` most, each followed by its patch map."""
        from .examples import example_rows

        with user_errors("scanning the dataset"):
            preset = self.preset
            dataset = check_name(dataset, "dataset", DEFAULT_DATASET)
            split = str(split or "").strip() or DEFAULT_SPLIT
            max_images = as_int(max_images if max_images not in (None, "") else preset.max_scan_images,
                                "max images", minimum=1)
            if max_images > preset.max_scan_images:
                raise over_cap(preset, "max dataset images", max_images, preset.max_scan_images, "images")
            top_k = as_int(top_k if top_k not in (None, "") else 8, "top k", minimum=1)
            if top_k > preset.max_top_k:
                raise over_cap(preset, "max examples", top_k, preset.max_top_k, "examples")
            model = self.load(model_id)
            layer, feature = self.check_feature(model, layer, feature)
            progress(None, desc=f"Scanning up to {max_images} images of {dataset}")
            found = self._scan_on_device(model.model_id, layer, feature, dataset, split, max_images, top_k)
            rows = example_rows(model, layer, "feature", dataset, {feature: found})
            session = self._add_rows(session, rows, model.backend)
            gallery = []
            for rank, example in enumerate(found, 1):
                caption = f"#{rank} · row {example.index} · {example.score:.3f}"
                gallery.append((example.image, caption))
                if example.patch_map is not None:
                    gallery.append((example.patch_map, f"#{rank} patch map"))
            return gallery, session

    def _scan_duration(self, model_id, layer, feature, dataset, split, max_images, top_k) -> int:
        return int(min(self.preset.max_gpu_seconds, 20 + SECONDS_PER_SCANNED_IMAGE * max_images))

    def _scan(self, model_id, layer, feature, dataset, split, max_images, top_k):
        from .examples import scan_examples

        with user_errors("scanning the dataset"):
            model = self.load(model_id)
            return scan_examples(model, layer, [feature], dataset, split=split, max_images=max_images,
                                 top_k=top_k, progress=False)[feature]

    # --- the session's gallery: download and push -----------------------------------------------------
    @staticmethod
    def _session_path(session: str | None) -> str:
        """The session's gallery folder; a new (empty) one under SESSION_ROOT if it has none yet."""
        if not session or not Path(session).is_dir():
            SESSION_ROOT.mkdir(parents=True, exist_ok=True)
            session = tempfile.mkdtemp(prefix="gallery-", dir=SESSION_ROOT)
        return session

    @classmethod
    def _add_rows(cls, session: str | None, rows: list[dict], backend: str) -> str:
        from .gallery import GalleryFolder

        session = cls._session_path(session)
        GalleryFolder(session).add(rows, card_info={"backend": backend})
        return session

    @staticmethod
    def forget_session(session: str | None) -> None:
        """gr.State's delete_callback: the session's gallery folder goes when the visitor leaves."""
        if session and Path(session).resolve().parent == SESSION_ROOT.resolve():
            shutil.rmtree(session, ignore_errors=True)

    @staticmethod
    def _session_folder(session: str | None):
        from .gallery import GalleryFolder

        folder = GalleryFolder(session) if session else None
        if folder is None or not folder.exists():
            raise VizError("Your gallery is empty: render some features or find dataset examples first.")
        return folder

    def gallery_status(self, session: str | None) -> str:
        from .gallery import GalleryFolder

        if not session or not GalleryFolder(session).exists():
            return "Your gallery is empty: render some features first."
        keys = GalleryFolder(session).keys()
        return f"Your gallery holds {len(keys)} feature(s) from {len({k[0] for k in keys})} model(s)."

    def download(self, fmt: str, session: str | None = None) -> str:
        """The session's gallery as one parquet file or as a zip of the dataset folder (card + shards)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        with user_errors("preparing the download"):
            folder = self._session_folder(session)
            out_dir = folder.path / ".downloads"  # dot-folders are not part of the gallery, and go with the session
            out_dir.mkdir(exist_ok=True)
            if fmt == "parquet":
                out = out_dir / "vit-feature-viz-gallery.parquet"
                shards = sorted(folder.data_dir.glob("*.parquet"))
                pq.write_table(pa.concat_tables([pq.read_table(p) for p in shards]), out)
            elif fmt == "zip":
                out = out_dir / "vit-feature-viz-gallery.zip"
                with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
                    for path in sorted(folder.path.rglob("*")):
                        relative = path.relative_to(folder.path)
                        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
                            archive.write(path, Path("vit-feature-viz-gallery") / relative)
            else:
                raise VizError(f"Unknown download format '{fmt}': use parquet or zip.")
            return str(out)

    def push(self, repo_name: str, private: bool, session: str | None = None,
             oauth_token: gr.OAuthToken | None = None, profile: gr.OAuthProfile | None = None) -> str:
        """Push the session's gallery to a Hub dataset repo.

        On a Space the visitor's own OAuth token is used (never the Space's secrets) and the repo must be in
        their namespace. Locally huggingface_hub's usual token (HF_TOKEN or `hf auth login`) is used.
        """
        from .hub import push_gallery

        with user_errors("pushing to the Hub"):
            folder = self._session_folder(session)
            name = str(repo_name or "").strip() or DEFAULT_REPO_NAME
            token = None
            if on_space():
                if oauth_token is None or profile is None:
                    raise VizError("Sign in with Hugging Face (button at the top) to push into your own namespace.")
                namespace, _, short = name.rpartition("/")
                if namespace and namespace != profile.username:
                    raise VizError(f"You can push only into your own namespace: use {profile.username}/{short}.")
                name, token = f"{profile.username}/{short}", oauth_token.token
            started = time.monotonic()
            try:
                url = push_gallery(folder.path, name, private=bool(private), token=token,
                                   commit_message="Gallery from the vit-feature-viz Space")
            except VizError as err:  # visitors know their gallery, not the server folder that holds it
                raise VizError(str(err).replace(f"the local gallery in {folder.path}", "your gallery")) from None
            return f"Pushed {len(folder.keys())} feature(s) to [{url}]({url}) in {time.monotonic() - started:.0f} s."


class _Cancelled(Exception):
    """Raised from the render callback once the request is gone (Stop, closed tab)."""
