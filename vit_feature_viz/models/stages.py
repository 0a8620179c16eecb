"""A ViT taken apart: embeddings, each block, the final norm and the head, callable one by one.

The paper's experiments (CLS isolation, token pooling, per-block CLS) run blocks by hand on token sequences the
model never sees in its own forward pass (the CLS token alone, patches without CLS). Everything that depends on a
library's module names lives here, in one place; the blocks themselves come from `VisionModel.blocks`.
Tokens are always batch-first [B, T, C] with the prefix tokens (CLS, distillation) first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import VizError
from .base import VisionModel

Tokens = torch.Tensor


@dataclass
class TokenStages:
    """One model as stages. `readout` is the model's own way from final-normed tokens to logits (CLS, the
    CLS+distillation pair, or the patch mean); `vector_head` applies the same head to one pooled vector."""

    model: VisionModel
    num_prefix: int
    embed: Callable[[torch.Tensor], Tokens]  # normalized pixels -> tokens entering block 0
    blocks: list[Callable[[Tokens], Tokens]]
    norm: Callable[[Tokens], Tokens]  # the final norm, per token
    readout: Callable[[Tokens], torch.Tensor] | None  # normed tokens -> logits
    vector_head: Callable[[torch.Tensor], torch.Tensor] | None  # normed vector [B, C] -> logits

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def run(self, tokens: Tokens, start: int = 0, stop: int | None = None) -> Tokens:
        """Blocks [start, stop) applied to `tokens`, which may be any subset of the sequence."""
        for block in self.blocks[start : self.num_layers if stop is None else stop]:
            tokens = block(tokens)
        return tokens

    def logits(self, tokens: Tokens) -> torch.Tensor:
        """The model's classification of a full token sequence leaving the last (or any) block."""
        self.need_head()
        return self.readout(self.norm(tokens))

    def pooled_logits(self, patches: Tokens, pool: str) -> torch.Tensor:
        """The head applied to the mean or max of the final-normed patch tokens."""
        self.need_head()
        normed = self.norm(patches)
        vector = normed.mean(dim=1) if pool == "mean" else normed.amax(dim=1)
        return self.vector_head(vector)

    def need_head(self):
        if self.readout is None:
            raise VizError(
                f"'{self.model.model_id}' has no classification head: pick an image classifier checkpoint "
                "(e.g. google/vit-base-patch16-224) for accuracy experiments."
            )


def token_stages(model: VisionModel) -> TokenStages:
    """The stages of a transformers ViT/DeiT/CLIP, a timm VisionTransformer or an open_clip ViT tower."""
    builders = {"transformers": _transformers, "timm": _timm, "open_clip": _open_clip}
    stages = builders[model.backend](model)
    if stages.num_prefix < 1:
        raise VizError(
            f"'{model.model_id}' has no CLS token: CLS and token-pooling experiments need a ViT with a class token."
        )
    return stages


def _block_modules(model: VisionModel) -> list[nn.Module]:
    modules = dict(model.module.named_modules())
    return [modules[block.name] for block in model.blocks]


def _first_output(block: nn.Module, *args) -> Callable[[Tokens], Tokens]:
    def call(tokens: Tokens) -> Tokens:
        out = block(tokens, *args)
        return out[0] if isinstance(out, tuple) else out

    return call


