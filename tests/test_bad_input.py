"""Every bad input a user can give, in one table: each ends as ONE line naming the fix, never a traceback, and
writes nothing.

A row is a `Case`: the surface it is given on, what it is, the message fragment expected, and the input. Surfaces:
"cli" (`vit_feature_viz ...`: exit code 2, one stderr line starting `error:`; the CLI's main() runs in this process,
set up as a process of its own, except the IN_A_PROCESS rows, real `python -m vit_feature_viz` processes), "library"
(`call(ctx)` raises VizError), "app" (the app's API through gradio_client: `args` are the endpoint and its
inputs; one-line error, no session gallery made) and "space" (the same, with the app on a Space). To add a surface, add its rows and one runner below.
Placeholders in CLI arguments ({vit}, {out}, {images}, ...) are the `ctx` fixture's attributes.
"""

from __future__ import annotations

import io
import logging
import os
import pty
import shutil
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

import tiny_checkpoints as tiny
from hub_fixtures import point_clients_at
from hub_server import LoopbackHub
from vit_feature_viz import VizError, jobs, load_model, render
from vit_feature_viz.analysis import clip_names, foreground_background
from vit_feature_viz.core.accentuate import accentuate
from vit_feature_viz.examples import UnreadableImages, scan_examples
from vit_feature_viz.store.folder import GalleryFolder
from vit_feature_viz.store.hub import pull_gallery, push_gallery
from vit_feature_viz.store.pages import open_gallery

from gallery_fixtures import MODEL, one_colour_png, write_synthetic_gallery
from helpers import CLI, snapshot


@dataclass(frozen=True)
class Case:
    surface: str  # "cli", "library" or "app"
    what: str
    message: str  # must appear in the one-line error
    args: tuple = ()  # cli: the command line, with {placeholders}
    call: Callable | None = field(default=None, compare=False)  # library: call(ctx) must raise VizError
    hub: bool = False  # run against ctx.hub, the loopback Hub holding the broken repos (private, alice's)


def _render(*args):
    return ("render", "{vit}", "--layer", "0", "--features", "0", "--steps", "1", *args)


OUT = ("--out", "{out}")


def _analyze(experiment, dataset, *args):
    return ("analyze", experiment, "{vit}", "--dataset", dataset, "--device", "cpu", "--quiet", *args, *OUT)


def _app_render(layer=0, features="0", steps=1, image_size=0, seed=0, model="{vit}"):
    return ("/render", model, layer, features, "feature", "paper", steps, image_size, seed)


def _app_examples(dataset):
    return ("/examples", "{vit}", 0, 0, dataset, "train", 4, 2)


def _app_analyze(dataset):
    return ("/analyze", "{vit}", "CLS isolation", dataset, "test", 4, 0, 0)


