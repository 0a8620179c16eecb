"""How good an SAE is, measured on images: fraction of variance explained (FVE), L0, dead latents, and what the
model itself does when the layer's patch tokens are replaced by their reconstruction.

The replacement is spliced into the forward pass with a hook on the layer (the MLP's contracting linear's input
for fc1, the block's output for residual); CLS and register tokens are left as they are, the SAE having been
trained on patch tokens. For a classifier the change is the accuracy drop (when labels are given) and how often
the top class stays the same; for other models, the relative change of the next block's output.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch

from ..models.base import LOGITS, RESIDUAL, Target, VisionModel
from .objective import SITE_TARGETS
from .saved import SavedSae


def site_target(layer: int, site: str) -> Target:
    return Target(SITE_TARGETS[site], layer)


@contextlib.contextmanager
def spliced(model: VisionModel, saved: SavedSae):
    """Within the block, the model computes on with the SAE's reconstruction of the layer's patch tokens."""
    block = model.blocks[saved.layer]
    modules = dict(model.module.named_modules())
    sae = saved.sae.to(model.device)

    def replace(tokens: torch.Tensor) -> torch.Tensor:
        batch_first = tokens.transpose(0, 1) if model.sequence_first else tokens
        prefix = batch_first.shape[1] - _patch_count(model, batch_first.shape[1])
        patches = batch_first[:, prefix:]
        rebuilt = torch.cat([batch_first[:, :prefix], sae.reconstruct(patches.float()).to(patches.dtype)], 1)
        return rebuilt.transpose(0, 1) if model.sequence_first else rebuilt

    if saved.site == "fc1":
        handle = modules[block.mlp_out].register_forward_pre_hook(lambda _m, args: (replace(args[0]), *args[1:]))
    else:
        def after(_m, _args, out):
            return (replace(out[0]), *out[1:]) if isinstance(out, tuple) else replace(out)

        handle = modules[block.name].register_forward_hook(after)
    try:
        yield
    finally:
        handle.remove()


def _patch_count(model: VisionModel, tokens: int) -> int:
    grid = model.image_size // model.patch_size
    return min(grid * grid, tokens)


@torch.no_grad()
def measure_sae(model: VisionModel, saved: SavedSae, batches: Iterable[tuple[torch.Tensor, torch.Tensor | None]]) -> dict:
    """Measurements over `batches` of (pixels [B, 3, S, S] in [0, 1], labels [B] or None)."""
    target = site_target(saved.layer, saved.site)
    sae = saved.sae.to(model.device)
    classifier = model.num_classes > 0
    after = Target(LOGITS) if classifier else Target(RESIDUAL, min(saved.layer + 1, model.num_layers - 1))
    error = total = 0.0
    sums = squares = None
    count = 0
    l0 = 0.0
    fired = torch.zeros(sae.latents, dtype=torch.bool)
    same = correct = correct_spliced = labelled = images = 0
    change = norm = 0.0
    for pixels, labels in batches:
        acts = model.activations(pixels, {target, after})
        x = acts.patches(target).float().reshape(-1, sae.width)
        codes = sae.encode(x)
        x_hat = sae.decode_normalized(codes) / sae.scale
        error += float((x - x_hat).pow(2).sum())
        sums = x.sum(0) if sums is None else sums + x.sum(0)
        squares = x.pow(2).sum(0) if squares is None else squares + x.pow(2).sum(0)
        count += x.shape[0]
        l0 += float((codes > 0).sum())
        fired |= (codes > 0).any(0).cpu()
        with spliced(model, saved):
            replaced = model.activations(pixels, {after})[after].float()
        original = acts[after].float()
        images += pixels.shape[0]
        if classifier:
            same += int((original.argmax(1) == replaced.argmax(1)).sum())
            if labels is not None:
                labels = labels.to(original.device)
                correct += int((original.argmax(1) == labels).sum())
                correct_spliced += int((replaced.argmax(1) == labels).sum())
                labelled += len(labels)
        else:
            change += float((replaced - original).pow(2).sum())
            norm += float(original.pow(2).sum())
    total = float((squares - sums.pow(2) / count).sum())
    result = {"fve": 1.0 - error / max(total, 1e-12), "l0": l0 / count, "dead_latents": int((~fired).sum()),
              "latents": sae.latents, "eval_images": images, "eval_tokens": count}
    if classifier:
        result["top1_agreement"] = same / max(images, 1)
        if labelled:
            result["accuracy"] = correct / labelled
            result["accuracy_spliced"] = correct_spliced / labelled
            result["accuracy_drop"] = result["accuracy"] - result["accuracy_spliced"]
    else:
        result["next_block_relative_change"] = (change / max(norm, 1e-12)) ** 0.5
    return result