# --- transformers ---------------------------------------------------------------------------------------------
def _transformers(model: VisionModel) -> TokenStages:
    module = model.module
    backbone = next(
        (m for m in (getattr(module, n, None) for n in ("vision_model", "vit", "deit")) if m is not None), module
    )
    embeddings = getattr(backbone, "embeddings", None)
    norm = getattr(backbone, "layernorm", None) or getattr(backbone, "post_layernorm", None)
    if embeddings is None or norm is None:
        raise VizError(
            f"'{model.model_id}' ({type(module).__name__}) cannot be run block by block yet: use a ViT, DeiT or "
            "CLIP checkpoint."
        )
    pre_norm = getattr(backbone, "pre_layrnorm", None) or nn.Identity()  # CLIP normalizes before block 0

    def embed(pixels):
        return pre_norm(embeddings(pixels))

    kind = type(module).__name__
    has_cls = any(getattr(embeddings, n, None) is not None for n in ("cls_token", "class_embedding"))
    num_prefix = 0 if not has_cls else 2 if getattr(embeddings, "distillation_token", None) is not None else 1
    readout = vector_head = None
    if kind == "DeiTForImageClassificationWithTeacher":  # the mean of the CLS and distillation heads
        def readout(normed):
            return (module.cls_classifier(normed[:, 0]) + module.distillation_classifier(normed[:, 1])) / 2

        def vector_head(vector):
            return (module.cls_classifier(vector) + module.distillation_classifier(vector)) / 2
    elif kind in ("ViTForImageClassification", "DeiTForImageClassification"):
        def readout(normed):
            return module.classifier(normed[:, 0])

        vector_head = module.classifier
    elif hasattr(module, "classifier"):
        raise VizError(f"'{model.model_id}' ({kind}) reads its classes in a way not supported here: use a ViT or DeiT classifier.")
    return TokenStages(
        model=model,
        num_prefix=num_prefix,
        embed=embed,
        blocks=[_first_output(block, None) for block in _block_modules(model)],
        norm=norm,
        readout=readout,
        vector_head=vector_head,
    )


# --- timm -----------------------------------------------------------------------------------------------------
def _timm(model: VisionModel) -> TokenStages:
    module = model.module
    needed = ("patch_embed", "_pos_embed", "norm_pre", "norm", "fc_norm", "head")
    if not all(hasattr(module, n) for n in needed) or getattr(module, "attn_pool", None) is not None:
        raise VizError(
            f"'{model.model_id}' ({type(module).__name__}) cannot be run block by block yet: use a timm "
            "VisionTransformer (vit_*, deit_*)."
        )

    def embed(pixels):
        return module.norm_pre(module.patch_drop(module._pos_embed(module.patch_embed(pixels))))

    def vector_head(vector):
        return module.head(module.head_drop(module.fc_norm(vector)))

    def readout(normed):
        return module.forward_head(normed)

    has_head = bool(getattr(module, "num_classes", 0))
    return TokenStages(
        model=model,
        num_prefix=int(getattr(module, "num_prefix_tokens", 1)) if getattr(module, "cls_token", None) is not None else 0,
        embed=embed,
        blocks=[_first_output(block) for block in _block_modules(model)],
        norm=module.norm,
        readout=readout if has_head else None,
        vector_head=vector_head if has_head else None,
    )


# --- open_clip ------------------------------------------------------------------------------------------------
def _open_clip(model: VisionModel) -> TokenStages:
    visual = model.tower
    if not all(hasattr(visual, n) for n in ("conv1", "class_embedding", "ln_pre", "ln_post")):
        raise VizError(
            f"'{model.model_id}' has an open_clip tower that cannot be run block by block (timm trunk or "
            "attention pooling): use an open_clip ViT-B/32-style model."
        )
    sequence_first = model.sequence_first

    def embed(pixels):
        return visual._embeds(pixels)

    def wrap(block):
        def call(tokens):
            if sequence_first:
                return block(tokens.transpose(0, 1)).transpose(0, 1)
            return block(tokens)

        return call

    return TokenStages(
        model=model,
        num_prefix=1,
        embed=embed,
        blocks=[wrap(block) for block in _block_modules(model)],
        norm=visual.ln_post,
        readout=None,
        vector_head=None,
    )


# --- CLIP image embeddings from tokens --------------------------------------------------------------------------
def clip_projection(model: VisionModel) -> Callable[[torch.Tensor], torch.Tensor]:
    """Final-normed CLS vector [B, C] -> unit-length CLIP image embedding [B, D]."""
    module = model.module
    if model.backend == "transformers" and hasattr(module, "visual_projection"):
        project = module.visual_projection
    elif model.backend == "open_clip" and getattr(model.tower, "proj", None) is not None:
        weight = model.tower.proj

        def project(vector):
            return vector @ weight
    else:
        raise VizError(f"'{model.model_id}' has no CLIP image projection: use a full CLIP checkpoint (vision and text).")
    return lambda vector: F.normalize(project(vector), dim=-1)
