"""open_clip checkpoints (repos with open_clip_config.json): the image tower `visual` is what we visualize."""

from __future__ import annotations

from .backends import Backend
from .base import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, VisionModel, as_int, normalize_of, without_normalize
from .hub_files import CheckpointFiles, state_dict_mismatch


SAFE_WEIGHTS = ["open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "model.safetensors"]
PICKLE_WEIGHTS = ["open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth", "pytorch_model.bin"]


class OpenClipVisionModel(VisionModel):
    """open_clip's VisionTransformer cannot resample its position embedding, so it renders at native size only."""

    def _forward(self, pixels, interpolate):
        return self.tower(pixels)


def load(files: CheckpointFiles, config: dict, *, device, precision, trust_remote_code, allow_pickle) -> VisionModel:
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    weights = files.weights(SAFE_WEIGHTS, PICKLE_WEIGHTS, allow_pickle)
    with files.staged(weights, ["open_clip_config.json"]) as source:
        try:
            module = open_clip.create_model(source)
        except RuntimeError as err:  # a weight file of another model: torch lists every key it lacks
            detail = state_dict_mismatch(err)
            if detail is None:
                raise
            raise files.weights_mismatch(weights, "open_clip_config.json", detail) from None
    visual = module.visual
    # The eval transform create_model_and_transforms would return, from the config the model was built with.
    evaluation = image_transform_v2(PreprocessCfg(**visual.preprocess_cfg), is_train=False)
    preprocess = config.get("preprocess_cfg", {})
    mean, std = normalize_of(evaluation) or (preprocess.get("mean", OPENAI_CLIP_MEAN), preprocess.get("std", OPENAI_CLIP_STD))
    image_size = getattr(visual, "image_size", preprocess.get("size", 224))
    patch_size = getattr(visual, "patch_size", 16)
    transformer = getattr(visual, "transformer", None)
    return OpenClipVisionModel(
        model_id=files.name,
        backend="open_clip",
        module=module,
        tower=visual,
        image_size=as_int(image_size),
        patch_size=as_int(patch_size),
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        hidden_size=int(getattr(transformer, "width", 0) or 0),
        is_clip=True,
        can_interpolate=False,
        sequence_first=not getattr(transformer, "batch_first", True),
        device=device,
        precision=precision,
        pixel_pipeline=without_normalize(evaluation),
    )


BACKEND = Backend(load, SAFE_WEIGHTS, PICKLE_WEIGHTS)
