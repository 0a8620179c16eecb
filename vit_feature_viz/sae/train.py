"""Train a sparse autoencoder on one layer of a model: stream a dataset through the model (stopped at the layer),
sample patch tokens into a bounded buffer (buffer.py), train on it (model.py), measure (metrics.py) and save the
SAE into a gallery (`sae/<layer>-<site>/`).

Resumable: the trainer (weights and optimizer), the buffer and the rows done are saved under the gallery's
`.progress/` (store/progress.py: atomic, so a kill -9 at any moment keeps the last checkpoint), at most every
`checkpoint_seconds` and at the end of each epoch; the same command resumes from there.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from ..errors import VizError
from ..image_datasets import as_pil, open_image_dataset, shard_batches, split_of, streams
from ..models.base import VisionModel
from ..store.folder import GalleryFolder
from ..store.progress import Resumed, SavedProgress, clear_progress, progress_folder
from .buffer import ActivationBuffer
from .metrics import measure_sae, site_target
from .model import SaeTrainer, SparseAutoencoder
from .saved import SavedSae, check_site, save_sae

LABEL_COLUMN = "label"


@dataclass(frozen=True)
class SaeSettings:
    """What a training run is: a resumed run must have exactly these."""

    layer: int
    site: str = "fc1"
    latents: int = 0  # 0: 4x the layer's width
    k: int = 16
    max_images: int | None = None
    epochs: int = 1
    image_batch: int = 32
    patches_per_image: int = 16
    buffer_tokens: int = 16384
    token_batch: int = 256
    lr: float = 1e-3
    dead_after: int = 50_000
    seed: int = 0

    def check(self, model: VisionModel) -> None:
        check_site(self.site)
        model.check_layer(self.layer)
        for name in ("k", "epochs", "image_batch", "patches_per_image", "token_batch"):
            if getattr(self, name) < 1:
                raise VizError(f"{name.replace('_', ' ')} must be at least 1, not {getattr(self, name)}",
                               option=name, value=getattr(self, name), fix="{option:use} a positive number.")
        if self.latents and self.latents < self.k:
            raise VizError(f"An SAE with {self.latents} latents cannot keep K={self.k} of them active", option="latents",
                           value=self.latents, fix=f"{{option:use}} at least {self.k} (e.g. 4x the layer's width).")
        if self.buffer_tokens < 2 * self.token_batch:
            raise VizError(f"A buffer of {self.buffer_tokens} tokens is too small for batches of {self.token_batch}",
                           option="buffer_tokens", value=self.buffer_tokens, fix=f"{{option:use}} at least {2 * self.token_batch}.")
        if self.max_images is not None and self.max_images < 1:
            raise VizError(f"max_images must be at least 1, not {self.max_images}", option="max_images",
                           value=self.max_images, fix="{option:use} e.g. 1000, or leave it unset for the whole split.")


def train_sae(model: VisionModel, dataset: str, out: str | os.PathLike, settings: SaeSettings, *,
              split: str | None = None, image_column: str | None = None, eval_images: int = 256,
              eval_split: str | None = None,
              checkpoint_seconds: float = 60.0, progress: bool = True, token=None, revision: str | None = None,
              report: Callable[[str], None] | None = None,
              on_batch: Callable[[int, int | None], None] | None = None) -> SavedSae:
    """Train, measure and save the SAE of `settings.layer` into the gallery folder `out`; returns it as saved.
    `report` receives a line now and then (rows, loss, FVE, L0, dead latents): the CLI prints them. The
    measurements use the first `eval_images` rows of `eval_split` (default: the split trained on).
    `on_batch(passes done, total passes or None when a stream's length is unknown)` after each image batch (the
    app's progress); whatever it raises stops the run with its checkpoint saved there, so it resumes from it."""
    settings.check(model)
    GalleryFolder(out).check_destination()
    target = site_target(settings.layer, settings.site)
    width = model.width(target)
    latents = settings.latents or 4 * width
    opened, column = open_image_dataset(dataset, split=split, image_column=image_column,
                                        streaming=streams(False, settings.max_images), token=token)
    run = {"model": model.model_id, "dataset": str(dataset), "split": split, "image_column": image_column,
           **asdict(settings), "latents": latents}
    saved = SavedProgress(progress_folder(out, f"sae-{settings.layer}-{settings.site}", run), run)
    sae = SparseAutoencoder(width, latents, settings.k, seed=settings.seed)
    trainer = SaeTrainer(sae, lr=settings.lr, dead_after=settings.dead_after)
    buffer = ActivationBuffer(settings.buffer_tokens, width, seed=settings.seed)
    epoch, done, last = 0, 0, {}
    state = saved.load()
    if state:
        trainer.load_state_dict(state["trainer"])
        buffer.load_state_dict(state["buffer"])
        epoch, done, last = state["epoch"], state["done"], state["last"]
        warnings.warn(f"Resumed a stopped training run at epoch {epoch + 1}, after {done} image(s) of it "
                      f"({trainer.steps} steps done).", Resumed, stacklevel=2)
    started = bool(state)
    say = report or (lambda line: None)

    def save_now():
        saved.save({"trainer": trainer.state_dict(), "buffer": buffer.state_dict(), "epoch": epoch, "done": done,
                    "last": last})

    per_epoch = (min(len(opened), settings.max_images or len(opened)) if hasattr(opened, "__len__")
                 else settings.max_images)
    total = per_epoch * settings.epochs if per_epoch else None
    saved_at = time.monotonic()
    while epoch < settings.epochs:
        batches = shard_batches(opened, column, batch_size=settings.image_batch, max_images=settings.max_images,
                                num_shards=1, shard_index=0, progress=progress,
                                desc=f"SAE layer {settings.layer} epoch {epoch + 1}/{settings.epochs}", done=done)
        for indices, encoded in batches:
            pixels = _pixels(model, encoded, column)
            done += len(indices)
            if pixels is None:
                continue
            with torch.no_grad():
                patches = model.activations(pixels, [target]).patches(target).float().cpu()
            tokens = buffer.sample_patches(patches, settings.patches_per_image)
            if not started:  # normalization and pre-encoder bias from the first tokens seen
                sae.start_from(tokens)
                started = True
            for batch in buffer.add(tokens, settings.token_batch):
                last = trainer.step(batch)
            if last and time.monotonic() - saved_at >= checkpoint_seconds:
                save_now()
                saved_at = time.monotonic()
                say(_line(epoch, done, trainer, last))
            if on_batch is not None:
                try:
                    on_batch(epoch * (per_epoch or 0) + done, total)
                except BaseException:  # a Stop: what was read and trained so far is kept for the request to resume
                    save_now()
                    raise
        epoch, done = epoch + 1, 0
        if epoch == settings.epochs:
            for batch in buffer.flush(settings.token_batch):
                last = trainer.step(batch)
        save_now()
        saved_at = time.monotonic()
        say(_line(epoch - 1, "all", trainer, last))
    if not last:
        raise VizError("No image could be read from the dataset, so nothing was trained", option="dataset",
                       fix="{option:pass} a dataset with readable images.")
    sae.eval().requires_grad_(False)
    evaluated, eval_column = (opened, column) if eval_split is None else open_image_dataset(
        dataset, split=eval_split, image_column=image_column, streaming=streams(False, eval_images), token=token)
    measured = measure_sae(model, SavedSae(sae, {"layer": settings.layer, "site": settings.site}),
                           _eval_batches(model, evaluated, eval_column, eval_images, settings.image_batch))
    config = {"model_id": model.model_id, "revision": revision, "layer": settings.layer,
              "site": settings.site, "dataset": str(dataset), "split": split_of(opened, split), "kind": "topk",
              "trained": {**asdict(settings), "latents": latents, "steps": trainer.steps, "tokens": trainer.tokens,
                          "dead_at_end_of_training": int(trainer.dead().sum())},
              "metrics": {**measured, "eval_split": split_of(evaluated, eval_split)}}
    result = save_sae(sae, out, config)
    clear_progress(saved.folder)
    return result


def _line(epoch, done, trainer: SaeTrainer, last: dict) -> str:
    """One progress line; before the token buffer has filled once there is no step to report yet."""
    if not last:
        return f"epoch {epoch + 1} images {done}: the token buffer is filling, no step yet"
    return (f"epoch {epoch + 1} images {done}: step {trainer.steps} loss {last['loss']:.4f} FVE {last['fve']:.3f} "
            f"L0 {last['l0']:.1f} dead {int(trainer.dead().sum())}/{trainer.sae.latents}")


def _pixels(model: VisionModel, encoded, column: str) -> torch.Tensor | None:
    """The readable images of a batch through the checkpoint's own preprocessing; None if none is readable."""
    images = []
    for value in encoded:
        try:
            images.append(model.preprocess_uint8(as_pil(value, column)))
        except (OSError, ValueError, SyntaxError):  # a broken file costs its row, not the run
            continue
    return torch.stack(images).float() / 255 if images else None


def _eval_batches(model, opened, column, count: int, batch_size: int):
    """(pixels, labels) of the first `count` rows, labels from a ClassLabel `label` column when there is one."""
    import datasets

    labels_of = None
    if model.num_classes and isinstance(opened, datasets.Dataset) and LABEL_COLUMN in opened.features:
        labels_of = opened.select_columns([LABEL_COLUMN])
    for indices, encoded in shard_batches(opened, column, batch_size=batch_size, max_images=count, num_shards=1,
                                          shard_index=0, progress=False, desc="", done=0):
        pixels = _pixels(model, encoded, column)
        if pixels is None or len(pixels) != len(indices):
            continue
        labels = None if labels_of is None else torch.tensor(labels_of[list(indices)][LABEL_COLUMN])
        yield pixels, labels
