"""What every experiment shares: loading the models, counting top-1/top-5 over the data, and the result
(a table with the settings plus a plot) written under `<folder>/analysis/<experiment>/`."""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import re
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from matplotlib.figure import Figure

from ..errors import VizError
from ..image_datasets import streams
from ..models.base import NotTransformerError, VisionModel
from ..models.classifiers import ImageClassifier, from_vision_model, load_classifier
from ..models.loader import load_model
from ..store.progress import Resumed, SavedProgress
from ..store.schema import ANALYSIS_DIR  # inside a gallery folder; pushed with it
from .data import DECODE_THREADS, Batch, LabeledData, LabelMap, batches, open_labeled, prepare
from .probe import ProbeRequest, linear_probe, probed_classifier



@dataclass
class Accuracy:
    """Running top-1 / top-5 counts."""

    top1_correct: int = 0
    top5_correct: int = 0
    total: int = 0

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        k = min(5, logits.shape[-1])
        top = logits.float().topk(k, dim=-1).indices.cpu()
        hits = top == labels.view(-1, 1)
        self.top1_correct += int(hits[:, 0].sum())
        self.top5_correct += int(hits.any(dim=1).sum())
        self.total += len(labels)

    @property
    def top1(self) -> float:
        return 100.0 * self.top1_correct / max(self.total, 1)

    @property
    def top5(self) -> float:
        return 100.0 * self.top5_correct / max(self.total, 1)