CASES = [
    # the app's API (gradio_client against the served app): the same mistakes, in the app's words
    Case("app", "timm CNN", "has no transformer blocks: pick a ViT or CLIP checkpoint", ("/layers", "{timm_resnet}")),
    Case("app", "transformers ConvNeXt", "has no transformer blocks", ("/layers", "{convnext}")),
    Case("app", "remote code", "this app never runs code from a model repo", ("/layers", "{remote_code}")),
    # what a message quotes stays text: gradio's toast shows it as HTML (issue 16, item 3; tests/test_markup.py)
    Case("app", "model id holding HTML", "'x &#60;img src=\"http://127.0.0.1:9/leak.png\"&#62;' is neither",
         ("/layers", 'x <img src="http://127.0.0.1:9/leak.png">')),
    Case("app", "gallery path holding HTML", "Gallery folder /nowhere/&#60;img src=x&#62; does not exist",
         ("/open_gallery", "/nowhere/<img src=x>")),
    Case("app", "malformed config.json", "has a malformed config.json", ("/layers", "{bad_config}")),
    Case("app", "ConvNeXt render", "has no transformer blocks", _app_render(model="{convnext}")),
    Case("app", "fractional layer", "Layer must be a whole number", _app_render(layer=1.5)),
    Case("app", "fractional feature", "Cannot read feature spec '2.5'", _app_render(features="2.5")),
    Case("app", "huge feature range", "Feature 128 is out of range", _app_render(features="0-99999999999")),
    Case("app", "fractional steps", "Steps must be a whole number", _app_render(steps=2.5)),
    Case("app", "negative image size", "Image size must be at least 0", _app_render(image_size=-32)),
    Case("app", "huge seed", "Seed must be at least 0 and at most 9223372036854775807", _app_render(seed=10**20)),
    Case("app", "server file as image", "The image was not uploaded to this app",
         ("/patch_map", "{vit}", 0, 0, {"path": "{a_file}"})),
    Case("app", "server file as CLS attention image", "The image was not uploaded to this app",
         ("/cls_attention", "{vit}", 0, {"path": "{a_file}"})),
    # galleries a visitor names in the Explore galleries tab: bounded cost, one line
    Case("app", "9400x9400 PNG in a gallery", "holds a 9400x9400 image, larger than 4 megapixels, more than this "
         "browser decodes", ("/show_layer", "{bomb_gallery}", MODEL, 0, "feature", 1)),
    Case("app", "decompression bomb in a gallery", "holds an image larger than 4 megapixels",
         ("/feature_page", "{pil_bomb_gallery}", MODEL, 0, "feature", 0)),
    Case("app", "grid page nan", "The grid page must be a number from 1 to 1, got 'nan'.",
         ("/show_layer", "{small_gallery}", MODEL, 0, "feature", "nan")),
    Case("app", "grid page inf", "The grid page must be a number from 1 to 1, got 'inf'.",
         ("/show_layer", "{small_gallery}", MODEL, 0, "feature", "inf")),
    Case("app", "gallery over the row cap", "declares 1,001 rows, more than the 1,000 that can be opened at once",
         ("/open_gallery", "{crowded_gallery}")),
    Case("app", "compare with feature 20,000,000", "20000000 features asked for, more than the 24 allowed per "
         "request", ("/compare", "{small_gallery}", MODEL, 0, "feature", "{far_gallery}", "0-19999999")),
    # on a Space a dataset name is a Hub dataset id, nothing that reads the server's files
    Case("space", "imagefolder as dataset", "'imagefolder' is a builder of the datasets library, which reads this "
         "server's files: on this Space enter a Hub dataset id", _app_examples("imagefolder")),
    Case("space", "csv as dataset", "'csv' is a builder of the datasets library", _app_analyze("csv")),
    Case("space", "parquet as dataset", "'parquet' is a builder of the datasets library", _app_examples("parquet")),
    Case("space", "data_files escape", "'../../etc' is a local path: on this Space enter a Hub dataset id",
         _app_examples("../../etc")),
    Case("space", "server folder as dataset", "is a local path: on this Space enter a Hub dataset id",
         _app_analyze("{images}")),
    Case("space", "builder with a config", "'csv:train' is not a Hub dataset id: on this Space enter namespace/name",
         _app_examples("csv:train")),
    # models that are not ViTs, or cannot be read
    Case("cli", "timm CNN", "has no transformer blocks: pick a ViT or CLIP checkpoint", ("layers", "{timm_resnet}")),
    Case("cli", "transformers ConvNeXt", "has no transformer blocks with an MLP: pick a ViT or CLIP checkpoint",
         ("layers", "{convnext}")),
    Case("cli", "ConvNeXt render", "has no transformer blocks", ("render", "{convnext}", "--layer", "0", "--features", "0", *OUT)),
    Case("cli", "remote code", "needs its own code to load: pass --trust-remote-code", ("layers", "{remote_code}")),
    Case("cli", "malformed config.json", "has a malformed config.json", ("layers", "{bad_config}")),
    Case("library", "timm CNN", "has no transformer blocks", call=lambda c: load_model(c.timm_resnet, device="cpu")),
    Case("library", "transformers ConvNeXt", "has no transformer blocks", call=lambda c: load_model(c.convnext, device="cpu")),
    Case("library", "remote code", "--trust-remote-code", call=lambda c: load_model(c.remote_code, device="cpu")),
    Case("library", "malformed config.json", "has a malformed config.json", call=lambda c: load_model(c.bad_config)),
    # settings
    Case("cli", "negative image size", "Image size must be at least 1, got -32", _render("--image-size", "-32", *OUT)),
    Case("cli", "huge seed", "Seed must be at least 0 and at most 9223372036854775807", _render("--seed", "9" * 20, *OUT)),
    Case("cli", "fractional feature", "Cannot read feature spec '2.5'", ("render", "{vit}", "--layer", "0", "--features", "2.5", *OUT)),
    Case("cli", "fractional steps", "invalid int value: '2.5'", _render("--steps", "2.5", *OUT)),
    # objectives beyond one channel (issue 20): directions, negatives, diverse sets
    Case("cli", "direction: not a vector file", "is not a vector file: give --direction a .npy or .safetensors file",
         _render("--direction", "{a_file}", *OUT)),
    Case("cli", "direction: missing file", "No vector file at", _render("--direction", "{root}/nope.npy", *OUT)),
    Case("cli", "direction: channel out of range", "Channel 99999 is out of range: this site has 128 channels",
         _render("--direction", "difference:0,99999", *OUT)),
    Case("cli", "cosine without a direction", "Cosine needs a direction: give --direction", _render("--cosine", *OUT)),
    # sparse autoencoders (issue 21)
    Case("cli", "sae objective without --sae", "The sae objectives read a sparse autoencoder's latents: pass --sae",
         _render("--objective", "sae", *OUT)),
    Case("cli", "--sae gallery without an SAE", "holds no sparse autoencoder of layer 0 (it holds: none)",
         _render("--objective", "sae", "--sae", "{small_gallery}", *OUT)),
    Case("cli", "--sae with a channel objective", "--sae goes with the objectives sae, sae-neuron, sae-cls, not "
         "'feature'", _render("--sae", "{small_gallery}", *OUT)),
    Case("cli", "sae train: layer out of range", "Layer 9 is out of range",
         ("sae", "train", "{vit}", "--layer", "9", "--dataset", "{images}", "--quiet", *OUT)),
    Case("cli", "sae train: K of 0", "k must be at least 1, not 0: use --k a positive number",
         ("sae", "train", "{vit}", "--layer", "0", "--k", "0", "--dataset", "{images}", "--quiet", *OUT)),
    Case("cli", "sae train: fewer latents than K", "An SAE with 4 latents cannot keep K=16 of them active",
         ("sae", "train", "{vit}", "--layer", "0", "--latents", "4", "--dataset", "{images}", "--quiet", *OUT)),
    Case("cli", "diversity 0", "Diversity must be at least 1", _render("--diversity", "0", *OUT)),
    Case("cli", "diverse logits", "reads no token activations to tell the images apart: use --diversity 1",
         _render("--objective", "logit", "--diversity", "2", *OUT)),
    Case("app", "direction: same feature twice", "'difference:5,5' needs two different channels",
         ("/render", "{vit}", 0, "0", "feature", "paper", 1, 0, 0, None, "5-5", False, False, 1)),
    Case("app", "negative diversity", "Diversity must be at least 1",
         ("/render", "{vit}", 0, "0", "feature", "paper", 1, 0, 0, None, "", False, True, -1)),
    Case("cli", "accentuate: no image", "No image to accentuate: give --accentuate an image file",
         _render("--accentuate", "", *OUT)),
    Case("cli", "accentuate: unreadable image", "Cannot read 'a-file.txt' as an image",
         _render("--accentuate", "{a_file}", *OUT)),
    Case("cli", "accentuate: layer out of range", "Layer 99 is out of range",
         ("render", "{vit}", "--layer", "99", "--features", "0", "--accentuate", "{images}/train/0.png", *OUT)),
    Case("cli", "accentuate: negative weight", "Accentuation weight -1.0 is not a number from 0",
         _render("--accentuate", "{images}/train/0.png", "--accentuate-weight", "-1", *OUT)),
    Case("library", "accentuate: no image", "No image to accentuate",
         call=lambda c: accentuate(c.model, None, 0, 0)),
    Case("library", "accentuate: unreadable image", "Cannot read 'a-file.txt' as an image",
         call=lambda c: accentuate(c.model, c.a_file, 0, 0)),
    Case("library", "accentuate: layer out of range", "Layer 99 is out of range",
         call=lambda c: accentuate(c.model, f"{c.images}/train/0.png", 99, 0)),
    Case("app", "accentuate: no image", "No image given", ("/accentuate", "{vit}", 0, 0, None, 1, 1.0)),
    Case("app", "accentuate: server file", "The image was not uploaded to this app",
         ("/accentuate", "{vit}", 0, 0, {"path": "{a_file}"}, 1, 1.0)),
    # CLIP text prompts (issue 20): a model without a text tower, no text
    Case("cli", "prompt on a ViT", "has no text tower: text prompts need a full CLIP checkpoint",
         _render("--prompt", "a red disc", *OUT)),
    Case("cli", "empty prompt", "The prompt is empty: give --prompt a text", _render("--prompt", " ", *OUT)),
    Case("app", "empty prompt", "The prompt is empty: give Prompt a text",
         ("/render", "{vit}", 0, "0", "prompt", "paper", 1, 0, 0, None, "", False, False, 1, "\n", "")),
    Case("cli", "huge feature range", "Feature 128 is out of range", ("render", "{vit}", "--layer", "0", "--features", "0-99999999999", *OUT)),
    Case("cli", "scan batch size", "use e.g. --scan-batch-size 32",
         ("examples", "{vit}", "--layer", "0", "--features", "0", "--dataset", "{images}", "--scan-batch-size", "0", *OUT)),
    Case("library", "negative image size", "Image size must be at least 1", call=lambda c: render(c.model, 0, 0, image_size=-32)),
    Case("library", "fractional steps", "Steps must be a whole number, got 2.5", call=lambda c: render(c.model, 0, 0, steps=2.5)),
    Case("library", "fractional layer", "Layer must be a whole number", call=lambda c: render(c.model, 1.5, 0, steps=1)),
    Case("library", "fractional feature", "Feature 2.5 is not a whole number", call=lambda c: render(c.model, 0, 2.5, steps=1)),
    Case("library", "huge seed", "Seed must be at least 0", call=lambda c: render(c.model, 0, 0, steps=1, seed=2**64)),
    Case("library", "scan batch size", "--scan-batch-size 32",
         call=lambda c: scan_examples(c.model, 0, 0, c.images, batch_size=0, progress=False)),
    # destinations, found before any work
    Case("cli", "--out is a file", "is a file, not a folder", _render("--out", "{a_file}")),
    Case("cli", "open a folder that is no gallery", "is not a gallery folder (no data/*.parquet shards)",
         ("open", "{images}")),  # before the app is started: no server is left running
    Case("cli", "--out is not ours", "is not a gallery folder and not empty (has notes.txt)", _render("--out", "{foreign}")),
    Case("cli", "--out read-only", "Cannot write to /sys/vfv-out", _render("--out", "/sys/vfv-out")),
    Case("cli", "examples --out is a file", "is a file, not a folder",
         ("examples", "{vit}", "--layer", "0", "--features", "0", "--dataset", "{images}", "--out", "{a_file}")),
    # analyze checks --out before loading anything (its dataset here has no labels: that error would come later)
    Case("cli", "analyze --out is a file", "is a file, not a folder",
         ("analyze", "cls-isolation", "{vit}", "--dataset", "{images}", "--out", "{a_file}")),
    Case("cli", "analyze --out is not ours", "is not a gallery folder and not empty (has notes.txt)",
         ("analyze", "cls-isolation", "{vit}", "--dataset", "{images}", "--out", "{foreign}")),
    Case("cli", "corrupt gallery shard", "train-broken.parquet is not a readable parquet file", _render("--out", "{broken}")),
    Case("library", "--out is a file", "is a file, not a folder",
         call=lambda c: jobs.render_to_folder(c.model, c.a_file, 0, 0, steps=1, progress=False)),
    Case("library", "corrupt gallery shard", "train-broken.parquet is not a readable parquet file",
         call=lambda c: jobs.render_to_folder(c.model, c.broken, 0, 0, steps=1, progress=False)),
    Case("library", "examples --out is a file", "is a file, not a folder",
         call=lambda c: jobs.examples_to_folder(c.model, c.a_file, 0, 0, c.images, progress=False)),
    # weight files that do not fit their config: one line naming the file and the architecture, not every key
    Case("cli", "open_clip weights of another model",
         "model.safetensors does not match the architecture in open_clip_config.json (CLIP: ",
         ("layers", "{open_clip_wrong_weights}")),
    Case("cli", "timm weights of another model",
         "model.safetensors does not match the architecture in config.json (vit_tiny_patch16_224, ",
         ("layers", "{timm_wrong_weights}")),
    Case("cli", "transformers weights of another model", "of the model's 72 weights are missing from the file",
         ("layers", "{vit_wrong_weights}")),
    Case("library", "open_clip weights of another model", "does not match the architecture in open_clip_config.json",
         call=lambda c: load_model(c.open_clip_wrong_weights, device="cpu")),
    Case("library", "timm weights of another model", "does not match the architecture in config.json",
         call=lambda c: load_model(c.timm_wrong_weights, device="cpu")),
    Case("library", "transformers weights of another model", "does not match the architecture in config.json (ViTModel",
         call=lambda c: load_model(c.vit_wrong_weights, device="cpu")),
    Case("library", "transformers weights of other shapes", "in the file but (1, 1, 64) in the model",
         call=lambda c: load_model(c.vit_wrong_shapes, device="cpu")),
    Case("app", "open_clip weights of another model", "does not match the architecture in open_clip_config.json",
         ("/layers", "{open_clip_wrong_weights}")),
    Case("app", "transformers weights of other shapes", "does not match the architecture in config.json",
         ("/layers", "{vit_wrong_shapes}")),
    # galleries with a broken shard, or a link to a file elsewhere: refused before anything is read out or sent
    Case("cli", "push a gallery with a corrupt shard", "train-broken.parquet is not a readable parquet file",
         ("push", "{broken_card}", "alice/gallery")),
    Case("cli", "push a gallery holding a symbolic link", "analysis/token_pooling/run.csv is a symbolic link",
         ("push", "{linked}", "alice/gallery")),
    Case("library", "push a gallery with a corrupt shard", "train-broken.parquet is not a readable parquet file",
         call=lambda c: push_gallery(c.broken_card, "alice/gallery")),
    Case("library", "push a gallery holding a symbolic link", "analysis/token_pooling/run.csv is a symbolic link",
         call=lambda c: push_gallery(c.linked, "alice/gallery")),
    Case("library", "open a gallery with a corrupt shard", "train-broken.parquet, which is not a readable parquet file",
         call=lambda c: open_gallery(c.broken)),
    Case("app", "open a gallery with a corrupt shard", "train-broken.parquet, which is not a readable parquet file",
         ("/open_gallery", "{broken}")),
    Case("library", "a page whose image column is corrupt", "which is not a readable parquet file (Couldn't deserialize",
         call=lambda c: open_gallery(c.corrupt_page).feature_page("m", 0, 0)),
    Case("app", "a page whose image column is corrupt", "which is not a readable parquet file (Couldn't deserialize",
         ("/feature_page", "{corrupt_page}", "m", 0, "feature", 0)),
    # Hub repos that hold what a pull must not write (the loopback Hub in ctx.hub)
    Case("cli", "pull a '..' file name", "holds a file with an unsafe name ('data/../../x.parquet')",
         ("pull", "alice/dot-dot-name", "{out}"), hub=True),
    Case("cli", "pull a corrupt shard", "holds data/train-broken.parquet, which is not a readable parquet file",
         ("pull", "alice/broken-shard", "{out}"), hub=True),
    Case("library", "pull a '..' file name", "holds a file with an unsafe name ('data/../../x.parquet')",
         call=lambda c: pull_gallery("alice/dot-dot-name", c.root / "pulled", token=c.hub.read_token), hub=True),
    Case("library", "pull an absolute file name", "holds a file with an unsafe name ('/x.parquet')",
         call=lambda c: pull_gallery("alice/absolute-name", c.root / "pulled", token=c.hub.read_token), hub=True),
    Case("library", "pull a backslash file name", "holds a file with an unsafe name ('data\\\\..",
         call=lambda c: pull_gallery("alice/backslash-name", c.root / "pulled", token=c.hub.read_token), hub=True),
    Case("library", "pull a corrupt shard", "holds data/train-broken.parquet, which is not a readable parquet file",
         call=lambda c: pull_gallery("alice/broken-shard", c.root / "pulled", token=c.hub.read_token), hub=True),
    Case("library", "open a Hub gallery with a corrupt shard",
         "alice/broken-shard holds data/train-broken.parquet, which is not a readable parquet file",
         call=lambda c: open_gallery("alice/broken-shard", token=c.hub.read_token), hub=True),
    # analyses: datasets and vocabularies that are not what the experiment reads
    Case("cli", "NaN box", "Row 2 of column 'bbox' holds [6.0, nan, 30.0, 28.0], not boxes of 4 finite numbers",
         _analyze("foreground-background", "{nan_boxes}")),
    Case("cli", "infinite box", "Row 2 of column 'bbox' holds [6.0, 4.0, inf, 28.0], not boxes of 4 finite numbers",
         _analyze("foreground-background", "{inf_boxes}")),
    Case("cli", "3-number box", "Row 2 of column 'bbox' holds [6.0, 4.0, 30.0], not boxes of 4 finite numbers",
         _analyze("foreground-background", "{short_boxes}")),
    Case("cli", "streamed NaN box", "A row of column 'bbox' holds [6.0, nan, 30.0, 28.0], not boxes",
         _analyze("foreground-background", "{nan_boxes}", "--streaming")),
    Case("cli", "CLS attention without boxes", "has no bounding-box or mask column", _analyze("cls-attention", "{images}")),
    Case("cli", "CLS attention of block 9", "Layer 9 is out of range: 'tiny-org/vit-classifier' has 4 blocks",
         _analyze("cls-attention", "{images}", "--layer", "9")),
    Case("cli", "CLS attention NaN box", "Row 2 of column 'bbox' holds [6.0, nan, 30.0, 28.0], not boxes",
         _analyze("cls-attention", "{nan_boxes}")),
    Case("cli", "cue conflict without labels", "has no shape label column (columns: image): pass --shape-column NAME",
         _analyze("cue-conflict", "{images}")),
    Case("cli", "cue conflict without a cue column", "has no cue column besides the shape column 'label' (columns: "
         "image, label, bbox): pass --cue-column NAME", _analyze("cue-conflict", "{nan_boxes}")),
    Case("cli", "cue conflict naming a missing column", "has no cue column 'hue' besides the shape column 'label'",
         _analyze("cue-conflict", "{nan_boxes}", "--cue-column", "hue")),
    Case("cli", "occlusion NaN box", "Row 2 of column 'bbox' holds [6.0, nan, 30.0, 28.0], not boxes",
         _analyze("occlusion", "{nan_boxes}")),
    Case("cli", "shuffle grid of 0", "Shuffle grids must be whole numbers of tiles per side from 1 to 32",
         _analyze("patch-shuffle", "{nan_boxes}", "--grids", "0,2")),
    Case("cli", "dropping 150% of patches", "Fractions of patches dropped must be numbers from 0 to 1",
         _analyze("occlusion", "{nan_boxes}", "--fractions", "0,1.5")),
    Case("cli", "Latin-1 vocabulary", "is not UTF-8 text (byte 0xe9 at position 3): save it with UTF-8 encoding",
         ("analyze", "clip-names", "{open_clip}", "--dataset", "{images}", "--split", "train", "--layer", "0",
          "--features", "0", "--vocabulary", "{latin1_vocabulary}", "--device", "cpu", "--quiet", *OUT)),
    Case("library", "NaN box", "Row 2 of column 'bbox' holds [6.0, nan, 30.0, 28.0], not boxes of 4 finite numbers",
         call=lambda c: foreground_background(c.model, c.nan_boxes, progress=False)),
    Case("library", "infinite box", "Row 2 of column 'bbox' holds [6.0, 4.0, inf, 28.0]",
         call=lambda c: foreground_background(c.model, c.inf_boxes, progress=False)),
    Case("library", "3-number box", "Row 2 of column 'bbox' holds [6.0, 4.0, 30.0]",
         call=lambda c: foreground_background(c.model, c.short_boxes, progress=False)),
    Case("library", "UTF-16 vocabulary", "is not UTF-8 text (byte 0xff at position 0): save it with UTF-8 encoding",
         call=lambda c: clip_names(c.open_clip, c.images, split="train", layer=0, features="0",
                                   vocabulary=c.utf16_vocabulary, device="cpu", progress=False)),
]


