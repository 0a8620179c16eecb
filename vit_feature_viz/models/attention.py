"""Where the CLS token looks: the attention probabilities of one block's CLS query over all tokens, per head.

Computed as softmax(q_cls k^T * scale) from the block's own query and key projections, caught by hooks during an
ordinary forward pass that stops after the block, so it works whatever attention kernel the model runs (fused
SDPA or eager) and needs no `output_attentions`. Each backend keeps its projections somewhere else; the one
function per backend below says where (transformers: `q_proj`/`k_proj`; timm: the fused `qkv`; open_clip:
`nn.MultiheadAttention`'s `in_proj_weight`), so experiments never look at module types.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import VizError
from .base import RESIDUAL, Target, VisionModel

# (model, block module, store) -> hook handles; the hooks put "q" and "k" ([B, heads, T, head_dim]) and "scale"
# into store.
Attach = Callable[[VisionModel, nn.Module, dict], list]


@dataclass
class ClsAttention:
    """The CLS query's attention of one block: `tokens` [B, heads, T] sums to 1 over all T tokens (prefix
    tokens first); `patches` [B, heads, grid_h, grid_w] is its share on the patch tokens, renormalized to sum
    to 1 (registers and the CLS token's attention to itself left out)."""

    layer: int
    tokens: torch.Tensor
    num_prefix: int
    grid: tuple[int, int]

    @property
    def patches(self) -> torch.Tensor:
        on_patches = self.tokens[:, :, self.num_prefix :]
        on_patches = on_patches / on_patches.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        return on_patches.reshape(*on_patches.shape[:2], *self.grid)

    @property
    def heads(self) -> int:
        return self.tokens.shape[1]


def read_cls_attention(model: VisionModel, images: torch.Tensor, layer: int | None = None) -> ClsAttention:
    """The CLS attention of block `layer` (default: the last) for images in [0, 1] ([B, 3, S, S])."""
    layer = model.num_layers - 1 if layer is None else int(layer)
    block = model.check_layer(layer)
    attach = ATTACH.get(model.backend)
    if attach is None:
        raise VizError(f"CLS attention is not available for the {model.backend} backend: use a transformers, timm "
                       "or open_clip ViT.")
    store: dict = {}
    handles = attach(model, dict(model.module.named_modules())[block.name], store)
    try:
        with torch.no_grad():
            captured = model.activations(images, [Target(RESIDUAL, layer)])  # stops after the block
    finally:
        for handle in handles:
            handle.remove()
    if captured.num_prefix < 1:
        raise VizError(f"'{model.model_id}' has no CLS token: CLS attention maps need a ViT with a class token "
                       "(SigLIP pools its patches instead).")
    q, k = store["q"].float(), store["k"].float()
    logits = (q[:, :, :1] @ k.transpose(-1, -2))[:, :, 0] * store["scale"]  # [B, heads, T]: only the CLS row
    return ClsAttention(layer, logits.softmax(dim=-1), captured.num_prefix, captured.grid)


# --- where each backend keeps q and k ------------------------------------------------------------------------
def _split_heads(tensor: torch.Tensor, head_dim: int) -> torch.Tensor:
    """[B, T, heads * d] -> [B, heads, T, d]."""
    return tensor.reshape(*tensor.shape[:2], -1, head_dim).transpose(1, 2)


def _transformers(model: VisionModel, block: nn.Module, store: dict) -> list:
    """transformers 5 names every ViT-family projection q_proj / k_proj (ViT, DeiT, DINOv2, CLIP, SigLIP)."""
    attention = next((m for m in block.modules() if hasattr(m, "q_proj") and hasattr(m, "k_proj")), None)
    if attention is None or any("relative_position" in name for name, _ in attention.named_children()):
        raise VizError(f"'{model.model_id}' computes attention in a way CLS attention maps do not read yet (no plain "
                       "q_proj/k_proj, or a relative position bias as in BEiT): use a ViT, DeiT, DINOv2 or CLIP.")
    head_dim = int(getattr(attention, "head_dim", 0) or 0) or attention.q_proj.out_features // int(
        getattr(attention, "num_heads", 0) or getattr(attention, "num_attention_heads"))
    store["scale"] = float(getattr(attention, "scaling", None) or getattr(attention, "scale", None) or head_dim**-0.5)

    def keep(name):
        return lambda _m, _args, out: store.__setitem__(name, _split_heads(out, head_dim))

    return [attention.q_proj.register_forward_hook(keep("q")), attention.k_proj.register_forward_hook(keep("k"))]


def _timm(model: VisionModel, block: nn.Module, store: dict) -> list:
    """timm's Attention: one fused qkv linear, then optional per-head q/k norms."""
    attention = getattr(block, "attn", None)
    if attention is None or not isinstance(getattr(attention, "qkv", None), nn.Linear):
        raise VizError(f"'{model.model_id}' has no fused qkv attention timm's VisionTransformer has: use a timm "
                       "vit_* or deit_* checkpoint.")
    heads = int(attention.num_heads)
    store["scale"] = float(getattr(attention, "scale", None) or (attention.qkv.out_features // 3 // heads) ** -0.5)

    def keep(_module, _args, out):
        q, k, _ = out.reshape(*out.shape[:2], 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        store["q"] = getattr(attention, "q_norm", nn.Identity())(q)
        store["k"] = getattr(attention, "k_norm", nn.Identity())(k)

    return [attention.qkv.register_forward_hook(keep)]


def _open_clip(model: VisionModel, block: nn.Module, store: dict) -> list:
    """open_clip's ResidualAttentionBlock: nn.MultiheadAttention called as attn(q_x, k_x, v_x)."""
    attention = getattr(block, "attn", None)
    if not isinstance(attention, nn.MultiheadAttention) or attention.in_proj_weight is None:
        raise VizError(f"'{model.model_id}' has an open_clip tower without nn.MultiheadAttention blocks: use an "
                       "open_clip ViT.")
    heads, width = attention.num_heads, attention.embed_dim
    store["scale"] = (width // heads) ** -0.5
    weights = attention.in_proj_weight.split(width)
    biases = attention.in_proj_bias.split(width) if attention.in_proj_bias is not None else (None, None, None)

    def keep(_module, args, kwargs):
        query = args[0] if args else kwargs["query"]
        key = args[1] if len(args) > 1 else kwargs.get("key", query)
        if not attention.batch_first:  # [T, B, C]
            query, key = query.transpose(0, 1), key.transpose(0, 1)
        store["q"] = _split_heads(F.linear(query, weights[0], biases[0]), width // heads)
        store["k"] = _split_heads(F.linear(key, weights[1], biases[1]), width // heads)

    return [attention.register_forward_pre_hook(keep, with_kwargs=True)]


ATTACH: dict[str, Attach] = {"transformers": _transformers, "timm": _timm, "open_clip": _open_clip}
