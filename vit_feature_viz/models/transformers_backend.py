"""transformers checkpoints: ViT, DeiT, CLIP / CLIPVision, SigLIP, DINOv2, BEiT and other ViT-style towers."""

from __future__ import annotations

import contextlib
import inspect
import os

import torch

from ..errors import VizError
from .backends import Backend
from .base import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, VisionModel, as_int
from .hub_files import CheckpointFiles

SAFE_WEIGHTS = ["model.safetensors", "model.safetensors.index.json"]
PICKLE_WEIGHTS = ["pytorch_model.bin", "pytorch_model.bin.index.json"]
CLIP_FAMILY = {"clip", "clip_vision_model", "siglip", "siglip_vision_model", "siglip2", "chinese_clip", "altclip"}


class TransformersVisionModel(VisionModel):
    """The vision tower of a transformers model; a classifier is called whole so its logits are available."""

    def _forward(self, pixels, interpolate):
        kwargs = {"interpolate_pos_encoding": True} if interpolate and self._takes_interpolate else {}
        return self._entry(pixel_values=pixels, **kwargs)

    def _logits(self, output):
        return output.logits


def load(files: CheckpointFiles, config: dict, *, device, precision, trust_remote_code, allow_pickle) -> VisionModel:
    import transformers

    weights = files.weights(SAFE_WEIGHTS, PICKLE_WEIGHTS, allow_pickle)
    checked_safetensors = ".safetensors" in os.path.basename(weights)  # transformers then loads only safetensors
    try:
        auto_config = transformers.AutoConfig.from_pretrained(files.name, revision=files.revision, token=files.token,
                                                             trust_remote_code=trust_remote_code)
    except (ValueError, KeyError, OSError) as err:
        raise _load_error(files, err) from None
    architectures = auto_config.architectures or []
    is_classifier = any("ForImageClassification" in a for a in architectures)
    loader = transformers.AutoModelForImageClassification if is_classifier else transformers.AutoModel
    try:
        with _quiet_load_report():
            module, loading = loader.from_pretrained(
                files.name,
                revision=files.revision,
                token=files.token,
                trust_remote_code=trust_remote_code,
                use_safetensors=checked_safetensors,
                dtype=torch.float32,
                attn_implementation="eager" if device.type == "cpu" else "sdpa",  # explicit attention is faster on CPU
                ignore_mismatched_sizes=True,  # judged below, in one line instead of a report and a traceback
                output_loading_info=True,
            )
    except (ValueError, KeyError, OSError) as err:
        raise _load_error(files, err) from None
    mismatch = weights_mismatch(module, loading)
    if mismatch is not None:
        architecture = architectures[0] if architectures else auto_config.model_type
        raise files.weights_mismatch(weights, "config.json", f"{architecture}, {mismatch}")
    tower = getattr(module, "vision_model", module)
    vision_config = getattr(auto_config, "vision_config", None) or auto_config
    image_size = as_int(getattr(vision_config, "image_size", 224))
    patch_size = as_int(getattr(vision_config, "patch_size", 16))
    mean, std = _normalization(files, auto_config.model_type)
    entry = tower if tower is not module else module
    takes_interpolate = "interpolate_pos_encoding" in inspect.signature(entry.forward).parameters
    model = TransformersVisionModel(
        model_id=files.name,
        backend="transformers",
        module=module,
        tower=tower,
        image_size=image_size,
        patch_size=patch_size,
        mean=mean,
        std=std,
        hidden_size=int(getattr(vision_config, "hidden_size", 0) or 0),
        num_classes=len(auto_config.id2label) if is_classifier else 0,
        is_clip=auto_config.model_type in CLIP_FAMILY,
        can_interpolate=takes_interpolate or auto_config.model_type.startswith("dinov2"),
        device=device,
        precision=precision,
        pixel_pipeline=processor_pipeline(files, trust_remote_code),
    )
    model._entry = entry
    model._takes_interpolate = takes_interpolate
    return model


def weights_mismatch(module, loading: dict) -> str | None:
    """What makes a loaded weight file not this architecture's, or None: any weight of another shape, or most of
    the model's weights missing (a file of another model; transformers would fill them with random values). A few
    missing weights, such as a pooler the checkpoint never had, are normal."""
    shapes = sorted(loading.get("mismatched_keys") or [])
    if shapes:
        key, in_file, in_model = shapes[0]
        return f"{key} is {tuple(in_file)} in the file but {tuple(in_model)} in the model"
    missing, total = sorted(loading.get("missing_keys") or []), len(module.state_dict())
    if total and len(missing) * 2 > total:
        return f"{len(missing)} of the model's {total} weights are missing from the file, e.g. {missing[0]}"
    return None


@contextlib.contextmanager
def _quiet_load_report():
    """transformers logs a table of every missing or resized key while loading (`weights_mismatch` says it in one
    line instead) and draws a progress bar over the weights."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # a "Loading weights" bar per load, even with --quiet
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def processor_pipeline(files: CheckpointFiles, trust_remote_code: bool):
    """The checkpoint's image processor (sizes and resampling from preprocessor_config.json) without its
    normalization, or None when the repo has no processor config."""
    import transformers

    if files.path("preprocessor_config.json") is None:
        return None
    processor = transformers.AutoImageProcessor.from_pretrained(
        files.name, revision=files.revision, token=files.token, trust_remote_code=trust_remote_code)

    def pipeline(image):
        return processor(images=image, do_normalize=False, return_tensors="pt")["pixel_values"][0]

    return pipeline


def _load_error(files: CheckpointFiles, err: Exception) -> VizError:
    """transformers' own errors, as one line naming the fix."""
    if "trust_remote_code" in str(err):
        return VizError(f"'{files.name}' needs its own code to load", option="trust_remote_code",
                        fix="{option:pass} if you trust it.")
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return VizError(f"transformers cannot load '{files.name}' ({first[:200]}): pick a ViT or CLIP checkpoint it supports.")


def _normalization(files: CheckpointFiles, model_type: str):
    """Mean/std from the checkpoint's image processor config; CLIP's or 0.5 when the repo has none."""
    processor = files.json("preprocessor_config.json") or {}
    default = (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD) if model_type.startswith("clip") else ((0.5,) * 3, (0.5,) * 3)
    mean = tuple(float(v) for v in processor.get("image_mean", default[0]))
    std = tuple(float(v) for v in processor.get("image_std", default[1]))
    return mean, std


BACKEND = Backend(load, SAFE_WEIGHTS, PICKLE_WEIGHTS)