def _png(rng, size=(20, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((rng.random((*size, 3)) * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def ctx(tiny_repos, hub_cache_dir, tmp_path_factory, request):
    """The inputs the rows refer to: refused checkpoints in the test Hub cache, datasets, and destinations."""
    root = tmp_path_factory.mktemp("bad-input")
    repos = tiny.build_hub_cache(hub_cache_dir, tiny.REFUSED_REPOS)
    rng = np.random.default_rng(0)
    images = root / "images" / "train"
    images.mkdir(parents=True)
    for i in range(4):
        (images / f"{i}.png").write_bytes(_png(rng))
    broken_images = root / "broken-images" / "train"
    broken_images.mkdir(parents=True)
    for i in range(4):
        (broken_images / f"{i}.png").write_bytes(_png(rng))
    (broken_images / "9-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    png_bytes = root / "png-bytes"
    (png_bytes / "data").mkdir(parents=True)
    datasets.Dataset.from_dict({"image": [_png(rng) for _ in range(5)], "label": list(range(5))}).to_parquet(
        str(png_bytes / "data" / "train-00000-of-00001.parquet"))
    a_file = root / "a-file.txt"
    a_file.write_text("not a folder")
    foreign = root / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    broken = root / "broken-gallery"
    (broken / "data").mkdir(parents=True)
    (broken / "data" / "train-broken.parquet").write_bytes(b"PAR1 truncated")
    galleries = {  # the app's preset in these tests opens galleries of up to 1,000 rows (app_fixtures.CAPS)
        "bomb_gallery": dict(layers=1, features=4, image=one_colour_png((9400, 9400), mode="1")),
        "pil_bomb_gallery": dict(layers=1, features=1, image=one_colour_png((13400, 13400), mode="1")),  # PIL refuses it
        "small_gallery": dict(layers=1, features=4), "crowded_gallery": dict(layers=1, features=1001),
        "far_gallery": dict(layers=1, features=[0, 20_000_000]),
    }
    galleries = {name: str(write_synthetic_gallery(root / name, **shape)) for name, shape in galleries.items()}
    bad_boxes = {"nan_boxes": [6, float("nan"), 30, 28], "inf_boxes": [6, 4, float("inf"), 28], "short_boxes": [6, 4, 30]}
    boxes = {name: _dataset_with_box(root / name, rng, bad) for name, bad in bad_boxes.items()}
    latin1_vocabulary, utf16_vocabulary = root / "latin1.txt", root / "utf16.txt"
    latin1_vocabulary.write_bytes("caf\u00e9\nna\u00efve\n".encode("latin-1"))
    utf16_vocabulary.write_bytes("dog\ncat\n".encode("utf-16"))
    model = load_model(tiny_repos["vit"], device="cpu")
    return SimpleNamespace(root=root, vit=tiny_repos["vit"], model=model, images=str(images.parent),
                           broken_images=str(broken_images.parent), png_bytes=str(png_bytes), a_file=str(a_file),
                           foreign=str(foreign), broken=str(broken), open_clip=tiny_repos["open_clip"],
                           latin1_vocabulary=str(latin1_vocabulary), utf16_vocabulary=str(utf16_vocabulary),
                           **boxes, **galleries, **repos,
                           **_push_pull_inputs(root, tmp_path_factory.mktemp("bad-input-hf"), request))


def _push_pull_inputs(root: Path, hf_home: Path, request) -> dict:
    """Galleries a push must refuse (a corrupt shard, a link to a file outside), and a loopback Hub whose private
    repos hold what a pull must refuse (unsafe file names, a corrupt shard). Rows with `hub=True` use its clients'
    settings, with caches in `hf_home` (outside `root`, whose snapshot must not change)."""
    rng = np.random.default_rng(1)
    good = root / "good-gallery"
    GalleryFolder(good).add([{"image": Image.open(io.BytesIO(_png(rng))), "model_id": "m", "layer": 0, "feature": 0,
                              "objective": "feature", "activation": 1.0}])
    broken_card = root / "broken-card-gallery"
    shutil.copytree(good, broken_card)
    (broken_card / "data" / "train-broken.parquet").write_bytes(b"PAR1 truncated")
    linked = root / "linked-gallery"
    shutil.copytree(good, linked)
    (root / "server-secret.csv").write_text("hf_secret_of_the_server\n")
    (linked / "analysis" / "token_pooling").mkdir(parents=True)
    (linked / "analysis" / "token_pooling" / "run.csv").symlink_to(root / "server-secret.csv")
    corrupt_page = root / "corrupt-page-gallery"  # a good footer and key columns, a broken image column page
    shutil.copytree(good, corrupt_page)
    shard = next((corrupt_page / "data").glob("*.parquet"))
    chunk = pq.ParquetFile(shard).metadata.row_group(0).column(0)  # the image column: opening never reads it
    with open(shard, "r+b") as f:
        f.seek(chunk.dictionary_page_offset or chunk.data_page_offset)
        f.write(b"\xff" * 16)
    hub = LoopbackHub().start()
    request.addfinalizer(hub.stop)
    files = {"README.md": (good / "README.md").read_bytes(),
             **{f"data/{p.name}": p.read_bytes() for p in (good / "data").glob("*.parquet")}}
    for repo, extra in {"dot-dot-name": "data/../../x.parquet", "absolute-name": "/x.parquet",
                        "backslash-name": "data\\..\\..\\x.parquet", "broken-shard": "data/train-broken.parquet"}.items():
        hub.plant(f"alice/{repo}", {**files, extra: b"PAR1 truncated"}, private=True)
    return {"good": str(good), "broken_card": str(broken_card), "linked": str(linked), "corrupt_page": str(corrupt_page),
            "hub": hub, "hf_home": hf_home}


def hub_env(ctx) -> dict[str, str]:
    """The environment of a CLI process that talks to the loopback Hub with alice's read token."""
    return dict(os.environ, HF_ENDPOINT=ctx.hub.url, HF_HUB_OFFLINE="0", HF_HUB_DISABLE_XET="1",
                HF_TOKEN=ctx.hub.read_token, HF_HOME=str(ctx.hf_home), HF_HUB_CACHE=str(ctx.hf_home / "hub"))


CLASSES = [f"class_{i}" for i in range(tiny.NUM_LABELS)]  # the tiny ViT classifier's


def _dataset_with_box(folder: Path, rng, bad_box: list) -> str:
    """A labelled `save_to_disk` dataset (the tiny ViT's classes) whose row 2 holds `bad_box` (float boxes)."""
    boxes = [[6, 4, 30, 28]] * 4
    boxes[2] = bad_box
    images = [Image.open(io.BytesIO(_png(rng, (40, 48)))) for _ in boxes]
    datasets.Dataset.from_dict(
        {"image": images, "label": list(range(len(boxes))), "bbox": boxes},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES),
                                    "bbox": datasets.List(datasets.Value("float64"))}),
    ).save_to_disk(str(folder))
    return str(folder)


CLI_ROWS = [case for case in CASES if case.surface == "cli"]
# The rows run as real processes: the rest call the CLI's main() in this process (each process pays ~3 s of
# importing torch). On a terminal: no traceback reaches one. fractional steps: argparse's exit ends a real process
# with code 2. transformers weights: the load's logging goes to a real stderr. pull: the Hub settings read at import.
IN_A_PROCESS = {"timm CNN": "terminal", "fractional steps": "pipe", "transformers weights of another model": "pipe",
                "pull a corrupt shard": "pipe"}
CLI_ENV = dict(os.environ)  # what every CLI process of this file inherits (conftest.py's hermetic Hub settings)


def _out(ctx, case: Case) -> Path:
    return ctx.root / f"out-{CLI_ROWS.index(case)}"


def _argv(ctx, case: Case) -> list[str]:
    return [a.format(out=_out(ctx, case), **vars(ctx)) for a in case.args]


def _start(argv: list[str], env: dict, on_a_terminal: bool) -> tuple[subprocess.Popen, int | None]:
    """A CLI process whose stderr is a pipe, or a pseudo-terminal (then also the terminal's reading end)."""
    if not on_a_terminal:
        return subprocess.Popen([*CLI, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env), None
    terminal, tty = pty.openpty()
    run = subprocess.Popen([*CLI, *argv], stdout=subprocess.PIPE, stderr=tty, text=True, env=env)
    os.close(tty)  # the child holds it now: its exit ends the terminal's output
    return run, terminal


def _read_terminal(terminal: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(terminal, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(terminal)
    return b"".join(chunks).decode(errors="replace")


def _finished(run: subprocess.Popen, terminal: int | None) -> tuple[int, str]:
    stderr = run.communicate(timeout=1800)[1]  # all rows start at once: on a busy machine that takes a while
    return run.returncode, _read_terminal(terminal) if terminal is not None else stderr


@pytest.fixture(scope="module")
def cli_processes(ctx):
    """The IN_A_PROCESS rows, each a real process, all started at once (each pays for importing torch)."""
    rows = [case for case in CLI_ROWS if case.what in IN_A_PROCESS]
    before = snapshot(ctx.root)
    runs = {case: _start(_argv(ctx, case), hub_env(ctx) if case.hub else CLI_ENV, IN_A_PROCESS[case.what] == "terminal")
            for case in rows}
    results = {case: (_out(ctx, case), *_finished(*run)) for case, run in runs.items()}
    return results, before, snapshot(ctx.root)


@pytest.fixture
def cli_results(ctx, case, request, monkeypatch, capfd):
    """The row's (out, exit code, stderr) with ctx.root's snapshots around it: from its process for the
    IN_A_PROCESS rows, else from the CLI's main() run here, set up as that process would be."""
    if case.what in IN_A_PROCESS:
        return request.getfixturevalue("cli_processes")
    before = snapshot(ctx.root)
    env = hub_env(ctx) if case.hub else CLI_ENV
    if case.hub:
        point_clients_at(monkeypatch, ctx.hub.url, ctx.hf_home)  # the settings huggingface_hub read at import
    run = _run_here(_argv(ctx, case), env, monkeypatch, capfd)
    return {case: (_out(ctx, case), run.returncode, run.stderr)}, before, snapshot(ctx.root)


CWD = Path.cwd()  # the working folder the CLI processes inherit


def _use_environment(monkeypatch, env: dict) -> None:
    """os.environ exactly `env`, as a process started with it has (monkeypatch restores it after the row)."""
    for name in set(os.environ) - set(env):
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def _run_here(argv: list[str], env: dict, monkeypatch, capfd) -> subprocess.CompletedProcess[str]:
    """`python -m vit_feature_viz argv` without a new process (no torch import to pay), in the environment and
    working folder such a process would get (monkeypatch restores both after the test)."""
    _use_environment(monkeypatch, env)
    monkeypatch.chdir(CWD)
    return subprocess.CompletedProcess([*CLI, *argv], *_run_main(argv, capfd))


def _run_main(argv: list[str], capfd) -> tuple[int, str, str]:
    """The CLI's main(argv) here: its exit code and everything it wrote to stdout and stderr."""
    from vit_feature_viz.cli import main

    capfd.readouterr()  # what came before is not this row's
    with pytest.MonkeyPatch.context() as logs, warnings.catch_warnings():  # undone in this phase of pytest's
        _log_to_stderr_as_a_process_does(logs)
        _warn_to_stderr_as_a_process_does()
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's usage errors
            code = exit_.code
        except Exception:  # what the interpreter would print, and its exit code
            traceback.print_exc()
            code = 1
    written = capfd.readouterr()
    return code, written.out, written.err


def _warn_to_stderr_as_a_process_does() -> None:
    """A fresh interpreter's filters, and warnings printed on stderr (pytest otherwise records them out of sight).
    Called inside warnings.catch_warnings(), which undoes both."""
    warnings.resetwarnings()
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.simplefilter("ignore", category)

    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    warnings.showwarning = show


def _log_to_stderr_as_a_process_does(monkeypatch) -> None:
    """Log records on this stderr, as in a process of its own: without pytest's capture handlers on the root logger
    (so logging's last-resort handler prints warnings), and with library handlers made before this row (bound to
    the sys.stderr of their time) writing to the current one."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    for logger in [root, *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            if type(handler) is logging.StreamHandler and handler.stream not in (sys.stdout, sys.__stdout__):
                monkeypatch.setattr(handler, "stream", sys.stderr)


@pytest.mark.parametrize("case", [c for c in CASES if c.surface == "cli"], ids=lambda c: c.what)
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(cli_results, case):
    results, before, after = cli_results
    out, code, stderr = results[case]
    lines = [line for line in stderr.splitlines() if line.strip() and "it/s]" not in line]  # progress bars are not errors
    assert code == 2 and "Traceback" not in stderr, stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error:") and case.message in lines[0], stderr[-3000:]
    assert not out.exists()
    assert after == before  # no destination, dataset or checkpoint folder was touched


@pytest.mark.parametrize("case", [c for c in CASES if c.surface == "library"], ids=lambda c: c.what)
def test_library_bad_input_raises_one_line_viz_error_and_writes_nothing(ctx, case, monkeypatch):
    if case.hub:
        point_clients_at(monkeypatch, ctx.hub.url, ctx.hf_home)
    before = snapshot(ctx.root)
    with pytest.raises(VizError) as err:
        case.call(ctx)
    assert case.message in str(err.value) and "\n" not in str(err.value)
    assert snapshot(ctx.root) == before


@pytest.mark.parametrize("case", [c for c in CASES if c.surface == "app"], ids=lambda c: c.what)
def test_app_bad_input_is_one_line_and_writes_nothing(ctx, client, case):
    from gradio_client.exceptions import AppError

    from vit_feature_viz.app import common

    def fill(value):
        if isinstance(value, dict):
            return {key: fill(item) for key, item in value.items()}
        return value.format(**vars(ctx)) if isinstance(value, str) else value

    sessions = set(common.SESSION_ROOT.glob("*")) if common.SESSION_ROOT.exists() else set()
    before = snapshot(ctx.root)
    endpoint, *inputs = case.args
    with pytest.raises(AppError) as err:
        client.predict(*[fill(value) for value in inputs], api_name=endpoint)
    message = str(err.value)
    assert case.message in message and "\n" not in message and "Traceback" not in message, message
    assert snapshot(ctx.root) == before
    assert (set(common.SESSION_ROOT.glob("*")) if common.SESSION_ROOT.exists() else set()) == sessions


@pytest.mark.parametrize("case", [c for c in CASES if c.surface == "space"], ids=lambda c: c.what)
def test_app_on_a_space_bad_input_is_one_line_and_writes_nothing(ctx, client, case, monkeypatch, tmp_path):
    from vit_feature_viz.app import common

    monkeypatch.setenv("SYSTEM", "spaces")  # the served app runs in this process and asks on every request
    monkeypatch.setenv("SPACE_ID", "owner/space")
    monkeypatch.setattr(common, "SESSION_ROOT", tmp_path / "sessions")  # this test's own: no other run adds any
    test_app_bad_input_is_one_line_and_writes_nothing(ctx, client, case)


# --- inputs that are not errors, though they used to be ------------------------------------------------------
def test_a_corrupt_image_in_a_dataset_is_skipped_with_a_count(ctx, tmp_path, monkeypatch, capfd):
    with pytest.warns(UnreadableImages, match="Skipped 1 unreadable image"):
        found = scan_examples(ctx.model, 0, [0, 1], ctx.broken_images, top_k=4, progress=False)
    assert all(len(examples) == 4 for examples in found.values())
    assert 4 not in {e.index for examples in found.values() for e in examples}  # row 4 is the broken file

    result = _run_here(["examples", ctx.vit, "--layer", "0", "--features", "0", "--dataset", ctx.broken_images,
                        "--top-k", "2", "--out", str(tmp_path / "out"), "--quiet"], CLI_ENV, monkeypatch, capfd)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "warning: Skipped 1 unreadable image(s) in column 'image'." in result.stderr.splitlines()


def test_a_column_of_png_bytes_decodes_as_images(ctx):
    assert pq.read_schema(Path(ctx.png_bytes) / "data" / "train-00000-of-00001.parquet").field("image").type == "binary"
    found = scan_examples(ctx.model, 0, [0], ctx.png_bytes, top_k=3, progress=False)
    assert [e.image.size for e in found[0]] == [(32, 32)] * 3


def test_a_concept_longer_than_the_clip_text_context_is_cut_to_it(ctx, short_context_clips, tmp_path, monkeypatch,
                                                                   capfd):
    """A CLIP whose text tower reads 8 tokens, with a tokenizer that states no limit: the 12-word concept is cut to
    the tower's context, as CLIP tokenizers do, instead of failing in the position embeddings."""
    vocabulary = tmp_path / "concepts.txt"
    vocabulary.write_text(" ".join(tiny.SHORT_CONTEXT_WORDS) + "\ndog\n")
    out = tmp_path / "out"
    result = _run_here(["analyze", "clip-names", short_context_clips["clip_short"], "--dataset", ctx.images,
                        "--split", "train", "--layer", "0", "--features", "0", "--vocabulary", str(vocabulary),
                        "--top-images", "2", "--top-names", "2", "--device", "cpu", "--quiet", "--out", str(out)],
                       CLI_ENV, monkeypatch, capfd)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    table = Path(result.stdout.split()[0]).read_text()
    assert " ".join(tiny.SHORT_CONTEXT_WORDS) in table and ",dog," in table