@dataclass
class AnalysisResult:
    """One run: `rows` (one per model and setting point), the run's `settings`, and the figure."""

    experiment: str
    rows: list[dict]
    settings: dict
    figure: Figure
    notes: list[str] = field(default_factory=list)  # the headline numbers, one line per model
    files: dict[str, Path] = field(default_factory=dict)  # "table" / "plot" once saved

    def summary(self) -> str:
        head = f"{self.experiment} on {self.settings.get('dataset')} ({self.settings.get('images')} images)"
        return "\n".join([head, *(f"  {n}" for n in self.notes)])

    def table(self) -> list[dict]:
        """Rows with the settings as extra columns, so a CSV alone says how it was made."""
        flat = {k: (json.dumps(v) if isinstance(v, (list, dict, tuple)) else v) for k, v in self.settings.items()}
        return [{**row, **{k: v for k, v in flat.items() if k not in row}} for row in self.rows]

    def save(self, folder: str | Path) -> dict[str, Path]:
        """Write `analysis/<experiment>/<run>.csv` and `.png` into `folder` (a gallery folder); same settings
        give the same file names, so a rerun replaces its own files and nothing else."""
        out = Path(folder) / ANALYSIS_DIR / self.experiment
        out.mkdir(parents=True, exist_ok=True)
        stem = run_name(self.settings)
        table = self.table()
        columns = list(dict.fromkeys(k for row in table for k in row))
        csv_path, png_path = out / f"{stem}.csv", out / f"{stem}.png"
        tmp = csv_path.with_name(f".{csv_path.name}.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(table)
        tmp.replace(csv_path)
        self.figure.savefig(png_path)
        self.files = {"table": csv_path, "plot": png_path}
        return self.files


def run_name(settings: dict) -> str:
    """`<dataset>-<split>-<hash of all settings>`: readable, and unique per setting."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]
    dataset = re.sub(r"[^A-Za-z0-9]+", "-", str(settings.get("dataset", "data")).split("/")[-1]).strip("-") or "data"
    return f"{dataset}-{settings.get('split', '')}-{digest}".replace("--", "-")


def short_name(model_id: str) -> str:
    return str(model_id).rstrip("/").split("/")[-1]


# --- models ---------------------------------------------------------------------------------------------------
ModelLike = str | VisionModel | ImageClassifier


def load_classifiers(models: ModelLike | Sequence[ModelLike], *, allow_cnn: bool, probe: ProbeRequest | None = None,
                     **options) -> list[ImageClassifier]:
    """Names, loaded VisionModels or classifiers -> classifiers; CNNs only where the experiment compares them.
    A ViT without a head (DINOv2, MAE) gets a linear probe fitted on `probe`'s split, when one is asked for."""
    models = [models] if isinstance(models, (str, VisionModel, ImageClassifier)) else list(models)
    if not models:
        raise VizError("No model given: pass at least one classifier checkpoint, e.g. google/vit-base-patch16-224.")
    out = []
    for model in models:
        clf = _classifier(model, probe, options)
        if clf.kind != "vit" and not allow_cnn:
            raise VizError(
                f"'{clf.model_id}' is not a Vision Transformer: this experiment runs ViT blocks one by one; CNNs "
                "compare only in foreground-background and frequency."
            )
        out.append(clf)
    return out


def _classifier(model: ModelLike, probe: ProbeRequest | None, options: dict) -> ImageClassifier:
    if isinstance(model, ImageClassifier):
        return model
    if isinstance(model, str):
        try:
            model = load_model(model, **options)
        except NotTransformerError:
            return load_classifier(model, **options)  # a CNN
    if model.num_classes:
        return from_vision_model(model)
    if probe is None:
        raise VizError(
            f"'{model.model_id}' has no classification head", option="probe_split",
            fix="{option:pass} train to fit a linear probe on a labelled split of the dataset (self-supervised models "
                "such as DINOv2), or pick a classifier checkpoint.",
        )
    return probed_classifier(model, linear_probe(model, probe))


# --- the evaluation loop --------------------------------------------------------------------------------------
Prepare = Callable[[list], torch.Tensor]  # PIL images -> [B, 3, S, S] input of one classifier
Scorer = Callable[[ImageClassifier, Batch, Prepare], dict]


def sweep(
    classifiers: list[ImageClassifier],
    data: LabeledData,
    score: Scorer,
    *,
    max_images: int | None,
    batch_size: int,
    progress: bool,
    desc: str,
    checkpoint=None,
) -> tuple[dict[tuple[str, object], Accuracy], int]:
    """Top-1/top-5 per (model_id, key) over the data, where `score(classifier, batch, prepare)` returns
    {key: logits} for one batch, `prepare` turning PIL images into that classifier's own input. Returns the counts
    and the number of images. `checkpoint`: a folder the counts are saved in after every batch and resumed from
    (its caller removes it once the results are saved)."""
    maps = {c.model_id: LabelMap(data, c.class_names, c.model_id) for c in classifiers}
    saved = None
    if checkpoint is not None:
        saved = SavedProgress(checkpoint, {"models": [c.model_id for c in classifiers], "dataset": data.name,
                                           "max_images": max_images, "batch_size": batch_size, "desc": desc})
    counts, seen = _restored_counts(saved)
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        for batch in batches(data, max_images=max_images, batch_size=batch_size, progress=progress, desc=desc,
                             done=seen):
            seen += len(batch.labels)
            for clf in classifiers:
                labels = maps[clf.model_id](batch.labels)
                with torch.no_grad():
                    scored = score(clf, batch, functools.partial(prepare, preprocess=clf.preprocess, pool=pool))
                for key, logits in scored.items():
                    counts.setdefault((clf.model_id, key), Accuracy()).add(logits, labels)
            if saved:
                saved.save({"seen": seen, "counts": [(key, vars(acc)) for key, acc in counts.items()]})
    if not seen:
        raise VizError(f"Dataset '{data.name}' gave no images", option="max_images",
                       fix="check the split and {option}.")
    return counts, seen


def resumed_state(saved: SavedProgress | None, done: str) -> dict | None:
    """The state a stopped run saved after its last batch (its image count under "seen"), announced as a Resumed
    warning saying the images it had `done` are skipped; None when there is nothing to resume."""
    state = saved.load() if saved else None
    if state:
        warnings.warn(f"Resumed a stopped run: the {state['seen']} image(s) it had {done} are skipped.", Resumed,
                      stacklevel=4)
    return state


def _restored_counts(saved: SavedProgress | None) -> tuple[dict[tuple[str, object], Accuracy], int]:
    """The counts and image count a stopped run saved, or none."""
    state = resumed_state(saved, "evaluated")
    if not state:
        return {}, 0
    return {tuple(key): Accuracy(**acc) for key, acc in state["counts"]}, state["seen"]


def base_settings(experiment: str, classifiers, data: LabeledData, split: str, max_images, images: int) -> dict:
    return {
        "experiment": experiment,
        "models": [c.model_id for c in classifiers],
        "dataset": data.name,
        "split": data.split or split,
        "max_images": max_images,
        "images": images,
        **({"probes": {c.model_id: c.probe.describe() for c in classifiers if c.probe is not None}}
           if any(c.probe is not None for c in classifiers) else {}),
    }


def open_data(dataset, *, split, image_column, label_column, streaming, max_images=None, **region) -> LabeledData:
    """The experiment's data; streamed when a cap on images is set, so only the rows used are read."""
    return open_labeled(dataset, split=split, image_column=image_column, label_column=label_column,
                        streaming=streams(streaming, max_images), **region)
