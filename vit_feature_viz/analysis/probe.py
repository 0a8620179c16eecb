"""A linear probe: the classifier head a self-supervised checkpoint (DINOv2, MAE) lacks, fitted on frozen features.

The paper's accuracy experiments read a model's classification, but DINOv2- and MAE-style backbones have no head.
Their standard evaluation is a linear classifier on the final-normed CLS token of a labelled split, with the
backbone frozen; the experiments then run through it exactly as through a trained head (CLS isolation, per-block
CLS, token pooling, foreground/background, frequency).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import VizError
from ..models.base import VisionModel
from ..models.classifiers import ImageClassifier
from ..models.stages import TokenStages, token_stages
from .data import LabeledData, batches, open_labeled, prepare

EPOCHS = 300  # full-batch L-BFGS iterations: a few seconds for thousands of 384-1024 wide vectors
WEIGHT_DECAY = 1e-4


@dataclass(frozen=True)
class ProbeRequest:
    """Where to fit probes for models without a head: a split of the experiment's dataset (its training split,
    so the evaluation split stays unseen)."""

    dataset: object
    split: str = "train"
    max_images: int | None = 5000
    image_column: str | None = None
    label_column: str | None = None
    streaming: bool = False
    token: str | bool | None = None
    progress: bool = True
    cache: str | None = None  # a folder fitted probes are kept in, so the next experiment on them does not refit

    def key(self, model: VisionModel) -> str:
        """What makes a fitted probe this request's for this model (the token is not part of it)."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("token", "progress", "cache")}
        return json.dumps({"model": model.model_id, "size": model.image_size, **fields}, sort_keys=True, default=str)


@dataclass
class LinearProbe:
    """Logits = weight @ standardized CLS vector + bias, over the probe split's class names."""

    weight: torch.Tensor  # [K, C]
    bias: torch.Tensor  # [K]
    mean: torch.Tensor  # [C] feature standardization, from the probe split
    scale: torch.Tensor  # [C]
    class_names: list[str]
    images: int  # how many images it was fitted on
    train_top1: float  # accuracy on those images (%): a probe far below chance-free levels means a bad split

    def __call__(self, vector: torch.Tensor) -> torch.Tensor:
        vector = (vector.float() - self.mean.to(vector.device)) / self.scale.to(vector.device)
        return vector @ self.weight.T.to(vector.device) + self.bias.to(vector.device)

    def describe(self) -> str:
        return f"linear probe on {self.images} images, {len(self.class_names)} classes, {self.train_top1:.1f}% train top-1"


def cls_vectors(stages: TokenStages, images: torch.Tensor) -> torch.Tensor:
    """[B, C] the final-normed CLS token: what the probe (and any ViT's head) reads."""
    model = stages.model
    with torch.no_grad(), model.autocast():
        tokens = stages.run(stages.embed(model.normalize(images.to(model.device))))
        return stages.norm(tokens)[:, 0].float().cpu()


def probe_classes(data: LabeledData, labels: list) -> tuple[list[str], torch.Tensor]:
    """The probe's class names and each label's class index: the dataset's ClassLabel names where it has them,
    else the labels themselves (integers as their own index, strings sorted)."""
    if data.label_names is not None:
        return list(data.label_names), torch.tensor([int(v) for v in labels])
    if all(isinstance(v, str) for v in labels):
        names = sorted(set(labels))
        return names, torch.tensor([names.index(v) for v in labels])
    values = [int(v) for v in labels]
    return [str(i) for i in range(max(values) + 1)], torch.tensor(values)


def linear_probe(model: VisionModel, request: ProbeRequest) -> LinearProbe:
    """The request's probe for the model: read from its cache folder when fitted before, else fitted and kept."""
    path = None
    if request.cache is not None:
        path = Path(request.cache) / f"{hashlib.sha256(request.key(model).encode()).hexdigest()[:16]}.safetensors"
        if path.is_file():
            return load_probe(path)
    probe = fit_linear_probe(model, request)
    if path is not None:
        save_probe(probe, path)
    return probe


def save_probe(probe: LinearProbe, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: getattr(probe, name).contiguous() for name in ("weight", "bias", "mean", "scale")}
    meta = {"class_names": json.dumps(probe.class_names), "images": str(probe.images), "train_top1": str(probe.train_top1)}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)


def load_probe(path: Path) -> LinearProbe:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {name: f.get_tensor(name) for name in ("weight", "bias", "mean", "scale")}
    return LinearProbe(**tensors, class_names=json.loads(meta["class_names"]), images=int(meta["images"]),
                       train_top1=float(meta["train_top1"]))


def fit_linear_probe(model: VisionModel, request: ProbeRequest, *, batch_size: int = 32) -> LinearProbe:
    """Frozen CLS vectors of the probe split -> a standardized, weight-decayed multinomial logistic regression."""
    stages = token_stages(model)
    data = open_labeled(request.dataset, split=request.split, image_column=request.image_column,
                        label_column=request.label_column, streaming=request.streaming, token=request.token)
    vectors, labels = [], []
    for batch in batches(data, max_images=request.max_images, batch_size=batch_size, progress=request.progress,
                         desc=f"probe features ({request.split})"):
        vectors.append(cls_vectors(stages, prepare(batch.images, model.preprocess)))
        labels += batch.labels
    if not labels:
        raise VizError(f"Split '{request.split}' of '{data.name}' gave no images to fit a probe on",
                       option="probe_split", value=request.split, fix="pick another {option}.")
    names, targets = probe_classes(data, labels)
    if len(set(targets.tolist())) < 2:
        raise VizError(f"Split '{request.split}' of '{data.name}' has a single class: a probe needs at least two",
                       option="probe_split", value=request.split, fix="pick another {option} or more {probe_images}.")
    features = torch.cat(vectors)
    mean, scale = features.mean(0), features.std(0).clamp(min=1e-6)
    weight, bias = _logistic_regression((features - mean) / scale, targets, len(names))
    probe = LinearProbe(weight, bias, mean, scale, names, len(targets), 0.0)
    probe.train_top1 = 100.0 * float((probe(features).argmax(1) == targets).float().mean())
    return probe


def _logistic_regression(x: torch.Tensor, y: torch.Tensor, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    linear = torch.nn.Linear(x.shape[1], classes)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=EPOCHS, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(x), y) + WEIGHT_DECAY * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return linear.weight.detach(), linear.bias.detach()


def probed_classifier(model: VisionModel, probe: LinearProbe) -> ImageClassifier:
    """The model with the probe as its head: images -> logits, class names from the probe split."""
    stages = token_stages(model)
    return ImageClassifier(
        model_id=model.model_id,
        kind="vit",
        image_size=model.image_size,
        class_names=probe.class_names,
        _logits=lambda images: probe(cls_vectors(stages, images)),
        vision_model=model,
        probe=probe,
    )


def with_probe_head(stages: TokenStages, probe: LinearProbe | None) -> TokenStages:
    """The stages reading their classes through the probe (CLS token after the final norm), when there is one."""
    if probe is None:
        return stages
    return dataclasses.replace(stages, readout=lambda normed: probe(normed[:, 0]), vector_head=probe)
