"""timm VisionTransformer-family checkpoints (`timm/...` repos with config.json naming an `architecture`)."""

from __future__ import annotations

from .backends import Backend
from .base import NotTransformerError, VisionModel, as_int, without_normalize
from .hub_files import CheckpointFiles, state_dict_mismatch


SAFE_WEIGHTS, PICKLE_WEIGHTS = ["model.safetensors"], ["pytorch_model.bin"]


class TimmVisionModel(VisionModel):
    """A timm model is its own vision tower; its forward returns logits when it has a head."""

    def _forward(self, pixels, interpolate):
        return self.module(pixels)

    def _logits(self, output):
        return output


def load(files: CheckpointFiles, config: dict, *, device, precision, trust_remote_code, allow_pickle) -> VisionModel:
    import timm
    import timm.data

    weights = files.weights(SAFE_WEIGHTS, PICKLE_WEIGHTS, allow_pickle)
    with files.staged(weights, ["config.json"]) as source:
        try:
            module = timm.create_model(source, pretrained=True, dynamic_img_size=True)
        except RuntimeError as err:  # a weight file of another model: torch lists every key it lacks
            detail = state_dict_mismatch(err)
            if detail is None:
                raise
            raise files.weights_mismatch(weights, "config.json", f"{config.get('architecture')}, {detail}") from None
        except TypeError as err:  # only transformer models take dynamic_img_size: a CNN (ResNet, ConvNeXt, ...)
            if "dynamic_img_size" not in str(err):
                raise
            raise NotTransformerError(
                f"'{files.name}' ({config.get('architecture')}) has no transformer blocks: pick a ViT or CLIP "
                "checkpoint (e.g. timm/vit_base_patch16_224.augreg2_in21k_ft_in1k)."
            ) from None
    for sub in module.modules():  # explicit attention beats the fused kernel on CPU (see benchmarks/)
        if hasattr(sub, "fused_attn"):
            sub.fused_attn = device.type != "cpu"
    data = timm.data.resolve_model_data_config(module)  # input size, crop_pct, interpolation, mean, std
    patch = getattr(getattr(module, "patch_embed", None), "patch_size", (16, 16))
    trained_size = getattr(getattr(module, "patch_embed", None), "img_size", None)  # its position embeddings' size
    tag = f"{config.get('architecture', '')} {config.get('pretrained_cfg', {}).get('tag', '')}".lower()
    return TimmVisionModel(
        model_id=files.name,
        backend="timm",
        module=module,
        tower=module,
        image_size=int(data["input_size"][-1]),
        native_size=as_int(trained_size) if trained_size else 0,
        patch_size=as_int(patch),
        mean=tuple(float(v) for v in data["mean"]),
        std=tuple(float(v) for v in data["std"]),
        hidden_size=int(getattr(module, "embed_dim", 0) or 0),
        num_classes=int(getattr(module, "num_classes", 0) or 0),
        is_clip="clip" in tag,
        can_interpolate=True,
        device=device,
        precision=precision,
        pixel_pipeline=without_normalize(timm.data.create_transform(**data, is_training=False)),
    )


BACKEND = Backend(load, SAFE_WEIGHTS, PICKLE_WEIGHTS)
