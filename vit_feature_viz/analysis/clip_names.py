"""Naming CLIP features with words, in the spirit of CLIP-Dissect (Oikarinen & Weng, 2023).

For a feature of a CLIP vision tower (the paper's MLP channel, mean over patches), the images of a dataset that
activate it most define it. Every word or phrase of a vocabulary is embedded by the checkpoint's own text tower
(with a prompt such as "a photo of {}.") and scored by how much more it resembles those top images than the
images in general:

    score(word) = mean cosine(word, top images) - mean cosine(word, all scanned images)
                = (mean embedding of the top images - mean embedding of all images) . text embedding(word)

Subtracting the dataset mean removes words that fit every image ("a photo"), which is what CLIP-Dissect's
soft-WPMI does with its second term. The default vocabulary is `vit_feature_viz/data/concepts.txt`.
"""

from __future__ import annotations

import csv
import warnings
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import torch

from ..core.objectives import make_objective
from ..errors import VizError
from ..image_datasets import streams
from ..models.base import VisionModel
from ..models.text import ClipText, clip_image_embeddings
from ..specs import parse_features
from ..store.progress import Resumed, SavedProgress, job_folder
from ..store.schema import ANALYSIS_DIR
from .common import AnalysisResult, short_name
from .data import DECODE_THREADS, batches, open_labeled, prepare
from .plots import names_figure

EXPERIMENT = "clip_names"
DEFAULT_PROMPT = "a photo of {}."
DEFAULT_VOCABULARY = "concepts.txt"  # in vit_feature_viz/data/


def load_vocabulary(vocabulary=None) -> tuple[list[str], str]:
    """(words, where they came from): the shipped list, a text file (one entry a line, '#' comments), or a list."""
    if vocabulary is None:
        text, source = resources.files("vit_feature_viz.data").joinpath(DEFAULT_VOCABULARY).read_text(), DEFAULT_VOCABULARY
    elif isinstance(vocabulary, (str, Path)):
        path = Path(vocabulary).expanduser()
        if not path.is_file():
            raise VizError(f"Vocabulary file '{vocabulary}' does not exist: pass a text file with one word or phrase a line.")
        text, source = _read_utf8(path, vocabulary), path.name
    else:
        text, source = "\n".join(str(w) for w in vocabulary), "user list"
    words = list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")))
    if not words:
        raise VizError(f"The vocabulary ({source}) is empty: give at least one word or phrase.")
    return words, source


def _read_utf8(path: Path, given) -> str:
    """A vocabulary file's text; files saved in another encoding (Latin-1, UTF-16, ...) are refused in one line
    rather than guessed at, since a wrong guess would silently rename concepts."""
    try:
        return path.read_text(encoding="utf-8-sig")  # a BOM (Notepad's UTF-8) is not part of the first word
    except UnicodeDecodeError as error:
        raise VizError(
            f"Vocabulary file '{given}' is not UTF-8 text (byte 0x{error.object[error.start]:02x} at position "
            f"{error.start}): save it with UTF-8 encoding, one word or phrase a line."
        ) from None


