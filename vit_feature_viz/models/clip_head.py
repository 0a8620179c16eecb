"""The last steps of a CLIP image tower, applied to a block's tokens: final layer norm, pooling and projection into
the space the text embeddings live in.

Applied to the last block's output it gives the checkpoint's own image embedding (tests compare it with the
model's forward); applied to an earlier block's CLS token it gives the paper's layer-wise view, "what this block
already says in words". The renderer captures the block's output as usual and this maps it, so a text-prompt
objective needs no second forward pass.
"""

from __future__ import annotations

import torch

from ..errors import VizError
from .base import VisionModel


class ClipImageHead:
    """`model`'s final norm + pooling + projection, as a function of a block's tokens [B, T, C] -> [B, D]."""

    def __init__(self, model: VisionModel):
        self.model = model
        if not model.has_text_tower:
            raise VizError(f"'{model.model_id}' has no text tower", option="prompt",
                           fix=_no_text_tower_fix(model))
        module = model.module
        if model.backend == "transformers":
            vision = getattr(module, "vision_model", None)
            self._norm = getattr(vision, "post_layernorm", None)
            self._project = getattr(module, "visual_projection", None)
            self._pool_type, self._norm_after_pool = "tok", True  # CLS, then the norm (the same for one token)
        else:  # open_clip's VisionTransformer
            visual = module.visual
            self._norm = getattr(visual, "ln_post", None)
            projection = getattr(visual, "proj", None)
            self._project = (lambda x: x @ projection) if projection is not None else (lambda x: x)
            self._pool_type = getattr(visual, "pool_type", "tok")
            self._norm_after_pool = bool(getattr(visual, "final_ln_after_pool", False))
            if getattr(visual, "attn_pool", None) is not None or self._pool_type not in ("tok", "avg"):
                self._norm = None
        if self._norm is None or self._project is None:
            raise VizError(f"'{model.model_id}' pools its image tokens in a way a text prompt cannot follow yet",
                           option="prompt", fix="use a CLIP whose image tower reads the CLS token through a "
                                                "projection (transformers CLIPModel or open_clip ViT).")

    def __call__(self, tokens: torch.Tensor, *, cls_only: bool = False) -> torch.Tensor:
        """The embedding of tokens [B, T, C] (prefix tokens first): pooled as the model pools its last block, or
        the CLS token alone (`cls_only`, the layer-wise view)."""
        if cls_only or self._pool_type == "tok":
            return self._project(self._norm(tokens[:, 0]))
        patches = tokens[:, 1:]  # open_clip's avg pool: the patch tokens, CLS excluded
        if self._norm_after_pool:
            return self._project(self._norm(patches.mean(1)))
        return self._project(self._norm(patches).mean(1))

    def each_token(self, tokens: torch.Tensor) -> torch.Tensor:
        """Every token [B, T, C] through the final norm and projection on its own: [B, T, D] (patch maps)."""
        return self._project(self._norm(tokens))


def _no_text_tower_fix(model: VisionModel) -> str:
    if model.backend == "timm":
        return ("timm checkpoints hold only CLIP's image tower: load the same CLIP through open_clip or "
                "transformers (e.g. openai/clip-vit-base-patch32, or vit-feature-viz/shapes-clip offline).")
    return ("text prompts need a full CLIP checkpoint with its text tower (e.g. openai/clip-vit-base-patch32, or "
            "vit-feature-viz/shapes-clip offline).")
