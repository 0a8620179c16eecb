"""Image classifiers for whole-image experiments: ViTs through `VisionModel`, and CNNs (timm ResNets,
transformers ResNet/ConvNeXt, ...) so foreground/background and frequency results can be compared with them.

Same loading rules as `load_model`: safetensors preferred, pickle weights only with `allow_pickle`, remote code
only with `trust_remote_code`. Class names come from the checkpoint so dataset labels can be matched by name.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..device import autocast, resolve_device, resolve_precision
from ..errors import VizError
from ..images import preprocess
from .base import LOGITS, NotTransformerError, Target, VisionModel, as_int, without_normalize
from .hub_files import CheckpointFiles
from .loader import detect_backend, load_model


@dataclass
class ImageClassifier:
    """Images in [0, 1] ([B, 3, S, S] at `image_size`) -> class logits, plus the class names and the checkpoint's
    own way to turn a PIL image into that input (`preprocess`; resize + centre crop when it has none)."""

    model_id: str
    kind: str  # "vit" or "cnn"
    image_size: int
    class_names: list[str]
    _logits: Callable[[torch.Tensor], torch.Tensor]
    vision_model: VisionModel | None = None  # set for ViTs: the per-block experiments need it
    pixel_pipeline: Callable | None = None  # PIL -> [3, S, S] in [0, 1], normalization left out
    probe: object | None = None  # a linear probe standing in for a missing head (analysis.probe.LinearProbe)

    def preprocess(self, image) -> torch.Tensor:
        if self.vision_model is not None:
            return self.vision_model.preprocess(image)
        if self.pixel_pipeline is not None:
            pixels = torch.as_tensor(self.pixel_pipeline(image)).float()
            if tuple(pixels.shape) == (3, self.image_size, self.image_size):
                return pixels.clamp(0, 1)
        return preprocess([image], self.image_size)[0]

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._logits(images).float()


def class_names(model: VisionModel) -> list[str]:
    """The class names of a classifier checkpoint, by class index."""
    return _names_of(model.module, model.num_classes)


def from_vision_model(model: VisionModel) -> ImageClassifier:
    if not model.num_classes:
        raise VizError(
            f"'{model.model_id}' has no classification head: pick an image classifier checkpoint "
            "(e.g. google/vit-base-patch16-224) for accuracy experiments."
        )
    target = Target(LOGITS)
    return ImageClassifier(
        model_id=model.model_id,
        kind="vit",
        image_size=model.image_size,
        class_names=class_names(model),
        _logits=lambda images: model.activations(images, [target])[target],
        vision_model=model,
    )


def load_classifier(name_or_path: str, **options) -> ImageClassifier:
    """A ViT classifier through `load_model` (same options: revision, device, precision, trust_remote_code,
    allow_pickle, token), else a CNN classifier (timm or transformers)."""
    try:
        return from_vision_model(load_model(name_or_path, **options))
    except NotTransformerError:
        return _load_cnn(name_or_path, **options)


def _load_cnn(name, *, revision=None, device="auto", precision="auto", trust_remote_code=False, allow_pickle=False,
              token=None):
    files = CheckpointFiles(str(name).strip(), revision, token)
    backend, config = detect_backend(files)
    resolved = resolve_device(device)
    dtype_precision = resolve_precision(precision, resolved)
    if backend == "timm":
        module, size, mean, std, pipeline = _timm_cnn(files, allow_pickle)
    elif backend == "transformers":
        module, size, mean, std, pipeline = _transformers_cnn(files, trust_remote_code, allow_pickle)
    else:
        raise VizError(f"'{name}' is neither a ViT nor an image classifier: pick e.g. timm/resnet50.a1_in1k.")
    module.eval().requires_grad_(False).to(resolved)
    num_classes = _num_classes(module)
    if not num_classes:
        raise VizError(f"'{name}' has no classification head: pick an image classifier checkpoint.")
    mean_t = torch.tensor(mean, device=resolved).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=resolved).view(1, 3, 1, 1)

    def logits(images):
        with autocast(resolved, dtype_precision):
            out = module((images.to(resolved) - mean_t) / std_t)
        return getattr(out, "logits", out)

    return ImageClassifier(str(name), "cnn", size, _names_of(module, num_classes), logits, pixel_pipeline=pipeline)


def _timm_cnn(files: CheckpointFiles, allow_pickle: bool):
    import timm
    import timm.data

    from . import timm_backend

    weights = files.weights(timm_backend.SAFE_WEIGHTS, timm_backend.PICKLE_WEIGHTS, allow_pickle)
    with files.staged(weights, ["config.json"]) as source:  # timm can find no other weight file there
        module = timm.create_model(source, pretrained=True)
    data = timm.data.resolve_model_data_config(module)
    pipeline = without_normalize(timm.data.create_transform(**data, is_training=False))
    return module, int(data["input_size"][-1]), tuple(data["mean"]), tuple(data["std"]), pipeline


def _transformers_cnn(files: CheckpointFiles, trust_remote_code: bool, allow_pickle: bool):
    import transformers

    from . import transformers_backend

    weights = files.weights(transformers_backend.SAFE_WEIGHTS, transformers_backend.PICKLE_WEIGHTS, allow_pickle)
    try:
        module = transformers.AutoModelForImageClassification.from_pretrained(
            files.name, revision=files.revision, token=files.token, trust_remote_code=trust_remote_code,
            use_safetensors=".safetensors" in os.path.basename(weights), dtype=torch.float32,
        )
    except ValueError as err:
        raise VizError(f"'{files.name}' is not an image classifier transformers can load: {str(err).splitlines()[0]}") from None
    processor = files.json("preprocessor_config.json") or {}
    size = processor.get("crop_size") or processor.get("size") or 224
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge") or 224
    mean = tuple(processor.get("image_mean", (0.485, 0.456, 0.406)))
    std = tuple(processor.get("image_std", (0.229, 0.224, 0.225)))
    return module, as_int(size), mean, std, transformers_backend.processor_pipeline(files, trust_remote_code)


def _num_classes(module: nn.Module) -> int:
    config = getattr(module, "config", None)
    if config is not None and getattr(config, "id2label", None):
        return len(config.id2label)
    return int(getattr(module, "num_classes", 0) or 0)


def _names_of(module: nn.Module, num_classes: int) -> list[str]:
    """id2label (transformers), the pretrained config's labels or ImageNet's (timm), else class_<i>."""
    config = getattr(module, "config", None)
    id2label = getattr(config, "id2label", None) if config is not None else None
    if id2label and len(id2label) == num_classes:
        return [str(id2label[i]) for i in range(num_classes)]
    pretrained = getattr(module, "pretrained_cfg", None) or {}
    for key in ("label_descriptions", "label_names"):
        names = pretrained.get(key)
        if names and len(names) == num_classes:
            return list(names.values()) if isinstance(names, dict) else [str(n) for n in names]
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(module)
        if subset:
            return list(ImageNetInfo(subset).label_descriptions())
    except ImportError:  # pragma: no cover - timm is a dependency
        pass
    return [f"class_{i}" for i in range(num_classes)]