def rank_names(top_embeddings: torch.Tensor, all_mean: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Scores [V] of the words whose unit embeddings are `text` [V, D], for a feature whose top images have unit
    embeddings `top_embeddings` [K, D], against `all_mean` [D], the mean embedding of all scanned images."""
    return text @ (top_embeddings.mean(dim=0) - all_mean)


def clip_names(
    models, dataset, *, layer: int | None = None, features="0-7", vocabulary=None, prompt: str = DEFAULT_PROMPT,
    top_images: int = 16, top_names: int = 5, split: str | None = None, max_images: int | None = None, batch_size: int = 32,
    streaming: bool = False, image_column: str | None = None, progress: bool = True, checkpoint=None,
    token: str | bool | None = None, objective="feature", **load_options,
) -> AnalysisResult:
    """The `top_names` best words for each feature of `layer` of each CLIP model. `checkpoint`: a folder each
    model's scan is saved in after every batch and resumed from (its caller removes it once results are saved).
    `objective`: what ranks the images, `feature` (the MLP channel) or a channel objective such as an SAE's
    latents (`requested_objective("sae", layer, sae=GALLERY)`); rows record its name."""
    from ..models import load_model

    models = [models] if isinstance(models, (str, VisionModel)) else list(models)
    loaded = [m if isinstance(m, VisionModel) else load_model(m, token=token, **load_options) for m in models]
    if layer is None:
        raise VizError("Naming features needs a layer", option="layer", fix="{option:pass} N (a block index, from 0).")
    if top_images < 1 or top_names < 1:
        raise VizError(f"Top images and top names must be at least 1, not {top_images} and {top_names}: use e.g. 16 and 5.")
    if "{}" not in prompt:
        raise VizError(f"The prompt '{prompt}' has no {{}} for the word: use e.g. '{DEFAULT_PROMPT}'.")
    words, source = load_vocabulary(vocabulary)
    data = open_labeled(dataset, split=split, image_column=image_column, need_label=False,
                        streaming=streams(streaming, max_images), token=token)
    rows, panels, notes, seen = [], [], [], 0
    for model in loaded:
        encoder = ClipText(model, token=token)  # fails early, before the scan, for towers without text
        objective = make_objective(objective, layer)
        objective.check(model)
        wanted = parse_features(features, objective.num_channels(model))
        saved = None
        if checkpoint is not None:
            scan = {"model": model.model_id, "layer": layer, "features": wanted, "dataset": data.name,
                    **({} if objective.name == "feature" else {"objective": objective.name}),
                    "max_images": max_images, "batch_size": batch_size}
            saved = SavedProgress(job_folder(checkpoint, "scan", scan), scan)
        activations, embeddings = _scan(model, objective, wanted, data, max_images, batch_size, progress, saved)
        seen = len(embeddings)
        text = encoder.encode([prompt.format(w) for w in words])
        all_mean = embeddings.mean(dim=0)
        k = min(top_images, seen)
        for position, feature in enumerate(wanted):
            top = activations[:, position].topk(k).indices
            scores = rank_names(embeddings[top], all_mean, text)
            best = scores.topk(min(top_names, len(words)))
            names = [words[i] for i in best.indices.tolist()]
            rows += [{"model_id": model.model_id, "layer": layer, "feature": feature, "objective": objective.name,
                      "rank": rank + 1, "name": name,
                      "score": float(score), "top_image_indices": " ".join(map(str, top.tolist()))}
                     for rank, (name, score) in enumerate(zip(names, best.values.tolist()))]
            panels.append((f"{short_name(model.model_id)} L{layer} F{feature}", names, best.values.tolist()))
            notes.append(f"{short_name(model.model_id)} layer {layer} feature {feature}: {', '.join(names)}")
    settings = {"experiment": EXPERIMENT, "models": [m.model_id for m in loaded], "dataset": data.name, "split": data.split or split,
                "max_images": max_images, "images": seen, "layer": layer, "features": str(features),
                "vocabulary": f"{source} ({len(words)} entries)", "prompt": prompt, "top_images": top_images}
    figure = names_figure(f"Names of CLIP features: {data.name} ({split}, {seen} images, top {k} images each)", panels)
    return AnalysisResult(EXPERIMENT, rows, settings, figure, notes)


def _scan(model, objective, wanted, data, max_images, batch_size, progress, saved: SavedProgress | None = None):
    """Feature values [N, F] and unit image embeddings [N, D] of the first `max_images` images; with `saved`,
    each batch's are saved as one part, and a stopped run's are picked up instead of computed again."""
    channels = torch.tensor(wanted, device=model.device)
    values, embeddings, parts = _restored_scan(saved)
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        for batch in batches(data, max_images=max_images, batch_size=batch_size, progress=progress,
                             desc="naming features", done=sum(len(v) for v in values)):
            images = prepare(batch.images, model.preprocess, pool)
            with torch.no_grad():
                values.append(objective.example_values(model.activations(images, objective.needs))[:, channels].float().cpu())
            embeddings.append(clip_image_embeddings(model, images))
            if saved:
                parts.append(f"batch-{len(parts):06d}")
                saved.save({}, {parts[-1]: {"values": values[-1], "embeddings": embeddings[-1]}}, parts)
    if not values:
        raise VizError(f"Dataset '{data.name}' gave no images", option="max_images",
                       fix="check the split and {option}.")
    return torch.cat(values), torch.cat(embeddings)


def _restored_scan(saved: SavedProgress | None) -> tuple[list, list, list[str]]:
    """(values, embeddings, part names) of the batches a stopped run saved, in order; empty lists without."""
    state = saved.load() if saved else None
    if not state:
        return [], [], []
    loaded = [saved.part(name) for name in state["parts"]]
    images = sum(len(part["values"]) for part in loaded)
    warnings.warn(f"Resumed a stopped run: the {images} image(s) it had scanned are skipped.", Resumed, stacklevel=3)
    return [p["values"] for p in loaded], [p["embeddings"] for p in loaded], list(state["parts"])


def has_feature_names(folder, model_id: str) -> bool:
    """True once any feature of `model_id` was named into `folder` (so a feature without names is worth a hint)."""
    root = Path(folder) / ANALYSIS_DIR / EXPERIMENT
    for table in root.glob("*.csv") if root.is_dir() else ():
        with open(table, newline="") as f:
            if any(r.get("model_id") == model_id for r in csv.DictReader(f)):
                return True
    return False


def feature_names(folder, model_id: str, layer: int, feature: int, limit: int = 5, objective: str = "feature") -> list[str]:
    """The names saved for a feature (of `objective`: an SAE's latents are named apart from the channels) under
    `folder/analysis/clip_names/` (the newest run that has it), for showing next to the feature in galleries and
    the app; [] when none was computed."""
    root = Path(folder) / ANALYSIS_DIR / EXPERIMENT
    tables = sorted(root.glob("*.csv"), key=lambda p: p.stat().st_mtime, reverse=True) if root.is_dir() else []
    for table in tables:
        with open(table, newline="") as f:
            found = [r for r in csv.DictReader(f)
                     if r.get("model_id") == model_id and r.get("layer") == str(layer) and r.get("feature") == str(feature)
                     and (r.get("objective") or "feature") == objective]  # tables before objectives: channels
        if found:
            return [r["name"] for r in sorted(found, key=lambda r: int(r["rank"]))][:limit]
    return []
