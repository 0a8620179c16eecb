"""The two residual branches of each block (attention, MLP), per backend, and a way to switch one off.

Every supported block is pre-norm: x = x + attention(norm1(x)); x = x + mlp(norm2(x)), with a layer scale, dropout
or drop path between the branch and the sum. A branch whose output is replaced by zeros therefore adds nothing and
the residual passes unchanged; that is what block-removal experiments (Bhojanapalli et al. 2021) need, without
copying any library's block code. Which child module is which branch is the only per-backend knowledge here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import VizError
from .base import VisionModel

ATTENTION, MLP_BRANCH = "attention", "mlp"
BRANCHES = (ATTENTION, MLP_BRANCH)
# backend -> (attention child names, MLP child names) of a block, first match wins
CHILD_NAMES = {
    "transformers": (("attention", "self_attn"), ("mlp",)),  # ViT, DeiT, DINOv2, BEiT; CLIP, SigLIP
    "timm": (("attn",), ("mlp",)),
    "open_clip": (("attn",), ("mlp",)),
}


@dataclass(frozen=True)
class BlockBranches:
    """The modules of one block whose outputs are added to the residual stream."""

    index: int
    attention: nn.Module
    mlp: nn.Module

    def branch(self, name: str) -> nn.Module:
        if name not in BRANCHES:
            raise VizError(f"Unknown branch '{name}': use one of {', '.join(BRANCHES)}.")
        return self.attention if name == ATTENTION else self.mlp


def block_branches(model: VisionModel) -> list[BlockBranches]:
    """Attention and MLP of every block of `model`, or a one-line error naming what was not found."""
    modules = dict(model.module.named_modules())
    attention_names, mlp_names = CHILD_NAMES.get(model.backend, ((), ()))
    out = []
    for block in model.blocks:
        parent = modules[block.name]
        attention = _child(parent, attention_names)
        mlp = _child(parent, mlp_names)
        if attention is None or mlp is None:
            raise VizError(
                f"'{model.model_id}' ({type(parent).__name__}) has blocks whose attention and MLP cannot be told "
                "apart: use a ViT, DeiT, DINOv2 or CLIP checkpoint (transformers, timm or open_clip)."
            )
        out.append(BlockBranches(block.index, attention, mlp))
    return out


def _child(parent: nn.Module, names) -> nn.Module | None:
    return next((getattr(parent, n) for n in names if isinstance(getattr(parent, n, None), nn.Module)), None)


@contextlib.contextmanager
def switched_off(modules: list[nn.Module]) -> Iterator[None]:
    """Inside the block, each module's output (the first element of a tuple output) is zeros of its shape."""
    handles = [module.register_forward_hook(_zero_output) for module in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _zero_output(_module, _args, output):
    if isinstance(output, tuple):
        return (torch.zeros_like(output[0]), *output[1:])
    return torch.zeros_like(output)
